#pragma once
// Audit log: one JSON object per line, to a file (appended) or stdout ("-").

#include <cstdio>
#include <mutex>
#include <string>

#include "core/json_yaml.h"

namespace stateguard {

/// Appends JSON lines; thread-safe; each line is flushed before write() returns.
class AuditLog {
 public:
  static Result<std::unique_ptr<AuditLog>> open(const std::string& path);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  void write(const json& record);

 private:
  AuditLog(std::FILE* file, bool owned) : file_(file), owned_(owned) {}
  std::mutex mu_;
  std::FILE* file_;
  bool owned_;
};

}  // namespace stateguard
