// stateguard-csi as a transparent proxy: calls it does not guard reach the driver as the bytes
// kubelet sent (even ones no .proto here describes), with kubelet's metadata and deadline, and
// the driver's answer, metadata, status and error details come back unchanged. Plus /healthz and
// /metrics.

#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <functional>
#include <future>
#include <random>
#include <thread>

#include "proto/csi.grpc.pb.h"
#include "tests/support/csi_rig.h"

// Designated initializers of CsiRigOptions name only what a test changes.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace stateguard::testing {
namespace {

class CsiProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = makeTempDir("sg-proxy");
    rig_ = std::make_unique<CsiRig>(dir_, CsiRigOptions{});
    ASSERT_TRUE(rig_->start());
  }
  void TearDown() override {
    rig_.reset();
    removeTree(dir_);
  }
  std::string dir_;
  std::unique_ptr<CsiRig> rig_;
};

TEST_F(CsiProxyTest, UnknownMethodsAndBytesPassThroughUnchanged) {
  // Not a valid protobuf of anything, and a method no CSI version has: forwarded as is.
  std::mt19937 gen(7);
  std::string body(70000, '\0');
  for (char& c : body) c = static_cast<char>(gen());
  Answer a = call(rig_->channel(), "/csi.v1.Controller/FutureRpc", body, {{"x-trace", "abc"}});
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  EXPECT_EQ(a.body, body);
  EXPECT_EQ(first(a.trailing, "x-method"), "/csi.v1.Controller/FutureRpc");
  EXPECT_EQ(first(a.trailing, "echo-x-trace"), "abc") << "kubelet's metadata reached the driver";
  EXPECT_EQ(first(a.initial, "x-initial"), "from-driver") << "the driver's metadata came back";
  EXPECT_NE(rig_->callLog().find("echo /csi.v1.Controller/FutureRpc"), std::string::npos);
}

TEST_F(CsiProxyTest, DriverErrorsComeBackWithCodeMessageAndDetails) {
  const std::string details = std::string(
      "\x08\x05\x12\x03"
      "abc",
      7);
  Answer a = call(rig_->channel(), "/csi.v1.Node/NodeGetVolumeStats", "x",
                  {{"x-status", "5"}, {"x-details-bin", details}});
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(a.status.error_message(), "failed as asked");
  EXPECT_EQ(a.status.error_details(), details);
  EXPECT_EQ(first(a.trailing, "echo-x-details-bin"), details) << "binary metadata intact";
}

TEST_F(CsiProxyTest, KubeletsDeadlineReachesTheDriver) {
  Answer a = call(rig_->channel(), "/csi.v1.Node/NodeExpandVolume", "y", {},
                  std::chrono::milliseconds(4000));
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  std::string left = first(a.trailing, "x-deadline-ms");
  ASSERT_NE(left, "<absent>") << "the driver saw no deadline";
  EXPECT_GT(std::stol(left), 2000);
  EXPECT_LE(std::stol(left), 4100) << "gRPC rounds deadlines, but this is kubelet's 4 s";
}

TEST_F(CsiProxyTest, TypedCallsWorkThroughTheProxy) {
  auto identity = ::csi::v1::Identity::NewStub(rig_->channel());
  grpc::ClientContext ctx;
  ::csi::v1::GetPluginInfoResponse info;
  ASSERT_TRUE(identity->GetPluginInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.name(), "test.csi.stateguard.io");
  auto node = ::csi::v1::Node::NewStub(rig_->channel());
  grpc::ClientContext ctx2;
  ::csi::v1::NodeGetCapabilitiesResponse caps;
  ASSERT_TRUE(node->NodeGetCapabilities(&ctx2, {}, &caps).ok());
  ASSERT_EQ(caps.capabilities_size(), 1);
}

TEST_F(CsiProxyTest, MalformedGuardedRequestIsRefusedNotCrashed) {
  Answer a =
      call(rig_->channel(), "/csi.v1.Node/NodeStageVolume", std::string("\xff\xff\xff", 3), {});
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(a.status.error_message().find("NodeStageVolumeRequest"), std::string::npos);
  EXPECT_TRUE(rig_->sidecar()->running());
  EXPECT_EQ(rig_->callLog().find("NodeStageVolume"), std::string::npos);
}

