#include "tests/support/csi_tools.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
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

}  // namespace stateguard::testing
