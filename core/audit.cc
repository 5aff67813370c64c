#include "core/audit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace stateguard {

Result<std::unique_ptr<AuditLog>> AuditLog::open(const std::string& path) {
  if (path == "-") {
    std::fflush(stdout);  // anything printed through stdio before goes first
    return std::unique_ptr<AuditLog>(new AuditLog(STDOUT_FILENO, false, false));
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return makeError("audit log: cannot open " + path + " for appending: " + std::strerror(errno));
  }
  struct stat st {};
  const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  return std::unique_ptr<AuditLog>(new AuditLog(fd, true, regular));
}

AuditLog::~AuditLog() {
  if (owned_ && fd_ >= 0) ::close(fd_);
}

std::string auditLine(const json& record) {
  std::string line = record.dump(-1, ' ', false, json::error_handler_t::replace);
  line.push_back('\n');
  return line;
}

void AuditLog::write(const json& record) { writeLine(auditLine(record)); }

void AuditLog::writeLine(const std::string& line) {
  std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
  if (!regular_) lock.lock();
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // disk full or closed pipe: the decision stands, the line is lost
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace stateguard
