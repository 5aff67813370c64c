#pragma once
// Audit log: one JSON object per line, to a file (appended) or stdout ("-").

#include <cstdio>
#include <mutex>
#include <string>

#include "core/json_yaml.h"

namespace stateguard {

/// Appends JSON lines; thread-safe; each line is flushed before write() returns.
/// One audit record as the line written to the log (compact JSON and a newline; invalid UTF-8
/// replaced).
std::string auditLine(const json& record);

class AuditLog {
 public:
  static Result<std::unique_ptr<AuditLog>> open(const std::string& path);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  void write(const json& record);
  /// Appends a line that is already JSON and ends with a newline.
  void writeLine(const std::string& line);

 private:
  AuditLog(std::FILE* file, bool owned) : file_(file), owned_(owned) {}
  std::mutex mu_;
  std::FILE* file_;
  bool owned_;
};

}  // namespace stateguard
