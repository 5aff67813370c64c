// stateguard-csi's HTTP/2 front (csi-sidecar/h2_front.h): calls the guard does not judge are
// relayed to the driver frame by frame, guarded ones still get the guard's answer. Each case
// runs with --forwarding h2 (the front) and, where the behaviour is the same, with
// --forwarding grpc (every call through the grpc++ proxy), so both stay interchangeable.

#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <functional>
#include <future>
#include <iostream>
#include <random>
#include <regex>
#include <thread>

#include "proto/csi.grpc.pb.h"
#include "tests/support/csi_rig.h"
#include "tests/support/h2_frames.h"

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace stateguard::testing {
namespace {

/// Sends the batches `next()` gives, each whole (frames are never split), until the front closes
/// the connection (a send fails other than for a full buffer), `next()` gives nothing or `limit`
/// passes. Whether the front closed it; `sent` counts the bytes it took.
bool floodUntilClosed(int fd, const std::function<std::string()>& next, std::chrono::seconds limit,
                      size_t& sent) {
  timeval tv{0, 200 * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    const std::string batch = next();
    if (batch.empty()) return false;
    for (size_t at = 0; at < batch.size();) {
      ssize_t n = ::send(fd, batch.data() + at, batch.size() - at, MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
      if (n > 0) {
        at += static_cast<size_t>(n);
        sent += static_cast<size_t>(n);
      }
      if (std::chrono::steady_clock::now() >= until) return false;
    }
  }
  return false;
}

class CsiFrontTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = makeTempDir("sg-front");
    rig_ =
        std::make_unique<CsiRig>(dir_, CsiRigOptions{.sidecarArgs = {"--forwarding", GetParam()}});
    ASSERT_TRUE(rig_->start());
  }
  void TearDown() override {
    rig_.reset();
    removeTree(dir_);
  }
  bool front() const { return GetParam() == "h2"; }
  std::string dir_;
  std::unique_ptr<CsiRig> rig_;
};

TEST_P(CsiFrontTest, ForwardedCallKeepsMetadataDeadlineAndBytes) {
  std::mt19937 gen(11);
  std::string body(200000, '\0');  // several DATA frames and window updates each way
  for (char& c : body) c = static_cast<char>(gen());
  const std::string binary("\x00\x01\xfe\xff", 4);
  Answer a = call(rig_->channel(), "/csi.v1.Node/NodeGetVolumeStats", body,
                  {{"x-trace", "abc"}, {"x-blob-bin", binary}, {"x-empty", ""}},
                  std::chrono::milliseconds(4000));
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  EXPECT_EQ(a.body, body);
  EXPECT_EQ(first(a.trailing, "echo-x-trace"), "abc");
  EXPECT_EQ(first(a.trailing, "echo-x-blob-bin"), binary);
  EXPECT_EQ(first(a.trailing, "echo-x-empty"), "");
  EXPECT_EQ(first(a.initial, "x-initial"), "from-driver");
  const std::string left = first(a.trailing, "x-deadline-ms");
  ASSERT_NE(left, "<absent>") << "the driver saw no deadline";
  EXPECT_GT(std::stol(left), 3000);
  EXPECT_LE(std::stol(left), 4100);
}

TEST_P(CsiFrontTest, UnknownMethodIsForwardedWithTheDriversError) {
  Answer a = call(rig_->channel(), "/csi.v9.Future/Rpc", "q",
                  {{"x-status", "9"}, {"x-details-bin", std::string("\x08\x09", 2)}});
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(a.status.error_message(), "failed as asked");
  EXPECT_EQ(a.status.error_details(), std::string("\x08\x09", 2));
  EXPECT_NE(rig_->callLog().find("echo /csi.v9.Future/Rpc"), std::string::npos);

  // Messages as drivers write them (mount-utils quotes mkfs output): spaces at either end,
  // newlines, non-ASCII; gRPC leaves spaces unencoded, so the relay must accept them.
  const std::string message = " mkfs failed:\nOutput: gr\xc3\xbc\xc3\x9f ";
  a = call(rig_->channel(), "/csi.v9.Future/Rpc", "q",
           {{"x-status", "13"}, {"x-message-bin", message}});
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(a.status.error_message(), message);
}

TEST_P(CsiFrontTest, ClientCancelReachesTheDriver) {
  if (!front()) {
    // The grpc++ proxy never asks to hear of a cancelled call (no AsyncNotifyWhenDone): the
    // driver's call runs to its end.
    GTEST_SKIP() << "only the front relays a cancel";
  }
  // No deadline: only the RST_STREAM crossing the proxy can end the driver's call early.
  Answer a = call(rig_->channel(), "/csi.v1.Node/SlowCall", "s", {{"x-sleep-ms", "20000"}},
                  std::chrono::milliseconds(0), std::chrono::milliseconds(300));
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(waitFor(
      [&] { return rig_->callLog().find("cancelled /csi.v1.Node/SlowCall") != std::string::npos; },
      std::chrono::seconds(3)))
      << rig_->callLog();
  // The connection is fine afterwards.
  EXPECT_TRUE(call(rig_->channel(), "/csi.v1.Node/NodeGetCapabilities", "", {}).status.ok());
}

TEST_P(CsiFrontTest, GuardedCallsGetTheGuardsAnswer) {
  rig_->setDevice("pvc-gone", "");  // no device: refused by the guard, never reaches the driver
  grpc::Status s = rig_->stage("pvc-gone");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("stateguard"), std::string::npos) << s.error_message();
  EXPECT_EQ(rig_->callLog().find("NodeStageVolume pvc-gone"), std::string::npos);
  EXPECT_NE(rig_->auditLog().find("pvc-gone"), std::string::npos);

  // A blank device is formatted and recorded: the guard's whole path, through the front.
  const std::string image = rig_->makeImage("pvc-ok.img", 64 << 20, "");
  ASSERT_FALSE(image.empty());
  rig_->setDevice("pvc-ok", image);
  s = rig_->stage("pvc-ok");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_NE(rig_->callLog().find("NodeStageVolume pvc-ok"), std::string::npos);
  EXPECT_FALSE(blkidUuid(image).empty());

  // The guard's own checks: a stage without a volume id.
  auto node = ::csi::v1::Node::NewStub(rig_->channel());
  grpc::ClientContext ctx;
  ::csi::v1::NodeStageVolumeRequest req;
  req.set_staging_target_path(dir_ + "/staging");
  ::csi::v1::NodeStageVolumeResponse resp;
  s = node->NodeStageVolume(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("volume_id"), std::string::npos) << s.error_message();

  // Both kinds are counted as before.
  httplib::Client http("127.0.0.1", rig_->httpPort());
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("method_name=\"/csi.v1.Node/NodeStageVolume\",grpc_status_code="
                               "\"FailedPrecondition\"} 1"),
            std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find("method_name=\"/csi.v1.Node/NodeStageVolume\",grpc_status_code="
                               "\"OK\"} 1"),
            std::string::npos)
      << metrics->body;
}

