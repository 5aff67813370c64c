#pragma once
// Audit log: one JSON object per line, to a file (appended) or stdout ("-").

#include <cstdio>
#include <mutex>
#include <string>

#include "core/json_yaml.h"

namespace stateguard {

/// One audit record as the line written to the log (compact JSON and a newline; invalid UTF-8
/// replaced).
std::string auditLine(const json& record);

/// Appends JSON lines to a file (O_APPEND) or stdout. Thread-safe: each line is one write(2), which
/// the kernel appends whole to a regular file, so writers to a file take no lock; lines to
/// stdout (a pipe or terminal) are serialised. Each line is in the kernel when write() returns.
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
  AuditLog(int fd, bool owned, bool regular) : fd_(fd), owned_(owned), regular_(regular) {}
  std::mutex mu_;  ///< only for non-regular files
  int fd_;
  bool owned_;
  bool regular_;
};

}  // namespace stateguard
