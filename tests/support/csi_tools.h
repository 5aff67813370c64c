#pragma once
// The upstream CSI programs of ../shared/tools/csi (csi-sanity, the hostpath driver,
// mountutils-driver, sgtool) for tests that meet the real thing: found through
// STATEGUARD_CSI_TOOLS or the path relative to the source tree, unpacked from their .xz into the
// build folder, and what such tests need from the machine (root, mounts, loop devices).

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace stateguard::testing {

/// The unpacked program (build/bin/csi-tools/NAME), unpacked on first use; "" when its .xz is
/// not there (see csiToolsDir()).
std::string csiTool(const std::string& name);
/// Where the .xz files are looked for: $STATEGUARD_CSI_TOOLS, else <source>/../shared/tools/csi.
std::string csiToolsDir();

/// "" when this machine lets a test mount filesystems and attach loop devices; else one line
/// saying what is missing (the test skips with it).
std::string mountAndLoopSkipReason();

/// A loop device over an image file, detached when destroyed.
class LoopDevice {
 public:
  explicit LoopDevice(const std::string& image);
  ~LoopDevice();
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  /// "/dev/loopN", or "" when losetup failed (error() says why).
  const std::string& path() const { return path_; }
  const std::string& error() const { return error_; }

 private:
  std::string path_, error_;
};

/// Unmounts (lazily) everything mounted at or below `dir`, deepest first: run before removing a
/// test directory a driver mounted into, so removal never reaches through a mount.
void unmountUnder(const std::string& dir);

/// A byte relay between two unix sockets that holds each new connection back for `delay`
/// before connecting it through. csi-sanity v5.3.1 needs it: utils.Connect reads the channel
/// state after Dial and then waits for it to change, so a handshake that completes before that
/// first read leaves it waiting its full minute and failing the first spec with "Connection
/// timed out" (fixed upstream in csi-test 128ada30, after v5.3.1). Holding the handshake back
/// keeps it from winning that race; the test puts the relay in front of both runs alike.
class DelayingUnixRelay {
 public:
  DelayingUnixRelay(std::string listenPath, std::string targetPath,
                    std::chrono::milliseconds delay);
  ~DelayingUnixRelay();
  DelayingUnixRelay(const DelayingUnixRelay&) = delete;
  DelayingUnixRelay& operator=(const DelayingUnixRelay&) = delete;
  /// "" when listening; else why not.
  const std::string& error() const { return error_; }

 private:
  void acceptLoop();
  void pump(int client);

  std::string listenPath_, targetPath_, error_;
  std::chrono::milliseconds delay_;
  int listener_ = -1;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::vector<std::thread> pumps_;  // only the acceptor thread adds to it
};

}  // namespace stateguard::testing
