// The CSI incidents replayed through mountutils-driver: a CSI node driver whose NodeStageVolume
// is upstream k8s.io/mount-utils SafeFormatAndMount.FormatAndMount (blkid, mkfs.<fs> when blkid
// finds nothing, mount), as block-storage drivers run it, on real loop devices and real mounts.
// stateguard-csi sits in front (device template {volume_context.device}), the format gate first
// on the driver's PATH. Several replays run once without stateguard too, to show the driver alone
// destroys the data (so the guarded run proves something).

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "csi-sidecar/ledger.h"
#include "proto/csi.grpc.pb.h"
#include "tests/support/csi_rig.h"
#include "tests/support/csi_tools.h"
#include "tests/support/process.h"

// Designated initializers of the options name only what a test changes.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace stateguard::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool isMountPoint(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string id, parent, devno, root, point;
    ss >> id >> parent >> devno >> root >> point;
    if (point == path) return true;
  }
  return false;
}

/// A node: mountutils-driver (optionally behind stateguard-csi, optionally with the gate and a
/// wrapper directory first on its PATH) and a kubelet-like client.
class MountutilsNode {
 public:
  struct Options {
    bool sidecar = true;
    bool gate = true;
    std::string pathPrefix;  ///< a directory put before everything on the driver's PATH
  };
  MountutilsNode(std::string dir, Options o) : dir_(std::move(dir)), o_(std::move(o)) {}
  ~MountutilsNode() {
    channel_.reset();
    if (sidecar_) sidecar_->stop();
    if (driver_) driver_->stop();
  }

  ::testing::AssertionResult start() {
    const std::string driver = csiTool("mountutils-driver");
    if (driver.empty()) return ::testing::AssertionFailure() << "no mountutils-driver";
    ledger_ = dir_ + "/ledger";
    std::string path = "/usr/sbin:/usr/bin:/sbin:/bin";
    if (o_.gate) {
      CommandResult r =
          runCommand(binaryPath("stateguard-format-gate"), {"install", dir_ + "/gate"});
      if (r.exitCode != 0) return ::testing::AssertionFailure() << "gate install: " << r.err;
      path = dir_ + "/gate:" + path;
    }
    if (!o_.pathPrefix.empty()) path = o_.pathPrefix + ":" + path;
    const std::string sock = dir_ + "/driver.sock";
    driver_ = std::make_unique<ChildProcess>(
        "/usr/bin/env",
        std::vector<std::string>{"PATH=" + path, "STATEGUARD_LEDGER_DIR=" + ledger_, driver,
                                 "--endpoint", "unix://" + sock},
        dir_);
    if (!driver_->waitForOutput("fmtdriver on", std::chrono::seconds(10))) {
      return ::testing::AssertionFailure() << "driver did not start: " << driver_->stderrText();
    }
    std::string target = "unix://" + sock;
    if (o_.sidecar) {
      const std::string proxy = dir_ + "/stateguard.sock";
      sidecar_ = std::make_unique<ChildProcess>(
          binaryPath("stateguard-csi"),
          std::vector<std::string>{"--csi-address", "unix://" + proxy, "--driver-address", target,
                                   "--ledger-dir", ledger_, "--device-path-template",
                                   "{volume_context.device}", "--device-root", "/dev",
                                   "--device-root", dir_ + "/dev", "--http-endpoint", "127.0.0.1:0",
                                   "--audit-log", dir_ + "/audit.log", "--node-name", "node-a"},
          dir_);
      if (!sidecar_->waitForOutput("driver is ", std::chrono::seconds(10))) {
        return ::testing::AssertionFailure() << "sidecar: " << sidecar_->stderrText();
      }
      target = "unix://" + proxy;
    }
    channel_ = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
    return ::testing::AssertionSuccess();
  }

  std::string stagingPath(const std::string& vol) const {
    return dir_ + "/staging-" + std::to_string(std::hash<std::string>()(vol));
  }

