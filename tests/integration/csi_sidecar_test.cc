// The CSI incidents replayed end to end on real filesystem images: kubelet's calls over a unix
// socket (gRPC), stateguard-csi in front of a driver that behaves like mount-utils (blkid, exit 2
// read as "unformatted", the real mkfs through PATH), the format gate on the driver's PATH.
// Each incident runs twice: without the sidecar the driver formats and the data is gone; with it
// the data survives.

#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "csi-sidecar/ledger.h"
#include "csi-sidecar/probe.h"
#include "csi-sidecar/pv_ledger.h"
#include "tests/support/csi_rig.h"
#include "tests/support/test_apiserver.h"
#include "tests/support/tls_material.h"

// Designated initializers of CsiRigOptions name only what a test changes.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace stateguard::testing {
namespace {

using nlohmann::json;
constexpr uint64_t kMiB = 1024 * 1024;
const std::string kMarker = "orders table: 1,024 rows that must survive\n";

class CsiSidecarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* tool : {"/usr/sbin/mkfs.ext4", "/usr/sbin/debugfs", "/usr/sbin/blkid"}) {
      if (::access(tool, X_OK) != 0) GTEST_SKIP() << tool << " is not installed";
    }
    dir_ = makeTempDir("sg-csi");
  }
  void TearDown() override {
    if (!dir_.empty()) removeTree(dir_);
  }

  /// An ext4 volume holding kMarker (256 MiB: backup superblock of group 1 at block 32768).
  std::string dataVolume(CsiRig& rig, const std::string& vol) {
    std::string img = rig.makeImage(vol + ".img", 256 * kMiB, "ext4", kMarker);
    EXPECT_FALSE(img.empty());
    EXPECT_EQ(ext4DataFile(img), kMarker);
    rig.setDevice(vol, img);
    return img;
  }

  std::string dir_;
};

std::vector<json> lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// GET /metrics of the rig's sidecar ("" when it does not answer).
std::string scrape(const CsiRig& rig) {
  httplib::Client http("127.0.0.1", rig.httpPort());
  auto res = http.Get("/metrics");
  return res && res->status == 200 ? res->body : "";
}

// ---- a first stage of a blank volume is not refused -------------------------------------------

TEST_F(CsiSidecarTest, FirstStageOfABlankVolumeFormatsAndRecordsTheIdentity) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  std::string img = rig.makeImage("new.img", 256 * kMiB, "");
  rig.setDevice("pvc-new", img);

  grpc::Status s = rig.stage("pvc-new");
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::string uuid = blkidUuid(img);
  ASSERT_FALSE(uuid.empty()) << "the driver formatted the blank volume";
  EXPECT_TRUE(contains(rig.callLog(), "mkfs pvc-new ext4 exit=0"));
  EXPECT_TRUE(contains(rig.gateAuditLog(), "blank-never-formatted"));

  csi::Ledger ledger(rig.ledgerDir());
  auto entry = ledger.load("pvc-new");
  ASSERT_TRUE(entry.ok() && entry.value()) << (entry.ok() ? "none" : entry.error());
  ASSERT_NE(entry.value()->current(), nullptr);
  EXPECT_EQ(entry.value()->current()->type, "ext4");
  EXPECT_EQ(entry.value()->current()->uuid, uuid);
  EXPECT_EQ(entry.value()->current()->node, "node-a");

  // A second stage (kubelet restart) of the same filesystem passes and formats nothing.
  ASSERT_TRUE(rig.stage("pvc-new").ok());
  EXPECT_EQ(blkidUuid(img), uuid);
  ASSERT_TRUE(rig.publish("pvc-new").ok());
}

// ---- incident: the device is missing for a moment ------------------------------------------

TEST_F(CsiSidecarTest, DeviceMissingBeforeTheProbeWithoutSidecarIsFormatted) {
  CsiRig rig(dir_, {.sidecar = false, .formatGate = false});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-a");
  // udev has not made the link yet when the driver's blkid runs; it is there for mkfs.
  rig.setDevice("pvc-a", "");
  rig.setHook("pvc-a", "before-format", "ln -sf " + img + " " + rig.devicePath("pvc-a"));
  ASSERT_TRUE(rig.stage("pvc-a").ok());
  EXPECT_EQ(ext4DataFile(img), "") << "without stateguard the volume was formatted";
}

