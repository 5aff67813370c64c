#include "tests/support/csi_tools.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

#include "tests/support/process.h"

namespace stateguard::testing {

std::string csiToolsDir() {
  if (const char* env = std::getenv("STATEGUARD_CSI_TOOLS"); env && *env) return env;
  return std::string(STATEGUARD_SOURCE_DIR) + "/../shared/tools/csi";
}

std::string csiTool(const std::string& name) {
  static std::mutex mu;
  std::lock_guard lock(mu);
  const std::string xz = csiToolsDir() + "/" + name + ".xz";
  if (::access(xz.c_str(), R_OK) != 0) return "";
  const std::string dir = std::string(STATEGUARD_BIN_DIR) + "/csi-tools";
  ::mkdir(dir.c_str(), 0755);
  const std::string out = dir + "/" + name;
  struct stat src {
  }, dst{};
  if (::stat(out.c_str(), &dst) == 0 && ::stat(xz.c_str(), &src) == 0 &&
      dst.st_mtime >= src.st_mtime && (dst.st_mode & S_IXUSR)) {
    return out;
  }
  // Unpacked under a unique name, then renamed: parallel tests never run a half-written file.
  const std::string tmp = out + ".tmp." + std::to_string(::getpid());
  CommandResult r =
      runCommand("/bin/sh", {"-c", "xz -dc \"$0\" > \"$1\" && chmod 755 \"$1\"", xz, tmp}, "",
                 std::chrono::seconds(60));
  if (r.exitCode != 0 || ::rename(tmp.c_str(), out.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return "";
  }
  return out;
}

std::string mountAndLoopSkipReason() {
  if (::geteuid() != 0) return "not root: mounts and loop devices need root";
  std::string dir = makeTempDir("sg-mountcheck");
  std::string reason;
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=1m") != 0) {
    reason = "mounting is not permitted here (mount tmpfs failed)";
  } else {
    ::umount2(dir.c_str(), MNT_DETACH);
  }
  if (reason.empty()) {
    CommandResult r = runCommand("/sbin/losetup", {"-f"});
    if (r.exitCode != 0) reason = "no free loop device (losetup -f: " + r.err + ")";
  }
  removeTree(dir);
  return reason;
}

LoopDevice::LoopDevice(const std::string& image) {
  CommandResult r = runCommand("/sbin/losetup", {"-f", "--show", image});
  if (r.exitCode != 0) {
    error_ = "losetup -f --show " + image + ": " + r.err;
    return;
  }
  path_ = r.out.substr(0, r.out.find('\n'));
}

LoopDevice::~LoopDevice() {
  if (!path_.empty()) runCommand("/sbin/losetup", {"-d", path_});
}

std::string eioDiskSkipReason() {
  if (::access(binaryPath("stateguard-test-eio-disk").c_str(), X_OK) != 0) {
    return "stateguard-test-eio-disk was not built (libfuse3-dev missing when cmake ran)";
  }
  if (std::string why = mountAndLoopSkipReason(); !why.empty()) return why;
  const int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) return std::string("cannot open /dev/fuse: ") + std::strerror(errno);
  ::close(fd);
  return "";
}

EioDisk::EioDisk(const std::string& image, const std::string& mountDir) : mountDir_(mountDir) {
  ::mkdir(mountDir_.c_str(), 0755);
  // Its output files go to its work directory, which must not be the one it mounts over.
  const std::string parent = mountDir_.substr(0, mountDir_.find_last_of('/'));
  fuse_ = std::make_unique<ChildProcess>(binaryPath("stateguard-test-eio-disk"),
                                         std::vector<std::string>{image, mountDir_},
                                         parent.empty() ? "/" : parent);
  if (!fuse_->waitForOutput("eio-disk ready", std::chrono::seconds(10))) {
    error_ = "stateguard-test-eio-disk did not mount: " + fuse_->stderrText();
    return;
  }
  CommandResult r = runCommand("/sbin/losetup", {"-f", "--show", mountDir_ + "/disk"});
  if (r.exitCode != 0) {
    error_ = "losetup over " + mountDir_ + "/disk: " + r.err;
    return;
  }
  loop_ = r.out.substr(0, r.out.find('\n'));
}

