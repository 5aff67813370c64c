#pragma once
// The upstream CSI programs of ../shared/tools/csi (csi-sanity, the hostpath driver,
// mountutils-driver, sgtool) for tests that meet the real thing: found through
// STATEGUARD_CSI_TOOLS or the path relative to the source tree, unpacked from their .xz into the
// build folder, and what such tests need from the machine (root, mounts, loop devices).

#include <string>

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

}  // namespace stateguard::testing
