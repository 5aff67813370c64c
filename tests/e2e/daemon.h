#pragma once
// A long-running server (etcd, kube-apiserver, kube-controller-manager) started for the
// end-to-end suite. Unlike ChildProcess it appends to one log file across restarts, and the
// kernel kills it when the test process dies (PR_SET_PDEATHSIG), so a crashed or timed-out
// suite leaves no control plane behind holding ports.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace stateguard::testing {

class Daemon {
 public:
  /// `name` is for messages; output goes to `logPath` (appended).
  Daemon(std::string name, std::string binary, std::vector<std::string> args, std::string logPath);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  /// Starts it; false (with the reason in *error) when fork or exec fail.
  bool start(std::string* error);
  bool running();
  /// SIGTERM, then SIGKILL after `grace`; returns the exit status (-1 when it had to be killed).
  int stop(std::chrono::milliseconds grace = std::chrono::milliseconds(10000));
  /// The log written so far.
  std::string log() const;
  /// The last `lines` lines of the log (for failure messages).
  std::string tail(size_t lines = 20) const;
  const std::string& name() const { return name_; }
  const std::string& logPath() const { return logPath_; }
  pid_t pid() const { return pid_; }

 private:
  std::string name_, binary_;
  std::vector<std::string> args_;
  std::string logPath_;
  pid_t pid_ = -1;
  int status_ = -1;
};

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice for port 0).
int freeLocalPort();

/// Calls `done` every 200 ms until it returns true or `timeout` passes; returns its last answer.
bool pollUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout);

}  // namespace stateguard::testing