  grpc::Status stage(const std::string& vol, const std::string& device, const std::string& fs) {
    auto stub = ::csi::v1::Node::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    ::csi::v1::NodeStageVolumeRequest req;
    req.set_volume_id(vol);
    req.set_staging_target_path(stagingPath(vol));
    req.mutable_volume_capability()->mutable_mount()->set_fs_type(fs);
    req.mutable_volume_capability()->mutable_access_mode()->set_mode(
        ::csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
    (*req.mutable_volume_context())["device"] = device;
    ::csi::v1::NodeStageVolumeResponse resp;
    return stub->NodeStageVolume(&ctx, req, &resp);
  }

  grpc::Status unstage(const std::string& vol) {
    auto stub = ::csi::v1::Node::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ::csi::v1::NodeUnstageVolumeRequest req;
    req.set_volume_id(vol);
    req.set_staging_target_path(stagingPath(vol));
    ::csi::v1::NodeUnstageVolumeResponse resp;
    return stub->NodeUnstageVolume(&ctx, req, &resp);
  }

  std::string auditLog() const { return readText(dir_ + "/audit.log"); }
  const std::string& ledgerDir() const { return ledger_; }
  std::string driverLog() const { return driver_ ? driver_->stderrText() : ""; }

 private:
  std::string dir_;
  Options o_;
  std::string ledger_;
  std::unique_ptr<ChildProcess> driver_, sidecar_;
  std::shared_ptr<grpc::Channel> channel_;
};

class MountutilsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = mountAndLoopSkipReason(); !why.empty()) {
      GTEST_SKIP() << "mount-utils replays skipped: " << why;
    }
    if (csiTool("mountutils-driver").empty()) {
      GTEST_SKIP() << "mount-utils replays skipped: mountutils-driver.xz not found in "
                   << csiToolsDir() << " (set STATEGUARD_CSI_TOOLS)";
    }
    dir_ = makeTempDir("sg-mountutils");
    ::mkdir((dir_ + "/dev").c_str(), 0755);
  }
  void TearDown() override {
    if (dir_.empty()) return;
    unmountUnder(dir_);
    loops_.clear();
    removeTree(dir_);
  }

  /// A loop device over a sparse image of `size` holding `fs` ("" = blank) with /data.txt.
  std::string device(const std::string& name, uint64_t size, const std::string& fs) {
    const std::string img = dir_ + "/" + name + ".img";
    EXPECT_EQ(runCommand("/usr/bin/truncate", {"-s", std::to_string(size), img}).exitCode, 0);
    if (fs == "ext4") {
      ::mkdir((img + ".d").c_str(), 0755);
      writeText(img + ".d/data.txt", "orders\n");
      CommandResult r =
          runCommand("/usr/sbin/mkfs.ext4", {"-q", "-F", "-b", "4096", "-d", img + ".d", img});
      EXPECT_EQ(r.exitCode, 0) << r.err;
    } else if (fs == "xfs" || fs == "btrfs") {
      CommandResult r = runCommand("/usr/sbin/mkfs." + fs, {"-q", "-f", img});
      EXPECT_EQ(r.exitCode, 0) << r.err;
    }
    loops_.push_back(std::make_unique<LoopDevice>(img));
    EXPECT_FALSE(loops_.back()->path().empty()) << loops_.back()->error();
    return loops_.back()->path();
  }

  void zeroBytes(const std::string& dev, uint64_t offset, uint64_t bytes) {
    CommandResult r =
        runCommand("/usr/bin/dd",
                   {"if=/dev/zero", "of=" + dev, "bs=512", "seek=" + std::to_string(offset / 512),
                    "count=" + std::to_string(bytes / 512), "conv=notrunc,fsync", "status=none"});
    ASSERT_EQ(r.exitCode, 0) << r.err;
    ASSERT_EQ(blkidUuid(dev), "") << "blkid still sees a filesystem on " << dev;
  }

  std::string dir_;
  std::vector<std::unique_ptr<LoopDevice>> loops_;
};

