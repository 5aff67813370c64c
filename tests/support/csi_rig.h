#pragma once
// A node for the CSI sidecar's tests: a device directory of real filesystem images (made by the
// real mkfs tools), the test CSI driver process, optionally stateguard-csi in front of it and the
// format gate on the driver's PATH, and a gRPC client playing kubelet over unix sockets.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace stateguard::testing {

struct CsiRigOptions {
  bool sidecar = true;     ///< kubelet talks to stateguard-csi (else straight to the driver)
  bool formatGate = true;  ///< the gate is first on the driver's PATH
  bool driverStages = true;
  bool blkid239 = false;  ///< the driver reads an ambivalent blkid as "nothing found"
  std::string node = "node-a";
  std::string kubeconfig;                ///< sidecar --kubeconfig when set
  std::string ledgerDir;                 ///< default: <dir>/ledger-<node>
  std::vector<std::string> sidecarArgs;  ///< extra stateguard-csi flags
};

class CsiRig {
 public:
  /// `dir` is the test's temp dir (shared by several rigs to model several nodes).
  CsiRig(std::string dir, CsiRigOptions options);
  ~CsiRig();

  /// Starts the driver (and the sidecar); false with a message on failure.
  ::testing::AssertionResult start();
  void stop();
  /// Kills the driver alone (SIGKILL: a crash) / starts it again on the same socket.
  void killDriver();
  ::testing::AssertionResult startDriver();

  // ---- devices ----
  /// A sparse image file of `size` bytes in <dir>/images; "" when the mkfs tool failed. With
  /// fs "ext4" a file /data.txt holding `marker` is put in (mkfs.ext4 -d).
  std::string makeImage(const std::string& name, uint64_t size, const std::string& fs,
                        const std::string& marker = "");
  /// Points the volume's device (<dir>/dev/<volume>) at `target` (an image, /proc/self/mem for
  /// I/O errors), or removes it when target is "".
  void setDevice(const std::string& volumeId, const std::string& target);
  std::string devicePath(const std::string& volumeId) const;
  /// A hook script the driver runs before its blkid ("before-probe") or mkfs ("before-format").
  void setHook(const std::string& volumeId, const std::string& phase, const std::string& script);

  // ---- kubelet ----
  /// `shared`: access mode MULTI_NODE_MULTI_WRITER (else SINGLE_NODE_WRITER).
  grpc::Status stage(const std::string& volumeId, const std::string& fsType = "ext4",
                     bool block = false, bool shared = false);
  grpc::Status publish(const std::string& volumeId, const std::string& fsType = "ext4");
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

  // ---- observations ----
  std::string callLog() const;       ///< driver's log: one line per call / mkfs
  std::string auditLog() const;      ///< sidecar's audit JSON lines
  std::string gateAuditLog() const;  ///< the format gate's audit JSON lines
  int httpPort() const { return httpPort_; }
  const std::string& ledgerDir() const { return options_.ledgerDir; }
  ChildProcess* sidecar() { return sidecar_.get(); }

 private:
  std::string dir_;
  std::string nodeDir_;
  CsiRigOptions options_;
  std::unique_ptr<ChildProcess> driver_;
  std::unique_ptr<ChildProcess> sidecar_;
  std::vector<std::string> driverArgs_;
  std::shared_ptr<grpc::Channel> channel_;
  int httpPort_ = 0;
};

/// What one raw unary call got back.
struct Answer {
  grpc::Status status;
  std::string body;
  std::multimap<std::string, std::string> initial, trailing;
};

/// One unary call of `method` with raw bytes, as any gRPC client (kubelet) makes it; no deadline
/// when `deadline` is zero; `cancelAfter` > 0 cancels it from the client side then (no deadline
/// reaches the driver that way).
Answer call(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
            const std::string& body, const std::multimap<std::string, std::string>& metadata,
            std::chrono::milliseconds deadline = std::chrono::seconds(10),
            std::chrono::milliseconds cancelAfter = std::chrono::milliseconds(0));

/// Polls `condition` every 20 ms until it holds or `limit` passes; its last answer.
bool waitFor(const std::function<bool()>& condition, std::chrono::milliseconds limit);

/// The first value of `key`, or "<absent>".
std::string first(const std::multimap<std::string, std::string>& m, const std::string& key);

/// The text of /data.txt in an ext4 image (debugfs, read-only); "" when it cannot be read.
/// `superblock` > 0 reads through that backup superblock (block number, 4 KiB blocks).
std::string ext4DataFile(const std::string& image, uint64_t superblock = 0);
/// What `blkid -p` reports as UUID ("" when nothing).
std::string blkidUuid(const std::string& image);

}  // namespace stateguard::testing