TEST_F(CsiSidecarTest, DeviceMissingBeforeTheProbeIsRefusedAndTheRetrySucceeds) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-a");
  rig.setDevice("pvc-a", "");
  rig.setHook("pvc-a", "before-format", "ln -sf " + img + " " + rig.devicePath("pvc-a"));

  grpc::Status s = rig.stage("pvc-a");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(contains(s.error_message(), "pvc-a")) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "could not be read")) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "Nothing was formatted")) << s.error_message();
  EXPECT_FALSE(contains(rig.callLog(), "NodeStageVolume")) << "the driver never saw the call";
  EXPECT_EQ(ext4DataFile(img), kMarker);

  rig.setDevice("pvc-a", img);  // udev caught up; kubelet retries
  s = rig.stage("pvc-a");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(ext4DataFile(img), kMarker);

  auto audit = lines(rig.auditLog());
  ASSERT_GE(audit.size(), 2u);
  EXPECT_EQ(audit[0]["verdict"], "refused");
  EXPECT_EQ(audit[0]["reason"], "device-unknown");
  EXPECT_EQ(audit[0]["volumeId"], "pvc-a");
  EXPECT_EQ(audit[0]["node"], "node-a");
  EXPECT_EQ(audit[0]["probe"]["state"], "unknown");
}

TEST_F(CsiSidecarTest, DeviceVanishingInsideTheDriversCallWithoutSidecarIsFormatted) {
  CsiRig rig(dir_, {.sidecar = false, .formatGate = false});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-b");
  rig.setHook("pvc-b", "before-probe", "rm -f " + rig.devicePath("pvc-b"));
  rig.setHook("pvc-b", "before-format", "ln -sf " + img + " " + rig.devicePath("pvc-b"));
  ASSERT_TRUE(rig.stage("pvc-b").ok());
  EXPECT_EQ(ext4DataFile(img), "");
}

TEST_F(CsiSidecarTest, DeviceVanishingInsideTheDriversCallIsStoppedByTheFormatGate) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-b");
  // The sidecar's probe sees ext4; inside the driver's call the link flickers.
  rig.setHook("pvc-b", "before-probe", "rm -f " + rig.devicePath("pvc-b"));
  rig.setHook("pvc-b", "before-format", "ln -sf " + img + " " + rig.devicePath("pvc-b"));
  grpc::Status s = rig.stage("pvc-b");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.error_message(), "stateguard-format-gate refused")) << s.error_message();
  EXPECT_TRUE(contains(rig.callLog(), "mkfs pvc-b ext4 exit=1"));
  EXPECT_EQ(ext4DataFile(img), kMarker);
  auto gate = lines(rig.gateAuditLog());
  ASSERT_FALSE(gate.empty());
  EXPECT_EQ(gate.back()["verdict"], "refused");
  EXPECT_EQ(gate.back()["reason"], "not-blank");
}

// ---- incident: I/O errors ---------------------------------------------------------------------

TEST_F(CsiSidecarTest, IoErrorWithoutSidecarIsFormatted) {
  CsiRig rig(dir_, {.sidecar = false, .formatGate = false});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-c");
  // /proc/self/mem answers EIO at offset 0: blkid exits 2. Then the device recovers.
  rig.setDevice("pvc-c", "/proc/self/mem");
  rig.setHook("pvc-c", "before-format", "ln -sf " + img + " " + rig.devicePath("pvc-c"));
  ASSERT_TRUE(rig.stage("pvc-c").ok());
  EXPECT_EQ(ext4DataFile(img), "");
}

TEST_F(CsiSidecarTest, IoErrorIsRefused) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-c");
  rig.setDevice("pvc-c", "/proc/self/mem");
  rig.setHook("pvc-c", "before-format", "ln -sf " + img + " " + rig.devicePath("pvc-c"));
  grpc::Status s = rig.stage("pvc-c");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(contains(s.error_message(), "Input/output error")) << s.error_message();
  EXPECT_EQ(ext4DataFile(img), kMarker);
}

// ---- incident: primary superblock zeroed, backups intact ---------------------------------------

