#include "core/audit.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace stateguard {

namespace {
constexpr size_t kBatchBytes = 64 * 1024;
}

Result<std::unique_ptr<AuditLog>> AuditLog::open(const std::string& path,
                                                 std::chrono::milliseconds flushInterval) {
  if (path == "-") {
    std::fflush(stdout);  // anything printed through stdio before goes first
    return std::unique_ptr<AuditLog>(new AuditLog(STDOUT_FILENO, false, flushInterval));
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return makeError("audit log: cannot open " + path + " for appending: " + std::strerror(errno));
  }
  return std::unique_ptr<AuditLog>(new AuditLog(fd, true, flushInterval));
}

AuditLog::AuditLog(int fd, bool owned, std::chrono::milliseconds flushInterval)
    : fd_(fd), owned_(owned), interval_(flushInterval) {
  if (interval_.count() > 0) thread_ = std::thread([this] { flusher(); });
}

AuditLog::~AuditLog() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (!pending_.empty()) writeAll(pending_);
  if (owned_ && fd_ >= 0) ::close(fd_);
}

std::string auditLine(const json& record) {
  std::string line = record.dump(-1, ' ', false, json::error_handler_t::replace);
  line.push_back('\n');
  return line;
}

void AuditLog::write(const json& record) { writeLine(auditLine(record)); }

void AuditLog::writeLine(const std::string& line) {
  std::unique_lock lock(mu_);
  const bool wasEmpty = pending_.empty();
  pending_ += line;
  if (interval_.count() > 0) {
    // The flusher sleeps until a batch starts, then for the interval (or until it is full).
    if (wasEmpty || pending_.size() >= kBatchBytes) cv_.notify_one();
    return;
  }
  if (writing_) return;  // the thread writing now takes this line in its next write
  writing_ = true;
  std::string batch;
  while (!pending_.empty()) {
    batch.clear();
    batch.swap(pending_);
    lock.unlock();
    writeAll(batch);
    lock.lock();
  }
  writing_ = false;
}

void AuditLog::flusher() {
  std::string batch;
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (stopping_) return;  // the destructor writes what is left
    cv_.wait_for(lock, interval_, [this] { return stopping_ || pending_.size() >= kBatchBytes; });
    batch.clear();
    batch.swap(pending_);
    lock.unlock();
    writeAll(batch);
    lock.lock();
  }
}

void AuditLog::writeAll(const std::string& bytes) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // disk full or closed pipe: the decisions stand, the lines are lost
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace stateguard
