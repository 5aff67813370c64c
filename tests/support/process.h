#pragma once
// Starts a real binary as a child process for integration tests, captures its output,
// and stops it (SIGTERM, then SIGKILL) when the test ends.

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace stateguard::testing {

/// A running child process whose stdout and stderr go to files in a temp dir.
class ChildProcess {
 public:
  ChildProcess(std::string binary, std::vector<std::string> args, std::string workDir);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool running();
  /// Waits until `needle` appears in stderr (or stdout); false on timeout or exit.
  bool waitForOutput(const std::string& needle, std::chrono::milliseconds timeout);
  /// Sends SIGTERM and waits; returns the exit status (or -1 if it had to be killed).
  int stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));
  /// Waits for the process to exit by itself; returns its exit code, or -1 on timeout.
  int wait(std::chrono::milliseconds timeout);
  std::string stdoutText() const;
  std::string stderrText() const;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  bool exited_ = false;
  std::string outPath_, errPath_;
};

/// Path of a built binary (build/bin/NAME).
std::string binaryPath(const std::string& name);
/// A fresh temp directory, removed by the returned guard's owner via removeTree().
std::string makeTempDir(const std::string& prefix);
void removeTree(const std::string& path);
std::string readText(const std::string& path);
/// A field of /proc/PID/status in KiB (VmRSS, VmHWM); -1 if unreadable.
long procStatusKib(pid_t pid, const std::string& field);
void writeText(const std::string& path, const std::string& text);
/// Source tree path (for samples and scripts).
std::string sourcePath(const std::string& relative);
/// Absolute path of a program found on PATH, or "" when there is none.
std::string findProgram(const std::string& name);

/// Result of running a command to completion.
struct CommandResult {
  int exitCode = -1;
  std::string out;
  std::string err;
};
/// Runs a binary to completion with optional stdin text; times out after `timeout`.
CommandResult runCommand(const std::string& binary, const std::vector<std::string>& args,
                         const std::string& stdinText = "",
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(20000));

}  // namespace stateguard::testing