void zeroPrimary(const std::string& img) {
  CommandResult r = runCommand("/usr/bin/dd", {"if=/dev/zero", "of=" + img, "bs=4096", "count=1",
                                               "conv=notrunc", "status=none"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
}

TEST_F(CsiSidecarTest, ZeroedPrimarySuperblockWithoutSidecarIsFormatted) {
  CsiRig rig(dir_, {.sidecar = false, .formatGate = false});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-d");
  zeroPrimary(img);
  ASSERT_EQ(ext4DataFile(img, 32768), kMarker) << "recoverable through the backup";
  ASSERT_TRUE(rig.stage("pvc-d").ok());
  EXPECT_NE(ext4DataFile(img, 32768), kMarker) << "mkfs overwrote the backups too";
  EXPECT_NE(ext4DataFile(img), kMarker);
  EXPECT_TRUE(contains(rig.callLog(), "mkfs pvc-d ext4 exit=0"));
}

TEST_F(CsiSidecarTest, ZeroedPrimarySuperblockIsRefusedAndStaysRecoverable) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-d");
  zeroPrimary(img);
  grpc::Status s = rig.stage("pvc-d");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(contains(s.error_message(), "backup superblock")) << s.error_message();
  EXPECT_EQ(ext4DataFile(img, 32768), kMarker);
  auto audit = lines(rig.auditLog());
  ASSERT_FALSE(audit.empty());
  EXPECT_EQ(audit.back()["reason"], "data-evidence");
}

// ---- incident: conflicting signatures (util-linux >= 2.39 blkid exits 2) ---------------------

std::string ambivalentImage(CsiRig& rig, const std::string& vol) {
  std::string xfs = rig.makeImage(vol + "-xfs.img", 512 * kMiB, "xfs");  // xfs: >= 300 MB
  std::string img = rig.makeImage(vol + ".img", 256 * kMiB, "ext4", kMarker);
  EXPECT_FALSE(xfs.empty());
  CommandResult r = runCommand("/usr/bin/dd", {"if=" + xfs, "of=" + img, "bs=512", "count=1",
                                               "conv=notrunc", "status=none"});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  rig.setDevice(vol, img);
  return img;
}

TEST_F(CsiSidecarTest, ConflictingSignaturesWithoutSidecarAreFormatted) {
  if (::access("/usr/sbin/mkfs.xfs", X_OK) != 0) GTEST_SKIP() << "no mkfs.xfs";
  CsiRig rig(dir_, {.sidecar = false, .formatGate = false, .blkid239 = true});
  ASSERT_TRUE(rig.start());
  std::string img = ambivalentImage(rig, "pvc-e");
  ASSERT_TRUE(rig.stage("pvc-e").ok());
  EXPECT_EQ(ext4DataFile(img), "");
}

TEST_F(CsiSidecarTest, ConflictingSignaturesAreRefused) {
  if (::access("/usr/sbin/mkfs.xfs", X_OK) != 0) GTEST_SKIP() << "no mkfs.xfs";
  CsiRig rig(dir_, {.blkid239 = true});
  ASSERT_TRUE(rig.start());
  std::string img = ambivalentImage(rig, "pvc-e");
  grpc::Status s = rig.stage("pvc-e");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(contains(s.error_message(), "conflicting signatures")) << s.error_message();
  EXPECT_EQ(ext4DataFile(img), kMarker);
}

// ---- incident: a retried stage after the volume was staged once --------------------------------

TEST_F(CsiSidecarTest, RetriedStageOntoABlankReadingDeviceWithoutSidecarGivesAnEmptyFilesystem) {
  CsiRig rig(dir_, {.sidecar = false, .formatGate = false});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-f");
  ASSERT_TRUE(rig.stage("pvc-f").ok());
  // The engine re-creates the device from an empty replica for a moment: it reads as zeros.
  std::string zeros = rig.makeImage("pvc-f-degraded.img", 256 * kMiB, "");
  rig.setDevice("pvc-f", zeros);
  ASSERT_TRUE(rig.stage("pvc-f").ok());
  EXPECT_FALSE(blkidUuid(zeros).empty()) << "the driver formatted what it was given";
  EXPECT_EQ(ext4DataFile(zeros), "") << "the application would start on an empty filesystem";
}

TEST_F(CsiSidecarTest, RetriedStageOntoABlankReadingDeviceIsRefusedByTheLedger) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-f");
  const std::string uuid = blkidUuid(img);
  ASSERT_TRUE(rig.stage("pvc-f").ok());
  std::string zeros = rig.makeImage("pvc-f-degraded.img", 256 * kMiB, "");
  rig.setDevice("pvc-f", zeros);
  grpc::Status s = rig.stage("pvc-f");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(contains(s.error_message(), "the ledger says this volume held ext4 UUID " + uuid))
      << s.error_message();
  EXPECT_EQ(blkidUuid(zeros), "") << "nothing was formatted";
}

