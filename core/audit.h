#pragma once
// Audit log: one JSON object per line, to a file (appended) or stdout ("-").

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/json_yaml.h"

namespace stateguard {

/// One audit record as the line written to the log (compact JSON and a newline; invalid UTF-8
/// replaced).
std::string auditLine(const json& record);

/// Appends JSON lines to a file (O_APPEND) or stdout; thread-safe, lines never interleave.
///
/// With a flush interval of 0, every line is in the kernel before writeLine() returns; threads
/// that write at the same time hand their lines to the one writing (group commit). With an
/// interval, lines are collected and written together by a background thread at most that long
/// after the first of them (or at 64 KiB), which saves the filesystem's per-write cost (on ext4
/// 8-15 us of CPU per line, the largest single cost of a review under load); a crash then
/// loses at most the lines of the last interval. The destructor writes everything pending.
class AuditLog {
 public:
  static Result<std::unique_ptr<AuditLog>> open(
      const std::string& path,
      std::chrono::milliseconds flushInterval = std::chrono::milliseconds(0));
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  void write(const json& record);
  /// Appends a line that is already JSON and ends with a newline.
  void writeLine(const std::string& line);

 private:
  AuditLog(int fd, bool owned, std::chrono::milliseconds flushInterval);
  void writeAll(const std::string& bytes);
  void flusher();

  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;   ///< lines not yet written (guarded by mu_)
  bool writing_ = false;  ///< a thread is writing (guarded by mu_)
  bool stopping_ = false;
  int fd_;
  bool owned_;
  std::chrono::milliseconds interval_;
  std::thread thread_;  ///< the flusher, with an interval only
};

}  // namespace stateguard
