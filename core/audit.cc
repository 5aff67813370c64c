#include "core/audit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "core/log.h"

namespace stateguard {

namespace {
constexpr size_t kBatchBytes = 64 * 1024;
/// Failures are logged at most this often, with a count of what happened in between.
constexpr auto kLogInterval = std::chrono::seconds(5);
using SteadyClock = std::chrono::steady_clock;

size_t countLines(std::string_view bytes) {
  return static_cast<size_t>(std::count(bytes.begin(), bytes.end(), '\n'));
}
}  // namespace

bool parseAuditMode(const std::string& text, AuditMode& mode) {
  if (text == "batch") {
    mode = AuditMode::kBatch;
  } else if (text == "blocking") {
    mode = AuditMode::kBlocking;
  } else if (text == "blocking-strict") {
    mode = AuditMode::kBlockingStrict;
  } else {
    return false;
  }
  return true;
}

const char* auditModeName(AuditMode mode) {
  switch (mode) {
    case AuditMode::kBatch:
      return "batch";
    case AuditMode::kBlocking:
      return "blocking";
    case AuditMode::kBlockingStrict:
      return "blocking-strict";
  }
  return "?";
}

/// A caller waiting for its line (blocking modes).
struct AuditWaiter {
  size_t end = 0;  ///< offset just past its line in the batch
  bool done = false, ok = false;
};

/// State shared by the log and its writer thread (which may outlive the log when the
/// destination stalls at shutdown).
struct AuditLog::Shared {
  std::string path;  ///< "" for stdout
  std::string name;  ///< for messages
  int fd = -1;
  bool owned = false;
  bool regular = false;  ///< a regular file: a torn write can be cut back
  AuditOptions options;

  mutable std::mutex mu;
  std::condition_variable wake;  ///< the writer: lines, a reopen, or stop
  std::condition_variable done;  ///< waiters: a batch was written
  std::string pending;
  std::vector<std::shared_ptr<AuditWaiter>> waiters;
  bool stopping = false, reopenRequested = false, finished = false;
  size_t inFlight = 0;  ///< bytes the writer is writing now
  AuditStats stats;
  std::string lastError;
  SteadyClock::time_point loggedAt;
  bool logged = false;
  uint64_t lostUnlogged = 0, failuresUnlogged = 0;

  ~Shared() {
    if (owned && fd >= 0) ::close(fd);
  }

  /// Logs a loss, at most every kLogInterval (called with mu held).
  void noteLoss(size_t lines, const std::string& why) {
    lostUnlogged += lines;
    const auto now = SteadyClock::now();
    if (logged && now - loggedAt < kLogInterval) return;
    std::string consequence =
        options.mode == AuditMode::kBlockingStrict
            ? "decisions that would have been allowed are refused until it can be written"
            : "decisions go on, unrecorded";
    log::error("audit log " + name + ": " + why + "; " + std::to_string(lostUnlogged) +
               " line(s) not recorded and " + std::to_string(failuresUnlogged) +
               " failed write(s) since the last report (stateguard_audit_lines_dropped_total); " +
               consequence + " (--audit-mode " + auditModeName(options.mode) +
               "). Free space or fix the destination; the log goes on by itself.");
    logged = true;
    loggedAt = now;
    lostUnlogged = 0;
    failuresUnlogged = 0;
  }

  /// Opens the file again when asked, or when its path no longer names the open file.
  void maybeReopen(bool asked) {
    struct stat open {
    }, named{};
    const bool gone = ::stat(path.c_str(), &named) != 0;
    const bool same = !gone && ::fstat(fd, &open) == 0 && open.st_dev == named.st_dev &&
                      open.st_ino == named.st_ino;
    if (!asked && same) return;
    const int next = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (next < 0) {
      const std::string why = std::strerror(errno);
      std::lock_guard lock(mu);
      noteLoss(0, "cannot open " + path + " again (" + why + "); writing to the old file");
      return;
    }
    ::close(fd);
    fd = next;
    struct stat now {};
    regular = ::fstat(fd, &now) == 0 && S_ISREG(now.st_mode);
    log::info("audit log: opened " + path + " again (" +
              (asked  ? std::string("asked to, SIGHUP")
               : gone ? "it was deleted"
                      : "it was renamed") +
              ")");
    std::lock_guard lock(mu);
    ++stats.reopens;
  }

  /// Writes a batch of whole lines. Returns how many leading bytes are in the log as whole
  /// lines; on a failure part-way a file is cut back to the last whole line.
  size_t writeBatch(const std::string& bytes, std::string& error) {
    off_t start = regular ? ::lseek(fd, 0, SEEK_END) : -1;
    const char* p = bytes.data();
    size_t written = 0;
    while (written < bytes.size()) {
      const ssize_t n = ::write(fd, p + written, bytes.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = n < 0 ? std::strerror(errno) : "write(2) wrote nothing";
        break;
      }
      written += static_cast<size_t>(n);
    }
    if (written == bytes.size()) return written;
    const size_t lastNewline = written == 0 ? std::string::npos : bytes.rfind('\n', written - 1);
    const size_t whole = lastNewline == std::string::npos ? 0 : lastNewline + 1;
    if (whole < written && start >= 0) {
      // A torn line would glue itself to the next one: cut it off.
      if (::ftruncate(fd, start + static_cast<off_t>(whole)) != 0) {
        error += std::string("; and cutting back a torn line failed: ") + std::strerror(errno);
      }
    }
    return whole;
  }