// ---- after the stage: another filesystem appeared: quarantine ----------------------------------

TEST_F(CsiSidecarTest, AnotherFilesystemAfterTheStageQuarantinesTheVolume) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-g");
  ASSERT_TRUE(rig.stage("pvc-g").ok());
  // The driver attaches another device: a different ext4.
  std::string other = rig.makeImage("pvc-g-other.img", 256 * kMiB, "ext4");
  rig.setDevice("pvc-g", other);
  grpc::Status s = rig.stage("pvc-g");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(contains(s.error_message(), "quarantined")) << s.error_message();
  // kubelet takes FAILED_PRECONDITION as final and never unstages: the sidecar undid the
  // driver's stage itself, so the fresh filesystem is not left mounted (issue 14).
  EXPECT_TRUE(contains(rig.callLog(), "NodeUnstageVolume pvc-g")) << rig.callLog();
  EXPECT_TRUE(contains(s.error_message(), "was undone (NodeUnstageVolume)")) << s.error_message();
  bool undoAudited = false;
  for (const json& line : lines(rig.auditLog())) {
    if (line["verdict"] == "quarantined") {
      undoAudited = line["undo"]["done"] == true && line["undo"]["call"] == "NodeUnstageVolume";
    }
  }
  EXPECT_TRUE(undoAudited) << rig.auditLog();

  s = rig.publish("pvc-g");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(contains(s.error_message(), "clear-quarantine")) << s.error_message();
  EXPECT_FALSE(contains(rig.callLog(), "NodePublishVolume pvc-g"));
  // Even the right device again is refused until a person clears the quarantine.
  rig.setDevice("pvc-g", img);
  EXPECT_EQ(rig.stage("pvc-g").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  // The node's quarantine is a gauge and a series naming the volume (for the alert
  // StateguardCSIVolumeQuarantined), read from the ledger at each scrape.
  std::string m = scrape(rig);
  EXPECT_TRUE(contains(m, "\nstateguard_csi_quarantined_volumes 1\n")) << m;
  EXPECT_TRUE(contains(m, "\nstateguard_csi_volume_quarantined{volume_id=\"pvc-g\",pv=\"\"} 1\n"))
      << m;
  EXPECT_TRUE(contains(m, "\nstateguard_csi_ledger_read_errors 0\n")) << m;

  // The person at the terminal: list shows it, clearing needs a reason and is audited.
  const std::string ctl = binaryPath("stateguardctl");
  CommandResult r = runCommand(ctl, {"csi", "ledger", "list", "--ledger-dir", rig.ledgerDir()});
  EXPECT_EQ(r.exitCode, 1) << r.err;
  EXPECT_TRUE(contains(r.out, "pvc-g")) << r.out;
  EXPECT_TRUE(contains(r.out, "QUARANTINED")) << r.out;
  r = runCommand(ctl, {"csi", "ledger", "clear-quarantine", "--volume", "pvc-g", "--ledger-dir",
                       rig.ledgerDir()});
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_TRUE(contains(r.err, "--reason")) << r.err;
  r = runCommand(ctl, {"csi", "ledger", "clear-quarantine", "--volume", "pvc-g", "--ledger-dir",
                       rig.ledgerDir(), "--reason", "data copied back from replica 2",
                       "--audit-log", dir_ + "/ctl-audit.log"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto audit = lines(readText(dir_ + "/ctl-audit.log"));
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0]["action"], "csi-ledger-clear-quarantine");
  EXPECT_EQ(audit[0]["reason"], "data copied back from replica 2");
  EXPECT_TRUE(audit[0]["before"]["node"].contains("quarantine"));
  // Cleared: the next scrape says so, without a restart.
  m = scrape(rig);
  EXPECT_TRUE(contains(m, "\nstateguard_csi_quarantined_volumes 0\n")) << m;
  EXPECT_FALSE(contains(m, "stateguard_csi_volume_quarantined{")) << m;
  // A ledger file that cannot be read is counted, not taken for "no quarantine".
  writeText(rig.ledgerDir() + "/vol-pvc-torn.json", "{\"volumeId\":");
  m = scrape(rig);
  EXPECT_TRUE(contains(m, "\nstateguard_csi_ledger_read_errors 1\n")) << m;
  EXPECT_TRUE(contains(m, "\nstateguard_csi_quarantined_volumes 0\n")) << m;
  ::unlink((rig.ledgerDir() + "/vol-pvc-torn.json").c_str());
  // The filesystem now on the volume is the one the person accepted: it stages and publishes.
  rig.setDevice("pvc-g", other);
  grpc::Status staged = rig.stage("pvc-g");
  EXPECT_TRUE(staged.ok()) << staged.error_message();
  grpc::Status published = rig.publish("pvc-g");
  EXPECT_TRUE(published.ok()) << published.error_message();
}

