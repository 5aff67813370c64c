#pragma once
// Noticing that files changed (ConfigMap and Secret volumes swap them in place): a cheap stat
// fingerprint, and a thread that calls a check at an interval until stopped.

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

namespace stateguard {

/// inode, size and mtime of `path` ("missing" when it cannot be stat'ed); changes when the file
/// is rewritten or replaced.
std::string fileFingerprint(const std::string& path);

/// Calls `check` every `interval` on its own thread; stops (and joins) on destruction.
class Poller {
 public:
  Poller(std::chrono::milliseconds interval, std::function<void()> check);
  ~Poller();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace stateguard
