#include "core/audit.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
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

void AuditLog::write(const json& record) {
  std::string line = record.dump(-1, ' ', false, json::error_handler_t::replace);
  line.push_back('\n');
  std::lock_guard lock(mu_);
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

std::string nowRfc3339() {
  auto now = std::chrono::system_clock::now();
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms));
  return buf;
}

}  // namespace stateguard
