#pragma once
// The upstream CSI programs of ../shared/tools/csi (csi-sanity, the hostpath driver,
// mountutils-driver, sgtool) for tests that meet the real thing: found through
// STATEGUARD_CSI_TOOLS or the path relative to the source tree, unpacked from their .xz into the
// build folder, and what such tests need from the machine (root, mounts, loop devices).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.h"

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

/// "" when this machine can run an EioDisk (the stateguard-test-eio-disk program was built with
/// libfuse3, /dev/fuse opens, and mountAndLoopSkipReason() is ""); else one line saying why not.
std::string eioDiskSkipReason();

/// A real block device whose reads fail with EIO for a moment: a loop device over the file that
/// stateguard-test-eio-disk (tests/support/eio_disk) serves through FUSE from an image. Reads of
/// the loop device reach the image on every call (FUSE direct_io), so a switch makes them fail.
/// The block device's own page cache still answers a reader while any other process holds the
/// device open; it is dropped at the last close, and by failReads() (`blockdev --flushbufs`).
class EioDisk {
 public:
  /// Serves `image` through FUSE at `mountDir` (created) and attaches a loop device over it.
  EioDisk(const std::string& image, const std::string& mountDir);
  /// Detaches the loop device, stops the FUSE program and unmounts its directory.
  ~EioDisk();
  EioDisk(const EioDisk&) = delete;
  EioDisk& operator=(const EioDisk&) = delete;

  /// "/dev/loopN", or "" when something failed (error() says what).
  const std::string& path() const { return loop_; }
  const std::string& error() const { return error_; }
  /// The FUSE control file: `echo fail-reads > it` from a script does what failReads() does.
  std::string controlPath() const { return mountDir_ + "/control"; }
  /// From now on reads overlapping [offset, offset + length) fail with EIO; length 0: every read.
  /// Drops the block device's page cache, so what an earlier reader read is not answered.
  bool failReads(uint64_t offset = 0, uint64_t length = 0);
  /// Every read succeeds again.
  bool recover();
  /// Reads of the image that were answered with EIO so far.
  uint64_t failedReads() const;
  /// The FUSE program's log (one line per switch).
  std::string log() const;

 private:
  bool control(const std::string& command);

  std::string mountDir_, loop_, error_;
  std::unique_ptr<ChildProcess> fuse_;
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
