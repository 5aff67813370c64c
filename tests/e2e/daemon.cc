#include "tests/e2e/daemon.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "tests/support/process.h"

namespace stateguard::testing {

Daemon::Daemon(std::string name, std::string binary, std::vector<std::string> args,
               std::string logPath)
    : name_(std::move(name)),
      binary_(std::move(binary)),
      args_(std::move(args)),
      logPath_(std::move(logPath)) {}

Daemon::~Daemon() { stop(std::chrono::milliseconds(5000)); }

bool Daemon::start(std::string* error) {
  if (running()) return true;
  const pid_t parent = ::getpid();
  std::vector<char*> argv;
  argv.push_back(binary_.data());
  for (auto& a : args_) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int log = ::open(logPath_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) {
    *error = name_ + ": cannot open " + logPath_ + ": " + std::strerror(errno);
    return false;
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log);
    *error = name_ + ": fork failed: " + std::strerror(errno);
    return false;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) _exit(125);  // the test process died before prctl
    ::setpgid(0, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::execv(binary_.c_str(), argv.data());
    _exit(127);
  }
  ::close(log);
  pid_ = pid;
  status_ = -1;
  return true;
}

bool Daemon::running() {
  if (pid_ <= 0) return false;
  int st = 0;
  const pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    pid_ = -1;
    return false;
  }
  return r == 0;
}

int Daemon::stop(std::chrono::milliseconds grace) {
  if (!running()) return status_;
  const pid_t pid = pid_;
  ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      int st = 0;
      ::waitpid(pid, &st, 0);
      pid_ = -1;
      status_ = -1;
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return status_;
}

std::string Daemon::log() const { return readText(logPath_); }

std::string Daemon::tail(size_t lines) const {
  const std::string text = log();
  size_t pos = text.size();
  for (size_t n = 0; n <= lines && pos > 0; ++n) {
    const size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text;
    pos = nl;
  }
  return text.substr(pos + 1);
}

int freeLocalPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot bind a port on 127.0.0.1");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool pollUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return done();
}

}  // namespace stateguard::testing
