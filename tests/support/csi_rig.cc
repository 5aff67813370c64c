#include "tests/support/csi_rig.h"

#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <regex>
#include <thread>

#include "proto/csi.grpc.pb.h"

namespace stateguard::testing {

CsiRig::CsiRig(std::string dir, CsiRigOptions options)
    : dir_(std::move(dir)), options_(std::move(options)) {
  nodeDir_ = dir_ + "/" + options_.node;
  if (options_.ledgerDir.empty()) options_.ledgerDir = nodeDir_ + "/ledger";
  for (const std::string& d : {dir_ + "/images", dir_ + "/dev", nodeDir_, nodeDir_ + "/hooks"}) {
    ::mkdir(d.c_str(), 0755);
  }
}

CsiRig::~CsiRig() { stop(); }

::testing::AssertionResult CsiRig::start() {
  const std::string driverSock = nodeDir_ + "/driver.sock";
  std::string execPath = "/usr/sbin:/usr/bin:/sbin:/bin";
  if (options_.formatGate) {
    CommandResult install =
        runCommand(binaryPath("stateguard-format-gate"), {"install", nodeDir_ + "/gate"});
    if (install.exitCode != 0) {
      return ::testing::AssertionFailure() << "gate install: " << install.err;
    }
    execPath = nodeDir_ + "/gate:" + execPath;
  }
  std::vector<std::string> args = {"--endpoint",   "unix://" + driverSock,
                                   "--device-dir", dir_ + "/dev",
                                   "--hook-dir",   nodeDir_ + "/hooks",
                                   "--call-log",   nodeDir_ + "/calls.log",
                                   "--exec-path",  execPath,
                                   "--ledger-dir", options_.ledgerDir};
  if (!options_.driverStages) args.push_back("--no-stage");
  if (options_.blkid239) args.push_back("--blkid-2.39");
  driverArgs_ = args;
  if (auto started = startDriver(); !started) return started;
  std::string target = "unix://" + driverSock;
  if (options_.sidecar) {
    const std::string sock = nodeDir_ + "/stateguard.sock";
    std::vector<std::string> sargs = {"--csi-address",
                                      "unix://" + sock,
                                      "--driver-address",
                                      "unix://" + driverSock,
                                      "--ledger-dir",
                                      options_.ledgerDir,
                                      "--device-path-template",
                                      dir_ + "/dev/{volume_id}",
                                      "--device-root",
                                      dir_ + "/dev",
                                      "--node-name",
                                      options_.node,
                                      "--http-endpoint",
                                      "127.0.0.1:0",
                                      "--audit-log",
                                      nodeDir_ + "/audit.log"};
    if (!options_.kubeconfig.empty()) {
      sargs.push_back("--kubeconfig");
      sargs.push_back(options_.kubeconfig);
    }
    sargs.insert(sargs.end(), options_.sidecarArgs.begin(), options_.sidecarArgs.end());
    sidecar_ = std::make_unique<ChildProcess>(binaryPath("stateguard-csi"), sargs, nodeDir_);
    if (!sidecar_->waitForOutput("/metrics on port", std::chrono::seconds(10))) {
      return ::testing::AssertionFailure() << "sidecar did not start: " << sidecar_->stderrText();
    }
    std::smatch m;
    std::string err = sidecar_->stderrText() + sidecar_->stdoutText();
    if (std::regex_search(err, m, std::regex("/metrics on port (\\d+)"))) {
      httpPort_ = std::stoi(m[1]);
    }
    // The sidecar learns the driver's name in the background: wait for it.
    if (!sidecar_->waitForOutput("driver is ", std::chrono::seconds(10))) {
      return ::testing::AssertionFailure()
             << "sidecar never reached the driver: " << sidecar_->stderrText();
    }
    target = "unix://" + sock;
  }
  channel_ = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult CsiRig::startDriver() {
  driver_ = std::make_unique<ChildProcess>(binaryPath("stateguard-test-csi-driver"), driverArgs_,
                                           nodeDir_);
  if (!driver_->waitForOutput("listening", std::chrono::seconds(10))) {
    return ::testing::AssertionFailure() << "driver did not start: " << driver_->stderrText();
  }
  return ::testing::AssertionSuccess();
}

void CsiRig::killDriver() {
  if (!driver_) return;
  ::kill(driver_->pid(), SIGKILL);
  driver_->stop();  // reaps it
  driver_.reset();
}

void CsiRig::stop() {
  channel_.reset();
  if (sidecar_) sidecar_->stop();
  if (driver_) driver_->stop();
}

std::string CsiRig::makeImage(const std::string& name, uint64_t size, const std::string& fs,
                              const std::string& marker) {
  const std::string path = dir_ + "/images/" + name;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return "";
  bool ok = ::ftruncate(fd, static_cast<off_t>(size)) == 0;
  ::close(fd);
  if (!ok) return "";
  if (fs.empty()) return path;
  CommandResult r;
  if (fs == "ext4") {
    std::vector<std::string> args = {"-q", "-F", "-b", "4096"};
    if (!marker.empty()) {
      const std::string content = dir_ + "/images/" + name + ".d";
      ::mkdir(content.c_str(), 0755);
      writeText(content + "/data.txt", marker);
      args.insert(args.end(), {"-d", content});
    }
    args.push_back(path);
    r = runCommand("/usr/sbin/mkfs.ext4", args);
  } else if (fs == "xfs") {
    r = runCommand("/usr/sbin/mkfs.xfs", {"-q", "-f", path});
  } else if (fs == "btrfs") {
    r = runCommand("/usr/sbin/mkfs.btrfs", {"-q", "-f", path});
  }
  return r.exitCode == 0 ? path : "";
}

std::string CsiRig::devicePath(const std::string& volumeId) const {
  return dir_ + "/dev/" + volumeId;
}

void CsiRig::setDevice(const std::string& volumeId, const std::string& target) {
  const std::string link = devicePath(volumeId);
  ::unlink(link.c_str());
  if (!target.empty()) {
    if (::symlink(target.c_str(), link.c_str()) != 0) ADD_FAILURE() << "symlink " << link;
  }
}

void CsiRig::setHook(const std::string& volumeId, const std::string& phase,
                     const std::string& script) {
  writeText(nodeDir_ + "/hooks/" + volumeId + "." + phase, script);
}

grpc::Status CsiRig::stage(const std::string& volumeId, const std::string& fsType, bool block,
                           bool shared) {
  auto stub = ::csi::v1::Node::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  ::csi::v1::NodeStageVolumeRequest req;
  req.set_volume_id(volumeId);
  req.set_staging_target_path(nodeDir_ + "/staging-" +
                              std::to_string(std::hash<std::string>()(volumeId)));
  auto* cap = req.mutable_volume_capability();
  if (block) {
    cap->mutable_block();
  } else {
    cap->mutable_mount()->set_fs_type(fsType);
  }
  cap->mutable_access_mode()->set_mode(
      shared ? ::csi::v1::VolumeCapability::AccessMode::MULTI_NODE_MULTI_WRITER
             : ::csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  ::csi::v1::NodeStageVolumeResponse resp;
  return stub->NodeStageVolume(&ctx, req, &resp);
}

grpc::Status CsiRig::publish(const std::string& volumeId, const std::string& fsType) {
  auto stub = ::csi::v1::Node::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  ::csi::v1::NodePublishVolumeRequest req;
  req.set_volume_id(volumeId);
  req.set_staging_target_path(nodeDir_ + "/staging-" +
                              std::to_string(std::hash<std::string>()(volumeId)));
  req.set_target_path(nodeDir_ + "/publish-" + std::to_string(std::hash<std::string>()(volumeId)));
  req.mutable_volume_capability()->mutable_mount()->set_fs_type(fsType);
  ::csi::v1::NodePublishVolumeResponse resp;
  return stub->NodePublishVolume(&ctx, req, &resp);
}

std::string CsiRig::callLog() const { return readText(nodeDir_ + "/calls.log"); }
std::string CsiRig::auditLog() const { return readText(nodeDir_ + "/audit.log"); }
std::string CsiRig::gateAuditLog() const {
  return readText(options_.ledgerDir + "/format-gate-audit.log");
}

std::string ext4DataFile(const std::string& image, uint64_t superblock) {
  std::vector<std::string> args;
  // -n: the backup group descriptors' checksums are stale once the primary is gone.
  if (superblock > 0) args = {"-n", "-s", std::to_string(superblock), "-b", "4096"};
  args.insert(args.end(), {"-R", "cat /data.txt", image});
  CommandResult r = runCommand("/usr/sbin/debugfs", args);
  return r.exitCode == 0 ? r.out : "";
}

std::string blkidUuid(const std::string& image) {
  CommandResult r = runCommand("/usr/sbin/blkid", {"-p", "-s", "UUID", "-o", "value", image});
  std::string out = r.out;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

namespace {

std::string bytesOf(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

}  // namespace

Answer call(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
            const std::string& body, const std::multimap<std::string, std::string>& metadata,
            std::chrono::milliseconds deadline, std::chrono::milliseconds cancelAfter) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  if (deadline.count() > 0) ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  for (const auto& [k, v] : metadata) ctx.AddMetadata(k, v);
  grpc::Slice slice(body);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(s); });
  auto future = done.get_future();
  if (cancelAfter.count() > 0 && future.wait_for(cancelAfter) == std::future_status::timeout) {
    ctx.TryCancel();
  }
  Answer a;
  a.status = future.get();
  if (a.status.ok()) a.body = bytesOf(response);
  for (const auto& [k, v] : ctx.GetServerInitialMetadata()) {
    a.initial.emplace(std::string(k.data(), k.size()), std::string(v.data(), v.size()));
  }
  for (const auto& [k, v] : ctx.GetServerTrailingMetadata()) {
    a.trailing.emplace(std::string(k.data(), k.size()), std::string(v.data(), v.size()));
  }
  return a;
}

std::string first(const std::multimap<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? "<absent>" : it->second;
}

bool waitFor(const std::function<bool()>& condition, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

}  // namespace stateguard::testing