TEST_F(MountutilsTest, BlankFirstFormatThenTheIntactVolumeStagesAgain) {
  MountutilsNode node(dir_, {});
  ASSERT_TRUE(node.start());
  std::string dev = device("new", 128 * kMiB, "");
  grpc::Status s = node.stage("pvc-new", dev, "ext4");
  ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << node.driverLog();
  const std::string uuid = blkidUuid(dev);
  ASSERT_FALSE(uuid.empty()) << "mount-utils formatted the blank device";
  ASSERT_TRUE(isMountPoint(node.stagingPath("pvc-new")));
  writeText(node.stagingPath("pvc-new") + "/kept.txt", "rows\n");
  ASSERT_TRUE(node.unstage("pvc-new").ok());
  csi::Ledger ledger(node.ledgerDir());
  auto entry = ledger.load("pvc-new");
  ASSERT_TRUE(entry.ok() && entry.value() && entry.value()->current());
  EXPECT_EQ(entry.value()->current()->uuid, uuid);

  s = node.stage("pvc-new", dev, "ext4");  // kubelet restarted: the same filesystem
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(blkidUuid(dev), uuid);
  EXPECT_EQ(readText(node.stagingPath("pvc-new") + "/kept.txt"), "rows\n");
  ASSERT_TRUE(node.unstage("pvc-new").ok());
}

struct ZeroCase {
  std::string fs;
  uint64_t size, offset, bytes;
};
void PrintTo(const ZeroCase& c, std::ostream* os) { *os << c.fs; }

class MountutilsZeroedPrimaryTest : public MountutilsTest,
                                    public ::testing::WithParamInterface<ZeroCase> {};

TEST_P(MountutilsZeroedPrimaryTest, DriverAloneReformatsAndTheSidecarRefuses) {
  const ZeroCase& c = GetParam();
  if (::access(("/usr/sbin/mkfs." + c.fs).c_str(), X_OK) != 0) GTEST_SKIP() << "no mkfs." << c.fs;
  // Without stateguard: blkid sees nothing, mount-utils formats (-F / -f override mkfs's check).
  {
    MountutilsNode alone(dir_ + "/alone", {.sidecar = false, .gate = false});
    ::mkdir((dir_ + "/alone").c_str(), 0755);
    ASSERT_TRUE(alone.start());
    std::string dev = device("alone-" + c.fs, c.size, c.fs);
    const std::string uuid = blkidUuid(dev);
    zeroBytes(dev, c.offset, c.bytes);
    grpc::Status s = alone.stage("pvc-z", dev, c.fs);
    if (c.fs != "btrfs") {  // mount-utils gives mkfs.btrfs no -f: btrfs's own check may hold
      EXPECT_TRUE(s.ok()) << s.error_message();
      EXPECT_NE(blkidUuid(dev), "");
      EXPECT_NE(blkidUuid(dev), uuid) << "the driver alone put a new filesystem on it";
    }
    alone.unstage("pvc-z");
  }
  MountutilsNode node(dir_, {});
  ASSERT_TRUE(node.start());
  std::string dev = device("guarded-" + c.fs, c.size, c.fs);
  const std::string uuid = blkidUuid(dev);
  zeroBytes(dev, c.offset, c.bytes);
  grpc::Status s = node.stage("pvc-z", dev, c.fs);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), uuid)) << s.error_message();
  EXPECT_EQ(blkidUuid(dev), "") << "nothing was formatted";
  EXPECT_FALSE(contains(node.driverLog(), "FormatAndMount")) << "the driver never saw the call";
  EXPECT_TRUE(contains(node.auditLog(), "\"data-evidence\"")) << node.auditLog();
}

INSTANTIATE_TEST_SUITE_P(Filesystems, MountutilsZeroedPrimaryTest,
                         ::testing::Values(ZeroCase{"ext4", 256 * kMiB, 0, 4096},
                                           ZeroCase{"xfs", 320 * kMiB, 0, 512},
                                           ZeroCase{"btrfs", 256 * kMiB, 64 * 1024, 4096}),
                         [](const ::testing::TestParamInfo<ZeroCase>& p) { return p.param.fs; });

TEST_F(MountutilsTest, MissingDeviceIsRefusedAndNothingIsFormatted) {
  MountutilsNode node(dir_, {});
  ASSERT_TRUE(node.start());
  grpc::Status s = node.stage("pvc-m", dir_ + "/dev/not-yet", "ext4");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "could not be read")) << s.error_message();
  EXPECT_FALSE(contains(node.driverLog(), "FormatAndMount"));
}