TEST_F(CsiSidecarTest, ForgettingAVolumeLetsABlankDeviceBeFormattedOnPurpose) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-h");
  ASSERT_TRUE(rig.stage("pvc-h").ok());
  std::string blank = rig.makeImage("pvc-h-new.img", 256 * kMiB, "");
  rig.setDevice("pvc-h", blank);
  ASSERT_EQ(rig.stage("pvc-h").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  CommandResult r = runCommand(
      binaryPath("stateguardctl"),
      {"csi", "ledger", "forget", "--volume", "pvc-h", "--ledger-dir", rig.ledgerDir(), "--reason",
       "volume recreated empty on purpose", "--audit-log", dir_ + "/ctl-audit.log"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  grpc::Status s = rig.stage("pvc-h");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(blkidUuid(blank).empty()) << "formatted, as the person asked";
  EXPECT_EQ(ext4DataFile(img), kMarker) << "the old image was never touched";
}

// ---- the volume moves to another node: the PV annotation carries the ledger ------------------

TEST_F(CsiSidecarTest, LedgerFollowsTheVolumeToAnotherNodeThroughThePvAnnotation) {
  auto tls = makeTlsMaterial(dir_ + "/api");
  ASSERT_TRUE(tls.ok()) << tls.error();
  TestApiServer api(tls.value());
  ASSERT_TRUE(api.start().ok());
  ASSERT_TRUE(writeKubeconfig(dir_ + "/kubeconfig", api.kubeConfig()).ok());
  api.add("PersistentVolume",
          {{"metadata", {{"name", "pvc-1234"}}},
           {"spec",
            {{"csi", {{"driver", "test.csi.stateguard.io"}, {"volumeHandle", "vol-h"}}},
             {"persistentVolumeReclaimPolicy", "Retain"}}},
           {"status", {{"phase", "Bound"}}}});

  std::string img;
  std::string uuid;
  {
    CsiRig nodeA(dir_, {.node = "node-a", .kubeconfig = dir_ + "/kubeconfig"});
    ASSERT_TRUE(nodeA.start());
    img = nodeA.makeImage("vol-h.img", 256 * kMiB, "");
    nodeA.setDevice("vol-h", img);
    grpc::Status s;
    for (int i = 0; i < 50; ++i) {  // until the sidecar's PV cache has synced
      s = nodeA.stage("vol-h");
      if (s.ok() || s.error_message().find("has not synced") == std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(s.ok()) << s.error_message();
    uuid = blkidUuid(img);
  }
  json pv = api.object("PersistentVolume", "", "pvc-1234");
  auto entry = csi::entryFromPv(pv);
  ASSERT_TRUE(entry.ok() && entry.value()) << (entry.ok() ? "no annotation" : entry.error());
  ASSERT_NE(entry.value()->current(), nullptr);
  EXPECT_EQ(entry.value()->current()->uuid, uuid);
  EXPECT_EQ(entry.value()->current()->node, "node-a");
  EXPECT_EQ(entry.value()->pvName, "pvc-1234");

  // On node-b (its own, empty ledger) the device reads blank for a moment.
  CsiRig nodeB(dir_, {.node = "node-b", .kubeconfig = dir_ + "/kubeconfig"});
  ASSERT_TRUE(nodeB.start());
  std::string zeros = nodeB.makeImage("vol-h-b.img", 256 * kMiB, "");
  nodeB.setDevice("vol-h", zeros);
  grpc::Status s;
  for (int i = 0; i < 50; ++i) {
    s = nodeB.stage("vol-h");
    if (s.error_message().find("has not synced") == std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(contains(s.error_message(), "PersistentVolume pvc-1234")) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "node-a")) << s.error_message();
  EXPECT_EQ(blkidUuid(zeros), "");
  EXPECT_GE(api.patchRequests(), 1u);
}

// ---- bad input ---------------------------------------------------------------------------------

TEST_F(CsiSidecarTest, VolumeIdWithPathCharactersIsRefused) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  for (const std::string& id : std::vector<std::string>{"../etc", "a/../../b", "x\ny"}) {
    grpc::Status s = rig.stage(id);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << id;
    EXPECT_FALSE(s.error_message().empty());
  }
  EXPECT_FALSE(contains(rig.callLog(), "NodeStageVolume"));
  EXPECT_TRUE(rig.sidecar()->running());
}

// ---- incident: an encrypted volume reads all zeros for a moment (longhorn#13668) -------------

TEST_F(CsiSidecarTest, LuksVolumeReadingZerosForAMomentIsRefusedByTheLedgerAndTheGate) {
  const std::string cryptsetup = "/usr/sbin/cryptsetup";
  if (::access(cryptsetup.c_str(), X_OK) != 0) {
    GTEST_SKIP() << "cryptsetup is not installed (scripts/install-deps.sh installs it)";
  }
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  const std::string key = dir_ + "/key";
  writeText(key, "not-a-secret");
  std::string img = rig.makeImage("pvc-luks.img", 64 * kMiB, "");
  CommandResult f =
      runCommand(cryptsetup, {"luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
                              "--pbkdf-force-iterations", "1000", "--key-file", key, img});
  ASSERT_EQ(f.exitCode, 0) << f.err;
  const std::string uuid = blkidUuid(img);
  ASSERT_FALSE(uuid.empty());
  rig.setDevice("pvc-luks", img);
  grpc::Status s = rig.stage("pvc-luks");
  ASSERT_TRUE(s.ok()) << s.error_message();
  csi::Ledger ledger(rig.ledgerDir());
  auto entry = ledger.load("pvc-luks");
  ASSERT_TRUE(entry.ok() && entry.value() && entry.value()->current());
  EXPECT_EQ(entry.value()->current()->type, "crypto_LUKS");

  // The engine is degraded: the volume's device reads all zeros (same size).
  std::string zeros = rig.makeImage("pvc-luks-zeros.img", 64 * kMiB, "");
  rig.setDevice("pvc-luks", zeros);
  s = rig.stage("pvc-luks");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "crypto_LUKS UUID " + uuid)) << s.error_message();
  // What the driver ran next in the incident, `cryptsetup luksFormat`, meets the gate.
  const std::string gate = dir_ + "/node-a/gate";
  CommandResult again =
      runCommand("/usr/bin/env", {"PATH=" + gate + ":/usr/sbin:/usr/bin:/sbin:/bin",
                                  "STATEGUARD_LEDGER_DIR=" + rig.ledgerDir(), "cryptsetup",
                                  "luksFormat", "--batch-mode", "--type", "luks2", "--key-file",
                                  key, rig.devicePath("pvc-luks")});
  EXPECT_EQ(again.exitCode, 1) << again.out << again.err;
  EXPECT_TRUE(contains(again.err, "refused")) << again.err;
  EXPECT_EQ(blkidUuid(zeros), "") << "nothing was written to the volume";

  // The engine recovers: the same LUKS volume stages again.
  rig.setDevice("pvc-luks", img);
  s = rig.stage("pvc-luks");
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(blkidUuid(img), uuid);
}

TEST_F(CsiSidecarTest, RawBlockVolumesAreNotProbed) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  rig.setDevice("pvc-raw", "/proc/self/mem");  // unreadable, but a block volume is never formatted
  grpc::Status s = rig.stage("pvc-raw", "", /*block=*/true);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// ---- the same incidents on every filesystem mount-utils formats -------------------------------

struct FsCase {
  std::string fs;
  uint64_t size;
  uint64_t primaryOffset;  ///< where its primary superblock lies
  uint64_t primaryBytes;
};

class CsiFilesystemTest : public CsiSidecarTest, public ::testing::WithParamInterface<FsCase> {
 protected:
  void SetUp() override {
    CsiSidecarTest::SetUp();
    if (::access(("/usr/sbin/mkfs." + GetParam().fs).c_str(), X_OK) != 0) {
      GTEST_SKIP() << "no mkfs." << GetParam().fs;
    }
  }
  /// A volume with a real filesystem; returns the image and its UUID.
  std::pair<std::string, std::string> volume(CsiRig& rig, const std::string& vol) {
    std::string img = rig.makeImage(vol + ".img", GetParam().size, GetParam().fs);
    EXPECT_FALSE(img.empty());
    rig.setDevice(vol, img);
    return {img, blkidUuid(img)};
  }
  void zeroPrimary(const std::string& img) {
    CommandResult r =
        runCommand("/usr/bin/dd", {"if=/dev/zero", "of=" + img, "bs=512",
                                   "seek=" + std::to_string(GetParam().primaryOffset / 512),
                                   "count=" + std::to_string(GetParam().primaryBytes / 512),
                                   "conv=notrunc", "status=none"});
    ASSERT_EQ(r.exitCode, 0) << r.err;
    ASSERT_EQ(blkidUuid(img), "") << "blkid no longer sees the filesystem";
  }
  /// The UUIDs of the traces the probe finds (backup superblocks) or of the signature.
  static std::vector<std::string> tracesOf(const std::string& img) {
    csi::ProbeResult r = csi::probeDevice(img);
    std::vector<std::string> out;
    if (!r.uuid.empty()) out.push_back(r.uuid);
    for (const auto& e : r.evidence) out.push_back(e.uuid);
    return out;
  }
  static bool hasTrace(const std::string& img, const std::string& uuid) {
    auto t = tracesOf(img);
    return std::find(t.begin(), t.end(), uuid) != t.end();
  }
};

TEST_P(CsiFilesystemTest, ZeroedPrimaryWithoutSidecarIsFormatted) {
  CsiRig rig(dir_, {.sidecar = false, .formatGate = false});
  ASSERT_TRUE(rig.start());
  auto [img, uuid] = volume(rig, "pvc-z");
  zeroPrimary(img);
  ASSERT_TRUE(hasTrace(img, uuid)) << "the backups still name the filesystem";
  grpc::Status s = rig.stage("pvc-z", GetParam().fs);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_NE(blkidUuid(img), "");
  EXPECT_NE(blkidUuid(img), uuid);
  EXPECT_FALSE(hasTrace(img, uuid)) << "mkfs overwrote what could have recovered it";
}

TEST_P(CsiFilesystemTest, ZeroedPrimaryIsRefusedAndTheBackupsSurvive) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  auto [img, uuid] = volume(rig, "pvc-z");
  zeroPrimary(img);
  grpc::Status s = rig.stage("pvc-z", GetParam().fs);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), uuid)) << s.error_message();
  EXPECT_EQ(blkidUuid(img), "") << "nothing was formatted";
  EXPECT_TRUE(hasTrace(img, uuid));
}

