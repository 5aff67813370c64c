#pragma once
// Audit log: one JSON object per line, to a file (appended) or stdout ("-").

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/json_yaml.h"

namespace stateguard {

/// One audit record as the line written to the log (compact JSON and a newline; invalid UTF-8
/// replaced).
std::string auditLine(const json& record);

/// What a decision waits for, as kube-apiserver's --audit-log-mode.
enum class AuditMode {
  /// Lines are queued and written by a background thread at most the flush interval later; a
  /// decision never waits for the disk. A full queue drops lines (counted and logged).
  kBatch,
  /// A decision waits (up to the write timeout) until its line is written; when it cannot be,
  /// the failure is counted and logged and the decision stands.
  kBlocking,
  /// As kBlocking, but a decision whose line cannot be written is reported as not recorded, and
  /// the caller refuses what it would have allowed.
  kBlockingStrict,
};

/// "batch", "blocking", "blocking-strict"; false for anything else.
bool parseAuditMode(const std::string& text, AuditMode& mode);
const char* auditModeName(AuditMode mode);

struct AuditOptions {
  AuditMode mode = AuditMode::kBlocking;
  /// kBatch: lines are written at most this long after the first of a batch (or at 64 KiB).
  std::chrono::milliseconds flushInterval{0};
  /// Bytes of lines waiting to be written at most; past it lines are dropped (counted). Bounds
  /// memory when the destination stalls (a stdout nobody reads).
  size_t maxQueueBytes = 8 * 1024 * 1024;
  /// Blocking modes: how long a decision waits for its line before it is counted as failed.
  std::chrono::milliseconds writeTimeout{2000};
  /// A file destination is checked this often for having been renamed or deleted (logrotate
  /// without copytruncate), and then opened again at its path.
  std::chrono::milliseconds reopenCheck{1000};
  /// At shutdown, how long pending lines may take to reach a stalled destination.
  std::chrono::milliseconds shutdownWait{5000};
};

/// Counts for metrics.
struct AuditStats {
  uint64_t linesWritten = 0;
  uint64_t writeFailures = 0;  ///< write(2) calls that failed (disk full, I/O error, closed pipe)
  uint64_t linesDropped = 0;   ///< lines lost: a failed write, a full queue, a timed-out wait
  uint64_t waitTimeouts = 0;   ///< blocking modes: a caller stopped waiting (the line may be late)
  uint64_t reopens = 0;        ///< the file opened again after a rename, delete or SIGHUP
  uint64_t queuedBytes = 0;    ///< waiting to be written now
};

/// Appends JSON lines to a file (O_APPEND) or stdout; thread-safe, lines never interleave.
///
/// One background thread writes; callers only queue (kBatch) or queue and wait (blocking
/// modes), so a stalled destination holds a caller no longer than the write timeout and memory
/// no more than the queue bound. Lines are grouped into one write(2) each time (on ext4 a
/// write costs 8-15 us of CPU, the largest single cost of a review under load). A write that
/// fails part-way is cut back to its last whole line (files), so the log never holds a torn
/// line; the lines lost are counted, and logged at most every 5 s. The destructor writes
/// everything pending (waiting at most a few seconds for a stalled destination).
class AuditLog {
 public:
  static Result<std::unique_ptr<AuditLog>> open(const std::string& path, AuditOptions options = {});
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  /// Queues a record. Returns false when the line is known not to be written: dropped (full
  /// queue), or, in the blocking modes, a failed or timed-out write.
  bool write(const json& record);
  /// As write(), for a line that is already JSON and ends with a newline.
  bool writeLine(const std::string& line);
  /// Opens the file again at its path before the next write (SIGHUP after a rotation).
  void reopen();
  AuditStats stats() const;
  AuditMode mode() const { return options_.mode; }
  /// Why the last write failed ("" when none has).
  std::string lastError() const;

 private:
  struct Shared;
  AuditLog(std::shared_ptr<Shared> shared, AuditOptions options);

  std::shared_ptr<Shared> shared_;  ///< also held by the writer thread
  AuditOptions options_;
};

}  // namespace stateguard