/// A blkid that finds nothing, as a device reading zeros or absent for a moment inside the
/// driver's own call (longhorn#13668, ceph-csi#1820): the sidecar's probe a moment earlier saw
/// the filesystem.
std::string flickeringBlkid(const std::string& dir) {
  const std::string wrap = dir + "/flicker";
  ::mkdir(wrap.c_str(), 0755);
  writeText(wrap + "/blkid", "#!/bin/sh\nexit 2\n");
  ::chmod((wrap + "/blkid").c_str(), 0755);
  return wrap;
}

TEST_F(MountutilsTest, FlickerInsideTheDriversCallFormatsWithoutTheGate) {
  MountutilsNode node(dir_, {.sidecar = true, .gate = false, .pathPrefix = flickeringBlkid(dir_)});
  ASSERT_TRUE(node.start());
  std::string dev = device("flicker", 128 * kMiB, "ext4");
  const std::string uuid = blkidUuid(dev);
  grpc::Status s = node.stage("pvc-f", dev, "ext4");
  EXPECT_NE(blkidUuid(dev), uuid) << "without the gate mount-utils formatted the volume";
  node.unstage("pvc-f");
}

TEST_F(MountutilsTest, FlickerInsideTheDriversCallIsStoppedByTheFormatGate) {
  MountutilsNode node(dir_, {.sidecar = true, .gate = true, .pathPrefix = flickeringBlkid(dir_)});
  ASSERT_TRUE(node.start());
  std::string dev = device("flicker", 128 * kMiB, "ext4");
  const std::string uuid = blkidUuid(dev);
  grpc::Status s = node.stage("pvc-f", dev, "ext4");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.error_message(), "stateguard-format-gate refused")) << s.error_message();
  EXPECT_EQ(blkidUuid(dev), uuid);
  EXPECT_FALSE(isMountPoint(node.stagingPath("pvc-f")));
}

TEST_F(MountutilsTest, ReplacedFilesystemIsQuarantinedAndUnmounted) {
  MountutilsNode node(dir_, {});
  ASSERT_TRUE(node.start());
  std::string first = device("first", 128 * kMiB, "ext4");
  ASSERT_TRUE(node.stage("pvc-q", first, "ext4").ok());
  ASSERT_TRUE(node.unstage("pvc-q").ok());
  // The volume comes back as another device holding another ext4 (a replica rebuilt empty).
  std::string second = device("second", 128 * kMiB, "ext4");
  grpc::Status s = node.stage("pvc-q", second, "ext4");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(contains(s.error_message(), "quarantined")) << s.error_message();
  EXPECT_FALSE(isMountPoint(node.stagingPath("pvc-q")))
      << "kubelet was told the stage failed, but the new filesystem stayed mounted";
  EXPECT_TRUE(contains(node.auditLog(), "\"NodeUnstageVolume\"")) << node.auditLog();
}

TEST_F(MountutilsTest, VolumeIdsLongerThanAFileNameStage) {
  MountutilsNode node(dir_, {});
  ASSERT_TRUE(node.start());
  std::string dev = device("long", 128 * kMiB, "");
  const std::string id = "projects/p/zones/z/disks/" + std::string(400, 'd');
  grpc::Status s = node.stage(id, dev, "ext4");
  ASSERT_TRUE(s.ok()) << s.error_message().substr(0, 500);
  csi::Ledger ledger(node.ledgerDir());
  auto entry = ledger.load(id);
  ASSERT_TRUE(entry.ok()) << entry.error();
  ASSERT_TRUE(entry.value() && entry.value()->current());
  EXPECT_EQ(entry.value()->current()->uuid, blkidUuid(dev));
  node.unstage(id);
}

// ---- I/O errors on a real block device (issue 14) ----------------------------------------------
// The device is a loop device over stateguard-test-eio-disk's FUSE file: its reads fail with EIO
// while the switch is on, and nothing caches them (FUSE direct_io; the block device's own page
// cache is dropped when its last opener closes, and nobody holds it open between calls here).

class MountutilsEioTest : public MountutilsTest {
 protected:
  void SetUp() override {
    MountutilsTest::SetUp();
    if (IsSkipped()) return;
    if (std::string why = eioDiskSkipReason(); !why.empty()) {
      GTEST_SKIP() << "mount-utils I/O-error replays skipped: " << why;
    }
  }
  void TearDown() override {
    if (!dir_.empty()) unmountUnder(dir_);  // staging mounts of the loop devices first
    disks_.clear();
    MountutilsTest::TearDown();
  }