TEST_P(CsiFilesystemTest, FlickerInsideTheDriversCallWithoutGateIsFormatted) {
  CsiRig rig(dir_, {.sidecar = false, .formatGate = false});
  ASSERT_TRUE(rig.start());
  auto [img, uuid] = volume(rig, "pvc-y");
  rig.setHook("pvc-y", "before-probe", "rm -f " + rig.devicePath("pvc-y"));
  rig.setHook("pvc-y", "before-format", "ln -sf " + img + " " + rig.devicePath("pvc-y"));
  grpc::Status s = rig.stage("pvc-y", GetParam().fs);
  if (GetParam().fs == "btrfs") {
    // mount-utils passes mkfs.btrfs no -f, and mkfs.btrfs refuses a device that holds a
    // filesystem: btrfs survives this one by its own check (not the zeroed primary above).
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(blkidUuid(img), uuid);
    return;
  }
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_NE(blkidUuid(img), uuid);
}

TEST_P(CsiFilesystemTest, FlickerInsideTheDriversCallIsStoppedByTheGate) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  auto [img, uuid] = volume(rig, "pvc-y");
  rig.setHook("pvc-y", "before-probe", "rm -f " + rig.devicePath("pvc-y"));
  rig.setHook("pvc-y", "before-format", "ln -sf " + img + " " + rig.devicePath("pvc-y"));
  grpc::Status s = rig.stage("pvc-y", GetParam().fs);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(
      contains(s.error_message(), "stateguard-format-gate refused `mkfs." + GetParam().fs + "`"))
      << s.error_message();
  EXPECT_EQ(blkidUuid(img), uuid);
}

