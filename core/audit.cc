#include "core/audit.h"

#include <cerrno>
#include <cstring>
#include <memory>

namespace stateguard {

Result<std::unique_ptr<AuditLog>> AuditLog::open(const std::string& path) {
  if (path == "-") return std::unique_ptr<AuditLog>(new AuditLog(stdout, false));
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (f == nullptr) {
    return makeError("audit log: cannot open " + path + " for appending: " + std::strerror(errno));
  }
  return std::unique_ptr<AuditLog>(new AuditLog(f, true));
}

AuditLog::~AuditLog() {
  if (owned_ && file_ != nullptr) std::fclose(file_);
}

std::string auditLine(const json& record) {
  std::string line = record.dump(-1, ' ', false, json::error_handler_t::replace);
  line.push_back('\n');
  return line;
}

void AuditLog::write(const json& record) { writeLine(auditLine(record)); }

void AuditLog::writeLine(const std::string& line) {
  std::lock_guard lock(mu_);
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

}  // namespace stateguard