  void run() {
    auto nextCheck = SteadyClock::now() + options.reopenCheck;
    std::unique_lock lock(mu);
    while (true) {
      wake.wait(lock, [this] { return stopping || reopenRequested || !pending.empty(); });
      if (!stopping && options.mode == AuditMode::kBatch && options.flushInterval.count() > 0 &&
          !pending.empty()) {
        wake.wait_for(lock, options.flushInterval,
                      [this] { return stopping || pending.size() >= kBatchBytes; });
      }
      if (stopping && pending.empty()) break;
      std::string batch;
      batch.swap(pending);
      auto batchWaiters = std::move(waiters);
      waiters.clear();
      const bool asked = reopenRequested;
      reopenRequested = false;
      stats.queuedBytes = 0;
      inFlight = batch.size();
      lock.unlock();

      if (owned && (asked || SteadyClock::now() >= nextCheck)) {
        maybeReopen(asked);
        nextCheck = SteadyClock::now() + options.reopenCheck;
      }
      std::string error;
      const size_t whole = batch.empty() ? 0 : writeBatch(batch, error);

      lock.lock();
      inFlight = 0;
      const size_t writtenLines = countLines(std::string_view(batch).substr(0, whole));
      stats.linesWritten += writtenLines;
      if (whole < batch.size()) {
        const size_t lost = countLines(batch) - writtenLines;
        ++stats.writeFailures;
        ++failuresUnlogged;
        stats.linesDropped += lost;
        lastError = "cannot write to " + name + ": " + error;
        noteLoss(lost, lastError);
      }
      for (auto& w : batchWaiters) {
        w->done = true;
        w->ok = w->end <= whole;
      }
      stats.queuedBytes = pending.size();
      done.notify_all();
    }
    finished = true;
    done.notify_all();
  }
};

Result<std::unique_ptr<AuditLog>> AuditLog::open(const std::string& path, AuditOptions options) {
  auto shared = std::make_shared<Shared>();
  shared->options = options;
  if (path == "-") {
    std::fflush(stdout);  // anything printed through stdio before goes first
    shared->fd = STDOUT_FILENO;
    shared->name = "stdout";
  } else {
    shared->fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (shared->fd < 0) {
      return makeError("audit log: cannot open " + path +
                       " for appending: " + std::strerror(errno));
    }
    shared->owned = true;
    shared->path = path;
    shared->name = path;
  }
  struct stat st {};
  shared->regular = ::fstat(shared->fd, &st) == 0 && S_ISREG(st.st_mode);
  return std::unique_ptr<AuditLog>(new AuditLog(std::move(shared), options));
}

AuditLog::AuditLog(std::shared_ptr<Shared> shared, AuditOptions options)
    : shared_(std::move(shared)), options_(options) {
  std::thread([s = shared_] { s->run(); }).detach();
}

AuditLog::~AuditLog() {
  std::unique_lock lock(shared_->mu);
  shared_->stopping = true;
  shared_->wake.notify_all();
  // Everything pending is written first. A destination that stalls (a stdout nobody reads)
  // may keep the writer thread: it holds its own reference to the shared state.
  if (!shared_->done.wait_for(lock, options_.shutdownWait, [this] { return shared_->finished; })) {
    log::error("audit log " + shared_->name + ": " +
               std::to_string(shared_->pending.size() + shared_->inFlight) +
               " byte(s) of lines still unwritten at shutdown after " +
               std::to_string(options_.shutdownWait.count()) +
               " ms (the destination is not taking them)");
  }
}

std::string auditLine(const json& record) {
  std::string line = record.dump(-1, ' ', false, json::error_handler_t::replace);
  line.push_back('\n');
  return line;
}

bool AuditLog::write(const json& record) { return writeLine(auditLine(record)); }

bool AuditLog::writeLine(const std::string& line) {
  Shared& s = *shared_;
  std::unique_lock lock(s.mu);
  if (!s.pending.empty() && s.pending.size() + line.size() > options_.maxQueueBytes) {
    ++s.stats.linesDropped;
    s.lastError = "the queue of lines waiting for " + s.name + " is full (" +
                  std::to_string(options_.maxQueueBytes) + " bytes)";
    s.noteLoss(1, s.lastError + ": the destination is not taking lines");
    return false;
  }
  const bool wasEmpty = s.pending.empty();
  s.pending += line;
  s.stats.queuedBytes = s.pending.size();
  if (options_.mode == AuditMode::kBatch) {
    // The writer sleeps until a batch starts, then for the interval (or until it is full).
    if (wasEmpty || s.pending.size() >= kBatchBytes || options_.flushInterval.count() == 0)
      s.wake.notify_one();
    return true;
  }
  auto waiter = std::make_shared<AuditWaiter>();
  waiter->end = s.pending.size();
  s.waiters.push_back(waiter);
  s.wake.notify_one();
  if (!s.done.wait_for(lock, options_.writeTimeout, [&waiter] { return waiter->done; })) {
    ++s.stats.waitTimeouts;
    s.lastError = "a line was not written to " + s.name + " within " +
                  std::to_string(options_.writeTimeout.count()) + " ms";
    s.noteLoss(1, s.lastError + " (it may still arrive)");
    return false;
  }
  return waiter->ok;
}

void AuditLog::reopen() {
  std::lock_guard lock(shared_->mu);
  shared_->reopenRequested = true;
  shared_->wake.notify_one();
}

AuditStats AuditLog::stats() const {
  std::lock_guard lock(shared_->mu);
  return shared_->stats;
}

std::string AuditLog::lastError() const {
  std::lock_guard lock(shared_->mu);
  return shared_->lastError;
}

}  // namespace stateguard