EioDisk::~EioDisk() {
  // In this order: the loop device holds the FUSE file open, the FUSE program serves it.
  if (!loop_.empty()) {
    recover();  // a loop device whose reads fail still detaches, but a reader may be stuck
    runCommand("/sbin/losetup", {"-d", loop_});
  }
  if (fuse_) fuse_->stop();
  ::umount2(mountDir_.c_str(), MNT_DETACH);
}

bool EioDisk::control(const std::string& command) {
  const int fd = ::open(controlPath().c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const std::string line = command + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  return ok;
}

bool EioDisk::failReads(uint64_t offset, uint64_t length) {
  const bool ok =
      offset == 0 && length == 0
          ? control("fail-reads")
          : control("fail-reads " + std::to_string(offset) + " " + std::to_string(length));
  // The block device's page cache outlives a reader's close while any other process holds the
  // device open (a test beside this one, udev on a host), and would answer from
  // what an earlier probe read: drop it, as `blockdev --flushbufs` does.
  if (ok && !loop_.empty()) {
    const int fd = ::open(loop_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool flushed = ::ioctl(fd, BLKFLSBUF, 0) == 0;
    ::close(fd);
    return flushed;
  }
  return ok;
}

bool EioDisk::recover() { return control("ok"); }

uint64_t EioDisk::failedReads() const {
  const std::string status = readText(controlPath());
  const std::string key = "failed-reads ";
  const size_t at = status.find(key);
  return at == std::string::npos ? 0 : std::stoull(status.substr(at + key.size()));
}

std::string EioDisk::log() const { return fuse_ ? fuse_->stderrText() : ""; }

void unmountUnder(const std::string& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::vector<std::string> points;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string id, parent, devno, root, point;
    ss >> id >> parent >> devno >> root >> point;
    if (point == dir || point.rfind(dir + "/", 0) == 0) points.push_back(point);
  }
  std::sort(points.begin(), points.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const std::string& p : points) ::umount2(p.c_str(), MNT_DETACH);
}

namespace {
bool unixAddress(const std::string& path, sockaddr_un& addr) {
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return false;
  std::memcpy(addr.sun_path, path.data(), path.size());
  return true;
}
}  // namespace

DelayingUnixRelay::DelayingUnixRelay(std::string listenPath, std::string targetPath,
                                     std::chrono::milliseconds delay)
    : listenPath_(std::move(listenPath)), targetPath_(std::move(targetPath)), delay_(delay) {
  sockaddr_un addr{};
  if (!unixAddress(listenPath_, addr)) {
    error_ = "socket path too long: " + listenPath_;
    return;
  }
  listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ::unlink(listenPath_.c_str());
  if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener_, 16) != 0) {
    error_ = "cannot listen on " + listenPath_ + ": " + std::strerror(errno);
    return;
  }
  acceptor_ = std::thread([this] { acceptLoop(); });
}

DelayingUnixRelay::~DelayingUnixRelay() {
  stop_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  for (std::thread& t : pumps_) t.join();
  if (listener_ >= 0) ::close(listener_);
  ::unlink(listenPath_.c_str());
}

void DelayingUnixRelay::acceptLoop() {
  while (!stop_) {
    pollfd p{listener_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client >= 0) pumps_.emplace_back([this, client] { pump(client); });
  }
}

void DelayingUnixRelay::pump(int client) {
  std::this_thread::sleep_for(delay_);
  sockaddr_un addr{};
  int upstream = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (upstream < 0 || !unixAddress(targetPath_, addr) ||
      ::connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (upstream >= 0) ::close(upstream);
    ::close(client);
    return;
  }
  char buf[64 * 1024];
  pollfd fds[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
  while (!stop_) {
    if (::poll(fds, 2, 100) <= 0) continue;
    bool closed = false;
    for (int i = 0; i < 2 && !closed; ++i) {
      if (fds[i].revents == 0) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        closed = true;
        break;
      }
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::send(fds[1 - i].fd, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
        if (w <= 0) {
          closed = true;
          break;
        }
        off += w;
      }
    }
    if (closed) break;
  }
  ::close(client);
  ::close(upstream);
}

}  // namespace stateguard::testing