INSTANTIATE_TEST_SUITE_P(
    Filesystems, CsiFilesystemTest,
    ::testing::Values(FsCase{"ext4", 256 * kMiB, 0, 4096},
                      FsCase{"xfs", 512 * kMiB, 0, 512},  // mkfs.xfs wants >= 300 MB
                      FsCase{"btrfs", 256 * kMiB, 64 * 1024, 4096}),
    [](const ::testing::TestParamInfo<FsCase>& param) { return param.param.fs; });

TEST_F(CsiSidecarTest, DriverWithoutStagingIsGuardedAtPublish) {
  CsiRig rig(dir_, {.driverStages = false});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-p");
  zeroPrimary(img);
  grpc::Status s = rig.publish("pvc-p");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "NodePublishVolume")) << s.error_message();
  EXPECT_FALSE(contains(rig.callLog(), "NodePublishVolume pvc-p"));
  EXPECT_EQ(ext4DataFile(img, 32768), kMarker);

  // A blank volume is formatted at its first publish and recorded.
  std::string blank = rig.makeImage("pvc-q.img", 256 * kMiB, "");
  rig.setDevice("pvc-q", blank);
  s = rig.publish("pvc-q");
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto entry = csi::Ledger(rig.ledgerDir()).load("pvc-q");
  ASSERT_TRUE(entry.ok() && entry.value() && entry.value()->current());
  EXPECT_EQ(entry.value()->current()->uuid, blkidUuid(blank));

  // Another filesystem at a later publish: quarantined, and the driver's publish undone
  // (NodeUnpublishVolume), as a stage is undone with NodeUnstageVolume.
  std::string other = rig.makeImage("pvc-q-other.img", 256 * kMiB, "ext4");
  rig.setDevice("pvc-q", other);
  s = rig.publish("pvc-q");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_TRUE(contains(s.error_message(), "was undone (NodeUnpublishVolume)")) << s.error_message();
  EXPECT_TRUE(contains(rig.callLog(), "NodeUnpublishVolume pvc-q")) << rig.callLog();
}