  /// A volume of `size` bytes on a device whose reads can be made to fail: ext4 holding
  /// /data.txt ("orders\n"), or an empty xfs. 512 MiB and more is what real volumes are: mke2fs
  /// then picks 4 KiB blocks (below 512 MiB its "small" type has 1 KiB blocks), which decides
  /// what a failed mkfs wrote.
  EioDisk& eioVolume(const std::string& name, uint64_t size = 512 * kMiB,
                     const std::string& fs = "ext4") {
    const std::string img = dir_ + "/" + name + ".img";
    EXPECT_EQ(runCommand("/usr/bin/truncate", {"-s", std::to_string(size), img}).exitCode, 0);
    CommandResult r;
    if (fs == "ext4") {
      ::mkdir((img + ".d").c_str(), 0755);
      writeText(img + ".d/data.txt", "orders\n");
      r = runCommand("/usr/sbin/mkfs.ext4", {"-q", "-F", "-b", "4096", "-d", img + ".d", img});
    } else {
      r = runCommand("/usr/sbin/mkfs." + fs, {"-q", "-f", img});
    }
    EXPECT_EQ(r.exitCode, 0) << r.err;
    disks_.push_back(std::make_unique<EioDisk>(img, dir_ + "/fuse-" + name));
    EXPECT_FALSE(disks_.back()->path().empty()) << disks_.back()->error();
    return *disks_.back();
  }

  std::vector<std::unique_ptr<EioDisk>> disks_;
};

// Without stateguard: blkid exits 2 on EIO, as for a blank device, and mount-utils runs
// `mkfs.ext4 -F -m0`. mkfs fails on the errors too (exit 1, "Input/output error while writing
// reserved inodes": updating one inode reads its table block) but only after it has written the
// new inode tables over the old ones (whole 4 KiB blocks, no read needed). It writes the
// superblock last, so after the device recovers blkid still reports the old UUID: the volume
// looks intact, its root directory is gone, and mount-utils' fsck before the next mount fails.
TEST_F(MountutilsEioTest, ReadErrorsAtStageTimeDriverAloneRunMkfsWhichFailsAfterDestroyingTheData) {
  MountutilsNode alone(dir_, {.sidecar = false, .gate = false});
  ASSERT_TRUE(alone.start());
  EioDisk& disk = eioVolume("alone");
  const std::string dev = disk.path();
  const std::string uuid = blkidUuid(dev);
  ASSERT_FALSE(uuid.empty());
  ASSERT_EQ(ext4DataFile(dev), "orders\n");

  ASSERT_TRUE(disk.failReads());
  grpc::Status s = alone.stage("pvc-eio", dev, "ext4");
  EXPECT_GT(disk.failedReads(), 0u);
  ASSERT_TRUE(disk.recover());
  EXPECT_TRUE(contains(alone.driverLog(), "appears to be unformatted, attempting to format"))
      << alone.driverLog();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "format of disk")) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "Input/output error while writing reserved inodes"))
      << s.error_message();
  EXPECT_FALSE(isMountPoint(alone.stagingPath("pvc-eio")));

  EXPECT_EQ(blkidUuid(dev), uuid) << "the failed mkfs never wrote its superblock";
  EXPECT_EQ(ext4DataFile(dev), "") << "but it wrote the inode tables: /data.txt is gone";
  grpc::Status again = alone.stage("pvc-eio", dev, "ext4");
  EXPECT_EQ(again.error_code(), grpc::StatusCode::INTERNAL) << again.error_message();
  EXPECT_TRUE(contains(again.error_message(), "'fsck' found errors")) << again.error_message();
  EXPECT_FALSE(isMountPoint(alone.stagingPath("pvc-eio")));
}

