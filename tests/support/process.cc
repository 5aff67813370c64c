#include "tests/support/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace stateguard::testing {

std::string binaryPath(const std::string& name) {
  return std::string(STATEGUARD_BIN_DIR) + "/" + name;
}
std::string sourcePath(const std::string& relative) {
  return std::string(STATEGUARD_SOURCE_DIR) + "/" + relative;
}

std::string findProgram(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::string makeTempDir(const std::string& prefix) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + tmpl);
  return tmpl;
}

void removeTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

long procStatusKib(pid_t pid, const std::string& field) {
  std::istringstream status(readText("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

void writeText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

namespace {
pid_t spawn(const std::string& binary, const std::vector<std::string>& args,
            const std::string& workDir, const std::string& outPath, const std::string& errPath,
            int stdinFd) {
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    if (!workDir.empty() && ::chdir(workDir.c_str()) != 0) _exit(126);
    int out = ::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = ::open(errPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0 || err < 0) _exit(126);
    ::dup2(out, 1);
    ::dup2(err, 2);
    if (stdinFd >= 0) {
      ::dup2(stdinFd, 0);
    } else {
      int devnull = ::open("/dev/null", O_RDONLY);
      ::dup2(devnull, 0);
    }
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(binary.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}
}  // namespace

ChildProcess::ChildProcess(std::string binary, std::vector<std::string> args, std::string workDir) {
  static int counter = 0;
  std::string base =
      workDir + "/proc" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  outPath_ = base + ".out";
  errPath_ = base + ".err";
  pid_ = spawn(binary, args, workDir, outPath_, errPath_, -1);
}

ChildProcess::~ChildProcess() {
  if (running()) stop(std::chrono::milliseconds(2000));
}

bool ChildProcess::running() {
  if (exited_ || pid_ <= 0) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    exited_ = true;
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return true;
}

bool ChildProcess::waitForOutput(const std::string& needle, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (stderrText().find(needle) != std::string::npos ||
        stdoutText().find(needle) != std::string::npos) {
      return true;
    }
    if (!running()) {
      return stderrText().find(needle) != std::string::npos ||
             stdoutText().find(needle) != std::string::npos;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

int ChildProcess::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status_;
}

int ChildProcess::stop(std::chrono::milliseconds grace) {
  if (!running()) return status_;
  ::kill(pid_, SIGTERM);
  int code = wait(grace);
  if (code == -1 && running()) {
    ::kill(pid_, SIGKILL);
    wait(std::chrono::milliseconds(2000));
    return -1;
  }
  return code;
}

std::string ChildProcess::stdoutText() const { return readText(outPath_); }
std::string ChildProcess::stderrText() const { return readText(errPath_); }

CommandResult runCommand(const std::string& binary, const std::vector<std::string>& args,
                         const std::string& stdinText, std::chrono::milliseconds timeout) {
  std::string dir = makeTempDir("sg-cmd");
  std::string inPath = dir + "/stdin";
  writeText(inPath, stdinText);
  int inFd = ::open(inPath.c_str(), O_RDONLY);
  pid_t pid = spawn(binary, args, "", dir + "/out", dir + "/err", inFd);
  ::close(inFd);
  CommandResult result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int st = 0;
  while (true) {
    pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      result.exitCode = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      result.exitCode = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.out = readText(dir + "/out");
  result.err = readText(dir + "/err");
  removeTree(dir);
  return result;
}

}  // namespace stateguard::testing