TEST_P(CsiFrontTest, DriverGoneIsUnavailableAndCallsRecover) {
  ASSERT_TRUE(call(rig_->channel(), "/csi.v1.Node/NodeGetCapabilities", "", {}).status.ok());
  // A call in flight when the driver dies.
  std::future<Answer> inFlight = std::async(std::launch::async, [&] {
    return call(rig_->channel(), "/csi.v1.Node/SlowCall", "s", {{"x-sleep-ms", "20000"}},
                std::chrono::milliseconds(0));
  });
  ASSERT_TRUE(waitFor(
      [&] { return rig_->callLog().find("echo /csi.v1.Node/SlowCall") != std::string::npos; },
      std::chrono::seconds(3)));
  rig_->killDriver();
  Answer dropped = inFlight.get();
  EXPECT_EQ(dropped.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << dropped.status.error_message();

  // Without a deadline a call fails at once, naming the driver's socket.
  auto started = std::chrono::steady_clock::now();
  Answer down = call(rig_->channel(), "/csi.v1.Node/NodeGetCapabilities", "", {},
                     std::chrono::milliseconds(0));
  EXPECT_EQ(down.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  if (front()) {
    EXPECT_NE(down.status.error_message().find("driver.sock"), std::string::npos)
        << down.status.error_message();
  }

  ASSERT_TRUE(rig_->startDriver());
  auto back = std::chrono::steady_clock::now();
  EXPECT_TRUE(waitFor(
      [&] {
        return call(rig_->channel(), "/csi.v1.Node/NodeGetCapabilities", "", {},
                    std::chrono::milliseconds(200))
            .status.ok();
      },
      std::chrono::seconds(5)));
  EXPECT_LT(std::chrono::steady_clock::now() - back, std::chrono::milliseconds(1500));
}

INSTANTIATE_TEST_SUITE_P(Forwarding, CsiFrontTest, ::testing::Values("h2", "grpc"),
                         [](const auto& p) { return p.param; });

/// The front alone: what it holds of a large forwarded message is bounded by the windows.
TEST(CsiFront, LargeForwardedMessageDoesNotGrowMemory) {
  std::string dir = makeTempDir("sg-front-big");
  {
    CsiRig rig(dir, {});
    ASSERT_TRUE(rig.start());
    ASSERT_TRUE(call(rig.channel(), "/csi.v1.Node/NodeGetCapabilities", "", {}).status.ok());
    const long before = procStatusKib(rig.sidecar()->pid(), "VmRSS");
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    args.SetMaxSendMessageSize(-1);
    auto channel = grpc::CreateCustomChannel("unix://" + dir + "/node-a/stateguard.sock",
                                             grpc::InsecureChannelCredentials(), args);
    const std::string body(48 << 20, 'b');
    Answer a = call(channel, "/csi.v1.Node/BigEcho", body, {}, std::chrono::seconds(60));
    ASSERT_TRUE(a.status.ok()) << a.status.error_message();
    EXPECT_EQ(a.body.size(), body.size());
    const long peak = procStatusKib(rig.sidecar()->pid(), "VmHWM");
    std::cout << "sidecar VmRSS before " << before << " kB, VmHWM after 48 MiB each way " << peak
              << " kB\n";
    // 48 MiB went through each way; the front holds at most its windows (256 KiB per direction
    // and connection) plus its output buffers (256 KiB and one frame per socket): about 1.5 MiB
    // measured. An output buffer that kept what a socket had already taken grew to 10-15 MiB.
    EXPECT_LT(peak - before, 4 * 1024) << "peak " << peak << " kB, before " << before << " kB";
  }
  removeTree(dir);
}

/// A client that floods PINGs and never reads the acknowledgements is dropped, as nghttp2 drops
/// one when it acks by itself; memory stays flat and other clients go on. (The front acks by hand
/// and ignored nghttp2's "flooded": the acks were dropped and the connection kept, 800 MiB of
/// PINGs in 3 s taking a core.)
TEST(CsiFront, PingFloodIsBounded) {
  std::string dir = makeTempDir("sg-front-ping");
  {
    CsiRig rig(dir, {});
    ASSERT_TRUE(rig.start());
    ASSERT_TRUE(call(rig.channel(), "/csi.v1.Node/NodeGetCapabilities", "", {}).status.ok());
    const long before = procStatusKib(rig.sidecar()->pid(), "VmRSS");
    const int fd = connectUnix(dir + "/node-a/stateguard.sock");
    ASSERT_GE(fd, 0);
    const std::string start = kH2Preface + h2Frame(4, 0, 0, "");  // and an empty SETTINGS
    ASSERT_GT(::send(fd, start.data(), start.size(), MSG_NOSIGNAL), 0);
    std::string pings;
    for (int i = 0; i < 4096; ++i) pings += h2Frame(6, 0, 0, "12345678");
    size_t sent = 0;
    const bool closed = floodUntilClosed(
        fd, [&] { return pings; }, std::chrono::seconds(3), sent);
    const long after = procStatusKib(rig.sidecar()->pid(), "VmHWM");
    std::cout << "sent " << (sent >> 10) << " KiB of PINGs; sidecar VmRSS before " << before
              << " kB, VmHWM after " << after << " kB; connection " << (closed ? "closed" : "open")
              << "\n";
    ::close(fd);
    EXPECT_TRUE(closed) << "a client that never reads its PING acks keeps its connection";
    EXPECT_LT(after - before, 8 * 1024);
    EXPECT_TRUE(call(rig.channel(), "/csi.v1.Node/NodeGetCapabilities", "", {}).status.ok());
    EXPECT_TRUE(rig.sidecar()->running());
  }
  removeTree(dir);
}

/// "Rapid reset" (CVE-2023-44487): a client that opens streams and cancels them at once, as fast
/// as it can: the front ends the connection after a bounded number, and other clients go on.
TEST(CsiFront, RapidResetIsBounded) {
  std::string dir = makeTempDir("sg-front-reset");
  {
    CsiRig rig(dir, {});
    ASSERT_TRUE(rig.start());
    const int fd = connectUnix(dir + "/node-a/stateguard.sock");
    ASSERT_GE(fd, 0);
    const std::string block = grpcRequestHeaders("/csi.v1.Node/RapidEcho");
    const std::string start = kH2Preface + h2Frame(4, 0, 0, "");  // and an empty SETTINGS
    ASSERT_GT(::send(fd, start.data(), start.size(), MSG_NOSIGNAL), 0);
    const std::string cancel("\0\0\0\x08", 4);
    const std::string message("\0\0\0\0\0", 5);  // one empty gRPC message
    uint32_t id = 1;
    size_t sent = 0;
    const bool closed = floodUntilClosed(
        fd,
        [&] {
          std::string batch;  // 100 streams opened, given a message and cancelled
          for (int i = 0; i < 100 && id < 40000; ++i, id += 2) {
            batch +=
                h2Frame(1, 0x4, id, block) + h2Frame(0, 0, id, message) + h2Frame(3, 0, id, cancel);
          }
          return batch;
        },
        std::chrono::seconds(5), sent);
    ::close(fd);
    const size_t opened = (id - 1) / 2;
    std::cout << "opened and reset " << opened << " streams before the connection "
              << (closed ? "closed" : "stayed open") << "\n";
    // nghttp2's reset rate limit (a burst of 1000, then 33 a second) ends it; without it all
    // 20,000 go through within the 5 s and the connection stays open.
    EXPECT_TRUE(closed) << "a client resetting every stream it opens keeps its connection";
    EXPECT_TRUE(call(rig.channel(), "/csi.v1.Node/NodeGetCapabilities", "", {}).status.ok());
    EXPECT_TRUE(rig.sidecar()->running());
  }
  removeTree(dir);
}

/// SIGTERM: a forwarded call in flight finishes (up to 5 s), then the sidecar exits and removes
/// its private socket.
TEST(CsiFront, ShutdownDrainsCallsInFlight) {
  std::string dir = makeTempDir("sg-front-drain");
  {
    CsiRig rig(dir, {});
    ASSERT_TRUE(rig.start());
    std::future<Answer> slow = std::async(std::launch::async, [&] {
      return call(rig.channel(), "/csi.v1.Node/SlowCall", "s", {{"x-sleep-ms", "1500"}});
    });
    ASSERT_TRUE(waitFor(
        [&] { return rig.callLog().find("echo /csi.v1.Node/SlowCall") != std::string::npos; },
        std::chrono::seconds(3)));
    const std::string guardSock = dir + "/node-a/stateguard.sock.guard";
    EXPECT_EQ(::access(guardSock.c_str(), F_OK), 0);
    struct stat st {};
    ASSERT_EQ(::stat(guardSock.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    auto started = std::chrono::steady_clock::now();
    ::kill(rig.sidecar()->pid(), SIGTERM);
    Answer a = slow.get();
    EXPECT_TRUE(a.status.ok()) << a.status.error_code() << " " << a.status.error_message();
    EXPECT_EQ(rig.sidecar()->wait(std::chrono::seconds(8)), 0) << rig.sidecar()->stderrText();
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(6));
    EXPECT_NE(::access(guardSock.c_str(), F_OK), 0) << "the private socket was left behind";
  }
  removeTree(dir);
}

/// Bad input on kubelet's socket does not take the sidecar down, and other clients go on.
TEST(CsiFront, GarbageAndHalfOpenConnectionsAreHarmless) {
  std::string dir = makeTempDir("sg-front-bad");
  {
    CsiRig rig(dir, {});
    ASSERT_TRUE(rig.start());
    const std::string sock = dir + "/node-a/stateguard.sock";
    std::vector<int> fds;
    for (int i = 0; i < 80; ++i) {  // more than the connection cap
      const int fd = connectUnix(sock);
      ASSERT_GE(fd, 0);
      if (i % 2 == 0) {
        const std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        ASSERT_GT(::write(fd, junk.data(), junk.size()), 0);
      }
      fds.push_back(fd);
    }
    // Garbage connections are closed at once; half-open ones hold a slot until they go away.
    for (int fd : fds) ::close(fd);
    EXPECT_TRUE(waitFor(
        [&] {
          return call(rig.channel(), "/csi.v1.Node/NodeGetCapabilities", "", {},
                      std::chrono::milliseconds(500))
              .status.ok();
        },
        std::chrono::seconds(5)));
    EXPECT_TRUE(rig.sidecar()->running());
  }
  removeTree(dir);
}

}  // namespace
}  // namespace stateguard::testing