// XFS (longhorn#14042: an I/O error, then `mkfs.xfs -f`): mkfs.xfs fails on the errors too
// (exit 1, "filesystem failed to initialize"), but only after writing a new superblock still
// flagged as being made: once the device recovers blkid reports a new UUID, the old filesystem is
// gone, and the next mount fails. Through stateguard-csi the stage is refused and the filesystem
// stays.
TEST_F(MountutilsEioTest, XfsReadErrorsDriverAloneReplaceTheFilesystemAndTheSidecarRefuses) {
  if (::access("/usr/sbin/mkfs.xfs", X_OK) != 0) GTEST_SKIP() << "no mkfs.xfs";
  {
    ::mkdir((dir_ + "/alone").c_str(), 0755);
    MountutilsNode alone(dir_ + "/alone", {.sidecar = false, .gate = false});
    ASSERT_TRUE(alone.start());
    EioDisk& disk = eioVolume("alone-xfs", 512 * kMiB, "xfs");
    const std::string dev = disk.path();
    const std::string uuid = blkidUuid(dev);
    ASSERT_FALSE(uuid.empty());
    ASSERT_TRUE(disk.failReads());
    grpc::Status s = alone.stage("pvc-x", dev, "xfs");
    EXPECT_GT(disk.failedReads(), 0u);
    ASSERT_TRUE(disk.recover());
    EXPECT_TRUE(contains(alone.driverLog(), "appears to be unformatted")) << alone.driverLog();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL) << s.error_message();
    EXPECT_TRUE(contains(s.error_message(), "format of disk")) << s.error_message();
    EXPECT_TRUE(contains(s.error_message(), "Input/output error")) << s.error_message();
    const std::string now = blkidUuid(dev);
    EXPECT_NE(now, "");
    EXPECT_NE(now, uuid) << "the failed mkfs.xfs left its own superblock";
    grpc::Status again = alone.stage("pvc-x", dev, "xfs");
    EXPECT_FALSE(again.ok()) << "the half-made filesystem does not mount";
    EXPECT_TRUE(contains(again.error_message(), "Structure needs cleaning"))
        << again.error_message();
    EXPECT_FALSE(isMountPoint(alone.stagingPath("pvc-x")));
  }
  MountutilsNode node(dir_, {});
  ASSERT_TRUE(node.start());
  EioDisk& disk = eioVolume("guarded-xfs", 512 * kMiB, "xfs");
  const std::string dev = disk.path();
  const std::string uuid = blkidUuid(dev);
  ASSERT_TRUE(disk.failReads());
  grpc::Status s = node.stage("pvc-x", dev, "xfs");
  ASSERT_TRUE(disk.recover());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "Input/output error")) << s.error_message();
  EXPECT_FALSE(contains(node.driverLog(), "FormatAndMount"));
  EXPECT_EQ(blkidUuid(dev), uuid);
  grpc::Status again = node.stage("pvc-x", dev, "xfs");
  ASSERT_TRUE(again.ok()) << again.error_message();
  EXPECT_TRUE(isMountPoint(node.stagingPath("pvc-x")));
  EXPECT_TRUE(node.unstage("pvc-x").ok());
}

struct ReadErrorRange {
  std::string name;
  uint64_t offset, length;  // length 0: every read fails
};
void PrintTo(const ReadErrorRange& r, std::ostream* os) { *os << r.name; }

class MountutilsEioRangeTest : public MountutilsEioTest,
                               public ::testing::WithParamInterface<ReadErrorRange> {};

// Through stateguard-csi (the gate on the driver's PATH too): the sidecar's probe (libblkid on
// the same block device) gets the EIO, says "unknown", and the stage is refused before the driver
// sees it. Once the device recovers, the same volume stages with its data.
TEST_P(MountutilsEioRangeTest, ReadErrorsAtStageTimeAreRefusedAndTheVolumeStagesAfterRecovery) {
  const ReadErrorRange& range = GetParam();
  MountutilsNode node(dir_, {});
  ASSERT_TRUE(node.start());
  EioDisk& disk = eioVolume("guarded");
  const std::string dev = disk.path();
  const std::string uuid = blkidUuid(dev);

  ASSERT_TRUE(disk.failReads(range.offset, range.length));
  grpc::Status s = node.stage("pvc-eio", dev, "ext4");
  EXPECT_GT(disk.failedReads(), 0u);
  ASSERT_TRUE(disk.recover());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "could not be read")) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "Input/output error")) << s.error_message();
  EXPECT_FALSE(contains(node.driverLog(), "FormatAndMount")) << "the driver never saw the call";
  EXPECT_TRUE(contains(node.auditLog(), "\"device-unknown\"")) << node.auditLog();
  EXPECT_EQ(blkidUuid(dev), uuid);
  EXPECT_EQ(ext4DataFile(dev), "orders\n");

  grpc::Status again = node.stage("pvc-eio", dev, "ext4");  // kubelet's retry
  ASSERT_TRUE(again.ok()) << again.error_message();
  EXPECT_EQ(readText(node.stagingPath("pvc-eio") + "/data.txt"), "orders\n");
  EXPECT_TRUE(node.unstage("pvc-eio").ok());
}