TEST_F(CsiSidecarTest, ConcurrentStageOfTheSameVolumeIsAbortedNotInterleaved) {
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  std::string img = dataVolume(rig, "pvc-c1");
  std::string other = dataVolume(rig, "pvc-c2");
  // The driver takes a while inside the first stage; kubelet's retry arrives meanwhile.
  rig.setHook("pvc-c1", "before-probe", "sleep 1");
  grpc::Status first;
  std::thread slow([&] { first = rig.stage("pvc-c1"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  grpc::Status second = rig.stage("pvc-c1");
  EXPECT_EQ(second.error_code(), grpc::StatusCode::ABORTED) << second.error_message();
  grpc::Status unrelated = rig.stage("pvc-c2");  // another volume is not held up
  EXPECT_TRUE(unrelated.ok()) << unrelated.error_message();
  slow.join();
  EXPECT_TRUE(first.ok()) << first.error_message();
  EXPECT_TRUE(rig.stage("pvc-c1").ok()) << "free again once the first call is done";
  EXPECT_EQ(ext4DataFile(img), kMarker);
  EXPECT_EQ(ext4DataFile(other), kMarker);
}

TEST_F(CsiSidecarTest, SharedAccessVolumesHaveNoLocalDeviceToGuard) {
  // Longhorn's RWX volumes are NFS exports: no /dev/longhorn/<volume> on the consuming node.
  CsiRig rig(dir_, {});
  ASSERT_TRUE(rig.start());
  rig.setDevice("pvc-rwx", "");
  grpc::Status s = rig.stage("pvc-rwx", "ext4", /*block=*/false, /*shared=*/true);
  EXPECT_NE(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_NE(rig.auditLog().find("multi-node-access"), std::string::npos);
}

}  // namespace
}  // namespace stateguard::testing