TEST_F(CsiProxyTest, HealthzAndMetrics) {
  ASSERT_GT(rig_->httpPort(), 0);
  httplib::Client http("127.0.0.1", rig_->httpPort());
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200) << health->body;

  rig_->setDevice("pvc-m", "");  // missing: refused
  EXPECT_EQ(rig_->stage("pvc-m").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  call(rig_->channel(), "/csi.v1.Node/NodeGetCapabilities", "", {});
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  const std::string& m = metrics->body;
  EXPECT_NE(m.find("csi_sidecar_operations_seconds_count{driver_name=\"test.csi.stateguard.io\","
                   "method_name=\"/csi.v1.Node/NodeStageVolume\",grpc_status_code="
                   "\"FailedPrecondition\"} 1"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("method_name=\"/csi.v1.Node/NodeGetCapabilities\",grpc_status_code=\"OK\"}"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("stateguard_csi_refusals_total{reason=\"device-unknown\"} 1"), std::string::npos)
      << m;
  // Its presence, once the driver's name is known, for alerts comparing guarded nodes with the
  // driver's nodes (manifests/csi-sidecar/README.md, "Injection").
  const std::string info = "stateguard_csi_guard_info{driver=\"test.csi.stateguard.io\",node=\"" +
                           CsiRigOptions{}.node + "\"} 1\n";
  std::string text = m;
  for (int i = 0; i < 50 && text.find(info) == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto again = http.Get("/metrics");
    if (again) text = again->body;
  }
  EXPECT_NE(text.find(info), std::string::npos) << text;

  // The running version, as `stateguard-csi --version` prints it.
  CommandResult v = runCommand(binaryPath("stateguard-csi"), {"--version"});
  ASSERT_EQ(v.exitCode, 0) << v.err;
  ASSERT_EQ(v.out.rfind("stateguard-csi ", 0), 0u) << v.out;
  const std::string version = v.out.substr(15, v.out.find('\n') - 15);
  EXPECT_NE(version.find('.'), std::string::npos) << v.out;
  EXPECT_NE(text.find("stateguard_build_info{version=\"" + version +
                      "\",component=\"stateguard-csi\"} 1\n"),
            std::string::npos)
      << text;
}

TEST(CsiProxyStartup, TheFormatGateAnswersVersionToo) {
  CommandResult csi = runCommand(binaryPath("stateguard-csi"), {"--version"});
  CommandResult gate = runCommand(binaryPath("stateguard-format-gate"), {"--version"});
  EXPECT_EQ(gate.exitCode, 0) << gate.err;
  ASSERT_EQ(csi.out.rfind("stateguard-csi ", 0), 0u) << csi.out;
  EXPECT_EQ(gate.out, "stateguard-format-gate " + csi.out.substr(15)) << gate.out;
}

// ---- issue 14: arguments, readiness, recovery, message size --------------------------------

TEST_F(CsiProxyTest, MissingRequiredArgumentsAreInvalidArgumentNotTheGuardsRefusal) {
  // The device is missing: a request that reached the guard would be refused with 9.
  rig_->setDevice("pvc-args", "");
  auto node = ::csi::v1::Node::NewStub(rig_->channel());
  auto stage = [&](const ::csi::v1::NodeStageVolumeRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ::csi::v1::NodeStageVolumeResponse resp;
    return node->NodeStageVolume(&ctx, req, &resp);
  };
  ::csi::v1::NodeStageVolumeRequest full;
  full.set_volume_id("pvc-args");
  full.set_staging_target_path(dir_ + "/staging");
  full.mutable_volume_capability()->mutable_mount()->set_fs_type("ext4");
  full.mutable_volume_capability()->mutable_access_mode()->set_mode(
      ::csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  ASSERT_EQ(stage(full).error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << "well formed: the guard's refusal";

  auto noCapability = full;
  noCapability.clear_volume_capability();
  grpc::Status s = stage(noCapability);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("without volume_capability"), std::string::npos)
      << s.error_message();
  auto noPath = full;
  noPath.clear_staging_target_path();
  s = stage(noPath);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("staging_target_path"), std::string::npos);
  auto noAccessType = full;
  noAccessType.mutable_volume_capability()->clear_mount();
  EXPECT_EQ(stage(noAccessType).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto noId = full;
  noId.clear_volume_id();
  EXPECT_EQ(stage(noId).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  ::csi::v1::NodePublishVolumeRequest pub;
  pub.set_volume_id("pvc-args");
  pub.set_staging_target_path(dir_ + "/staging");
  pub.mutable_volume_capability()->mutable_mount();
  grpc::ClientContext ctx;
  ::csi::v1::NodePublishVolumeResponse presp;
  s = node->NodePublishVolume(&ctx, pub, &presp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("target_path"), std::string::npos);

  EXPECT_EQ(rig_->callLog().find("NodeStageVolume"), std::string::npos);
  EXPECT_EQ(rig_->callLog().find("NodePublishVolume"), std::string::npos);
}

/// GET /readyz: the status, 0 when the sidecar does not answer.
int readyz(int port) {
  httplib::Client http("127.0.0.1", port);
  http.set_connection_timeout(std::chrono::seconds(2));
  auto r = http.Get("/readyz");
  return r ? r->status : 0;
}

TEST(CsiProxyDriverRestart, ReadinessFollowsTheDriverAndCallsRecoverWithinASecond) {
  std::string dir = makeTempDir("sg-proxy-restart");
  {
    CsiRig rig(dir, {.sidecarArgs = {"--driver-probe-interval", "200ms"}});
    ASSERT_TRUE(rig.start());
    ASSERT_TRUE(waitFor([&] { return readyz(rig.httpPort()) == 200; }, std::chrono::seconds(3)));
    auto caps = [&](std::chrono::milliseconds deadline) {
      return call(rig.channel(), "/csi.v1.Node/NodeGetCapabilities", "", {}, deadline).status;
    };
    ASSERT_TRUE(caps(std::chrono::seconds(5)).ok());

    rig.killDriver();
    EXPECT_TRUE(waitFor([&] { return readyz(rig.httpPort()) == 503; }, std::chrono::seconds(2)))
        << "/readyz still says ready with the driver dead";
    EXPECT_FALSE(caps(std::chrono::milliseconds(300)).ok());
    // Long enough for gRPC's default back-off to have grown past 3 s (1, 1.6, 2.6, 4.2 s).
    std::this_thread::sleep_for(std::chrono::seconds(6));

    ASSERT_TRUE(rig.startDriver());
    auto back = std::chrono::steady_clock::now();
    bool recovered = waitFor([&] { return caps(std::chrono::milliseconds(200)).ok(); },
                             std::chrono::seconds(10));
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - back).count();
    ASSERT_TRUE(recovered);
    EXPECT_LT(seconds, 1.5) << "proxied calls failed for " << seconds
                            << " s after the driver was back";
    EXPECT_TRUE(waitFor([&] { return readyz(rig.httpPort()) == 200; }, std::chrono::seconds(2)));

    // A call made while the driver is away waits for it within kubelet's deadline.
    rig.killDriver();
    std::thread restarter([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      EXPECT_TRUE(rig.startDriver());
    });
    grpc::Status waited = caps(std::chrono::seconds(8));
    restarter.join();
    EXPECT_TRUE(waited.ok()) << "code " << waited.error_code() << ": " << waited.error_message();
  }
  removeTree(dir);
}

TEST_F(CsiProxyTest, OversizedRequestsAreRefusedAndLongIdsShortened) {
  auto node = ::csi::v1::Node::NewStub(rig_->channel());
  ::csi::v1::NodeStageVolumeRequest req;
  req.set_volume_id("pvc-big");
  req.set_staging_target_path(dir_ + "/staging");
  req.mutable_volume_capability()->mutable_mount()->set_fs_type("ext4");
  (*req.mutable_volume_context())["junk"] = std::string(60 << 20, 'x');
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  ::csi::v1::NodeStageVolumeResponse resp;
  grpc::Status s = node->NodeStageVolume(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_LT(procStatusKib(rig_->sidecar()->pid(), "VmHWM") / 1024, 100)
      << "a 60 MiB request was buffered whole";

  // Under the limit, a 3 MiB volume id: refused (no such device), but not echoed whole.
  req.clear_volume_context();
  req.set_volume_id(std::string(3 << 20, 'v'));
  grpc::ClientContext ctx2;
  ctx2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  s = node->NodeStageVolume(&ctx2, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_LT(s.error_message().size(), 4096u);
  EXPECT_NE(s.error_message().find("3145728 bytes, sha256 "), std::string::npos)
      << s.error_message().substr(0, 500);
  std::string audit = rig_->auditLog();
  EXPECT_LT(audit.size(), 16384u) << "an audit line quoted the whole id";
  EXPECT_TRUE(rig_->sidecar()->running());
}

TEST(CsiProxyStartup, BadFlagsAreClearErrors) {
  CommandResult r =
      runCommand(binaryPath("stateguard-csi"),
                 {"--csi-address", "unix:///tmp/x.sock", "--driver-address", "unix:///tmp/y.sock",
                  "--ledger-dir", "/tmp/l", "--device-path-template", "/dev/{nope}"});
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_NE(r.err.find("unknown placeholder {nope}"), std::string::npos) << r.err;
  r = runCommand(binaryPath("stateguard-csi"), {"--csi-address", "unix:///tmp/x.sock"});
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_NE(r.err.find("--driver-address is required"), std::string::npos) << r.err;
  for (auto [flag, value] : {std::pair{"--max-receive-message-size", "4k"},
                             std::pair{"--driver-probe-interval", "0s"}}) {
    r = runCommand(
        binaryPath("stateguard-csi"),
        {"--csi-address", "unix:///tmp/x.sock", "--driver-address", "unix:///tmp/y.sock",
         "--ledger-dir", "/tmp/l", "--device-path-template", "/dev/{volume_id}", flag, value});
    EXPECT_EQ(r.exitCode, 2) << flag;
    EXPECT_NE(r.err.find(flag), std::string::npos) << r.err;
  }
  r = runCommand(binaryPath("stateguard-csi"), {"--help"});
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_NE(r.out.find("--device-path-template"), std::string::npos);
}

}  // namespace
}  // namespace stateguard::testing