INSTANTIATE_TEST_SUITE_P(Ranges, MountutilsEioRangeTest,
                         ::testing::Values(ReadErrorRange{"every_read", 0, 0},
                                           ReadErrorRange{"first_MiB", 0, kMiB},
                                           ReadErrorRange{"ext4_superblock", 1024, 1024}),
                         [](const ::testing::TestParamInfo<ReadErrorRange>& p) {
                           return p.param.name;
                         });

// The format gate alone (no sidecar): mount-utils' blkid exits 2 on the errors, and the gate,
// run as mkfs.ext4, probes the device itself, gets the same EIO and refuses.
TEST_F(MountutilsEioTest, ReadErrorsAtStageTimeGateAloneRefusesMkfs) {
  MountutilsNode node(dir_, {.sidecar = false, .gate = true});
  ASSERT_TRUE(node.start());
  EioDisk& disk = eioVolume("gate");
  const std::string dev = disk.path();
  const std::string uuid = blkidUuid(dev);
  ASSERT_TRUE(disk.failReads());
  grpc::Status s = node.stage("pvc-g", dev, "ext4");
  ASSERT_TRUE(disk.recover());
  EXPECT_TRUE(contains(node.driverLog(), "appears to be unformatted")) << node.driverLog();
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.error_message(), "stateguard-format-gate refused")) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "cannot be verified as blank")) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "Input/output error")) << s.error_message();
  EXPECT_EQ(blkidUuid(dev), uuid);
  EXPECT_EQ(ext4DataFile(dev), "orders\n");
  grpc::Status again = node.stage("pvc-g", dev, "ext4");
  ASSERT_TRUE(again.ok()) << again.error_message();
  EXPECT_EQ(readText(node.stagingPath("pvc-g") + "/data.txt"), "orders\n");
  EXPECT_TRUE(node.unstage("pvc-g").ok());
}

/// A blkid first on the driver's PATH that turns the device's read errors on, runs the real
/// blkid and turns them off again: the device reads badly only inside the driver's own call,
/// after the sidecar's probe and before mkfs.
std::string eioDuringBlkid(const std::string& dir, const EioDisk& disk) {
  const std::string wrap = dir + "/eio-blkid";
  ::mkdir(wrap.c_str(), 0755);
  writeText(wrap + "/blkid", "#!/bin/sh\necho fail-reads > " + disk.controlPath() +
                                 "\n/usr/sbin/blkid \"$@\"\nrc=$?\necho ok > " +
                                 disk.controlPath() + "\nexit $rc\n");
  ::chmod((wrap + "/blkid").c_str(), 0755);
  return wrap;
}

// The sidecar's probe a moment earlier saw the filesystem, so it lets the stage through; the
// driver's blkid exits 2 on the errors and mkfs runs on the recovered device: a new filesystem.
// The sidecar's check after the call compares with the ledger, which is empty on a first stage:
// it records the new filesystem as the volume's (the gate is what stops this; see below).
TEST_F(MountutilsEioTest, ReadErrorsInsideTheDriversBlkidFormatWithoutTheGate) {
  EioDisk& disk = eioVolume("flicker");
  MountutilsNode node(dir_,
                      {.sidecar = true, .gate = false, .pathPrefix = eioDuringBlkid(dir_, disk)});
  ASSERT_TRUE(node.start());
  const std::string dev = disk.path();
  const std::string uuid = blkidUuid(dev);
  grpc::Status s = node.stage("pvc-f", dev, "ext4");
  EXPECT_GT(disk.failedReads(), 0u);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(contains(node.driverLog(), "Disk successfully formatted")) << node.driverLog();
  const std::string now = blkidUuid(dev);
  EXPECT_NE(now, uuid) << "mount-utils formatted the volume";
  EXPECT_EQ(ext4DataFile(dev), "");
  csi::Ledger ledger(node.ledgerDir());
  auto entry = ledger.load("pvc-f");
  ASSERT_TRUE(entry.ok() && entry.value() && entry.value()->current());
  EXPECT_EQ(entry.value()->current()->uuid, now);
  // Same type, new UUID on a first stage: it could be a clone's regenerated UUID, so it is
  // noted, not quarantined; the note says what the gate would have done.
  EXPECT_TRUE(contains(node.auditLog(), "\"uuid-changed-first-stage\"")) << node.auditLog();
  EXPECT_TRUE(contains(node.auditLog(), "the filesystem's UUID changed from " + uuid))
      << node.auditLog();
  node.unstage("pvc-f");
}

// The same read errors, but the claim asks for xfs (longhorn#14042): mount-utils puts xfs over
// the ext4 it could not see. Even on a first stage, with no history, the sidecar saw ext4 just
// before the driver's call: it quarantines, undoes the stage and tells kubelet.
TEST_F(MountutilsEioTest, ReadErrorsInsideTheDriversBlkidAndAnotherTypeQuarantineOnAFirstStage) {
  if (::access("/usr/sbin/mkfs.xfs", X_OK) != 0) GTEST_SKIP() << "no mkfs.xfs";
  EioDisk& disk = eioVolume("flicker-xfs");
  MountutilsNode node(dir_,
                      {.sidecar = true, .gate = false, .pathPrefix = eioDuringBlkid(dir_, disk)});
  ASSERT_TRUE(node.start());
  const std::string dev = disk.path();
  const std::string uuid = blkidUuid(dev);
  grpc::Status s = node.stage("pvc-x", dev, "xfs");
  EXPECT_GT(disk.failedReads(), 0u);
  EXPECT_TRUE(contains(node.driverLog(), "Disk successfully formatted")) << node.driverLog();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_TRUE(
      contains(s.error_message(), "just before the call it held ext4 filesystem UUID " + uuid))
      << s.error_message();
  EXPECT_FALSE(isMountPoint(node.stagingPath("pvc-x")))
      << "kubelet was told the stage failed, but the new filesystem stayed mounted";
  csi::Ledger ledger(node.ledgerDir());
  auto entry = ledger.load("pvc-x");
  ASSERT_TRUE(entry.ok() && entry.value() && entry.value()->quarantine);
  EXPECT_EQ(entry.value()->quarantine->expected.uuid, uuid);
  EXPECT_EQ(entry.value()->quarantine->seen.type, "xfs");
  // Every later stage is refused until a person clears it.
  grpc::Status again = node.stage("pvc-x", dev, "xfs");
  EXPECT_EQ(again.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(contains(again.error_message(), "quarantined")) << again.error_message();
}

TEST_F(MountutilsEioTest, ReadErrorsInsideTheDriversBlkidAreStoppedByTheFormatGate) {
  EioDisk& disk = eioVolume("flicker");
  MountutilsNode node(dir_,
                      {.sidecar = true, .gate = true, .pathPrefix = eioDuringBlkid(dir_, disk)});
  ASSERT_TRUE(node.start());
  const std::string dev = disk.path();
  const std::string uuid = blkidUuid(dev);
  grpc::Status s = node.stage("pvc-f", dev, "ext4");
  EXPECT_GT(disk.failedReads(), 0u);
  EXPECT_TRUE(contains(node.driverLog(), "appears to be unformatted")) << node.driverLog();
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.error_message(), "stateguard-format-gate refused")) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "the device holds ext4 filesystem UUID " + uuid))
      << s.error_message();
  EXPECT_EQ(blkidUuid(dev), uuid);
  EXPECT_EQ(ext4DataFile(dev), "orders\n");
  EXPECT_FALSE(isMountPoint(node.stagingPath("pvc-f")));
}

}  // namespace
}  // namespace stateguard::testing
