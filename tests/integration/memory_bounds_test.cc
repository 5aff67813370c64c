// The real webhook's memory under clients that hold connections and bytes (issue 13): whatever a
// pod that reaches the port does, the server's resident memory stays what its limits allow.
// Measured from /proc/PID/status of the running binary, never assumed:
//  - idle TLS connections cost little each (OpenSSL's buffers are given back while idle), and
//    past --max-connections new connections are closed at once;
//  - connections that send all but the last byte of a 3 MiB body cannot hold more than the
//    --max-buffered-bytes budget: the requests past it are answered 503 with Retry-After, and
//    a small review is still answered during the attack;
//  - the worker count follows the container's CPU quota (cgroup cpu.max).

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/raw_tls.h"
#include "tests/support/tls_material.h"
#include "tests/support/webhook_process.h"
#include "webhook/admission.h"
#include "webhook/server.h"

namespace stateguard::testing {
namespace {

using namespace std::chrono_literals;

class MemoryBoundsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::signal(SIGPIPE, SIG_IGN);
    dir_ = makeTempDir("sg-memory-bounds");
    auto tls = makeTlsMaterial(dir_);
    ASSERT_TRUE(tls.ok()) << tls.error();
    tls_ = tls.value();
    goodReview_ = readText(sourcePath("examples/reviews/delete-bound-pv.json"));
    ASSERT_FALSE(goodReview_.empty());
  }
  void TearDown() override {
    if (webhook_) {
      EXPECT_TRUE(webhook_->process().running()) << webhook_->process().stderrText();
      EXPECT_EQ(webhook_->process().stop(10000ms), 0) << webhook_->process().stderrText();
    }
    removeTree(dir_);
  }

  void start(std::vector<std::string> extra) {
    webhook_ = startOnExampleState(dir_, tls_, std::move(extra));
    ASSERT_TRUE(webhook_->started()) << webhook_->process().stderrText();
    port_ = webhook_->port();
  }

  std::unique_ptr<RawTls> connect() {
    std::string error;
    return RawTls::connect(port_, tls_.caCertPath, 0, 0, error, nullptr, 20);
  }

  /// One request on a fresh connection; the raw response.
  std::string request(const std::string& method, const std::string& path,
                      const std::string& body = "") {
    auto conn = connect();
    if (!conn) return "";
    std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    if (method == "POST") {
      req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\n";
    }
    req += "Connection: close\r\n\r\n" + body;
    if (!conn->write(req)) return "";
    return conn->readResponse();
  }

  /// The value of a metric sample line that starts with `name` (-1 when absent).
  double metric(const std::string& name) {
    const std::string text = request("GET", "/metrics");
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
    }
    return -1;
  }

  std::string dir_;
  TlsMaterial tls_;
  std::string goodReview_;
  std::unique_ptr<WebhookProcess> webhook_;
  int port_ = -1;
};

TEST_F(MemoryBoundsTest, IdleTlsConnectionsCostLittleAndTheConnectionLimitHolds) {
  constexpr int kIdle = 400;
  constexpr int kLimit = 450;
  start({"--threads", "2", "--max-connections", std::to_string(kLimit)});
  // Warm up: allocator arenas and the TLS context exist before the baseline.
  ASSERT_NE(request("POST", "/validate", goodReview_).find("HTTP/1.1 200"), std::string::npos);
  std::this_thread::sleep_for(200ms);
  const long before = procStatusKib(webhook_->process().pid(), "VmRSS");
  ASSERT_GT(before, 0);
  std::vector<std::unique_ptr<RawTls>> idle;
  for (int i = 0; i < kIdle; ++i) {
    auto conn = connect();
    ASSERT_NE(conn, nullptr) << "connection " << i << " failed";
    // One request each, so every connection has been through a read and a write.
    ASSERT_TRUE(conn->write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    ASSERT_NE(conn->readResponse().find("200 OK"), std::string::npos);
    idle.push_back(std::move(conn));
  }
  std::this_thread::sleep_for(300ms);
  const long after = procStatusKib(webhook_->process().pid(), "VmRSS");
  const double perConnection = static_cast<double>(after - before) / kIdle;
  RecordProperty("rss_kib_per_idle_connection", std::to_string(perConnection));
  std::cout << "RSS per idle TLS connection: " << perConnection << " KiB (" << before << " -> "
            << after << " KiB for " << kIdle << ")\n";
  // With OpenSSL's read and write buffers kept, an idle connection cost 25 KiB here (28 in the
  // issue's measurement); released, 16 KiB (the SSL object and its cipher state).
  EXPECT_LT(perConnection, 20.0) << "idle connections keep their TLS buffers";

  // Up to the limit connections are served; past it they are closed before the handshake.
  for (int i = kIdle; i < kLimit - 1; ++i) {  // one slot stays free for the metrics request
    auto conn = connect();
    ASSERT_NE(conn, nullptr) << "connection " << i << " under the limit failed";
    idle.push_back(std::move(conn));
  }
  idle.push_back(connect());
  ASSERT_NE(idle.back(), nullptr) << "the last connection under the limit failed";
  EXPECT_EQ(connect(), nullptr) << "a connection past --max-connections " << kLimit
                                << " was served";
  std::this_thread::sleep_for(100ms);
  EXPECT_NE(webhook_->process().stderrText().find("open connections is reached"), std::string::npos)
      << webhook_->process().stderrText();
  idle.pop_back();  // room for the metrics request
  std::this_thread::sleep_for(200ms);
  EXPECT_GE(metric("stateguard_http_connections_refused_total"), 1);
  idle.clear();
  std::this_thread::sleep_for(300ms);
  EXPECT_NE(request("POST", "/validate", goodReview_).find("HTTP/1.1 200"), std::string::npos)
      << "the server does not answer after the connections closed";
}

TEST_F(MemoryBoundsTest, PartialBodiesCannotHoldMoreThanTheBufferBudget) {
  constexpr int kAttackers = 40;
  constexpr long kBudgetMib = 32;  // the shipped default
  start({"--threads", "2"});
  ASSERT_NE(request("POST", "/validate", goodReview_).find("HTTP/1.1 200"), std::string::npos);
  const long before = procStatusKib(webhook_->process().pid(), "VmRSS");
  // Each sends the headers of a review of the largest allowed size, then all but its last byte.
  const size_t length = kMaxReviewBytes;
  const std::string head =
      "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(length) + "\r\n\r\n";
  const std::string body(length - 1, ' ');
  std::vector<std::unique_ptr<RawTls>> attackers;
  int sent = 0;
  for (int i = 0; i < kAttackers; ++i) {
    auto conn = connect();
    ASSERT_NE(conn, nullptr);
    if (conn->write(head) && conn->write(body)) ++sent;
    attackers.push_back(std::move(conn));
  }
  std::this_thread::sleep_for(500ms);
  const long held = procStatusKib(webhook_->process().pid(), "VmRSS");
  const long growthMib = (held - before) / 1024;
  std::cout << "RSS with " << kAttackers << " partial 3 MiB bodies: " << before / 1024 << " -> "
            << held / 1024 << " MiB\n";
  // Unbounded, 40 x 3 MiB is over 120 MiB. The budget plus allocator slack is the bound.
  EXPECT_LT(growthMib, kBudgetMib + 16) << "partial bodies held " << growthMib << " MiB";

  // A small review still fits in what the budget has left.
  EXPECT_NE(request("POST", "/validate", goodReview_).find("HTTP/1.1 200"), std::string::npos)
      << "a small review was not served while the budget was held";
  // The requests past the budget were told to come back.
  int refused = 0;
  for (auto& conn : attackers) {
    conn->shutdownWrite();
  }
  for (auto& conn : attackers) {
    const std::string answer = conn->readResponse();
    if (answer.find("HTTP/1.1 503") != std::string::npos) {
      ++refused;
      EXPECT_NE(answer.find("Retry-After: 1"), std::string::npos) << answer;
      EXPECT_NE(answer.find("retry in a second"), std::string::npos) << answer;
    }
  }
  std::cout << refused << " of " << kAttackers << " partial bodies answered 503\n";
  EXPECT_GE(refused, kAttackers - static_cast<int>(kBudgetMib / 3) - 1)
      << "of " << kAttackers << " partial 3 MiB bodies, only " << refused << " were refused";
  EXPECT_GE(metric("stateguard_http_requests_shed_total"), refused);
  attackers.clear();
  std::this_thread::sleep_for(300ms);
  EXPECT_LT(metric("stateguard_http_buffered_bytes"), 64 * 1024)
      << "bytes stay charged after the connections closed";
}

// Reviews are handled on the worker threads, so at most one per worker is decoded at a time:
// the peak for the largest reviews is bounded by the worker count (which follows the CPU quota),
// not by how many the clients send at once.
TEST_F(MemoryBoundsTest, LargestReviewsAtOnceAreBoundedByTheWorkers) {
  constexpr int kConcurrent = 8;
  start({"--threads", "1"});
  ASSERT_NE(request("POST", "/validate", goodReview_).find("HTTP/1.1 200"), std::string::npos);
  // A valid CREATE of a ConfigMap padded to just under 3 MiB with tiny values (the costliest
  // shape to decode: one JSON node per two bytes).
  json review = json::parse(goodReview_);
  review["request"]["operation"] = "CREATE";
  review["request"]["kind"] = {{"group", ""}, {"version", "v1"}, {"kind", "ConfigMap"}};
  review["request"]["resource"] = {{"group", ""}, {"version", "v1"}, {"resource", "configmaps"}};
  review["request"]["oldObject"] = nullptr;
  json object = {{"apiVersion", "v1"},
                 {"kind", "ConfigMap"},
                 {"metadata", {{"name", "padded"}, {"namespace", "default"}}}};
  const std::string skeleton = review.dump();
  const size_t values = (kMaxReviewBytes - skeleton.size() - 4096) / 2;
  object["padding"] = json::array();
  for (size_t i = 0; i < values; ++i) object["padding"].push_back(0);
  review["request"]["object"] = object;
  const std::string body = review.dump();
  ASSERT_LE(body.size(), kMaxReviewBytes);
  const long before = procStatusKib(webhook_->process().pid(), "VmHWM");
  std::vector<std::thread> clients;
  std::atomic<int> answered{0};
  for (int i = 0; i < kConcurrent; ++i) {
    clients.emplace_back([&] {
      if (request("POST", "/validate", body).find("HTTP/1.1 200") != std::string::npos) ++answered;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(answered.load(), kConcurrent);
  const long peakMib = procStatusKib(webhook_->process().pid(), "VmHWM") / 1024;
  std::cout << "peak RSS with " << kConcurrent
            << " concurrent 3 MiB reviews, 1 worker: " << before / 1024 << " -> " << peakMib
            << " MiB\n";
  RecordProperty("peak_mib_largest_reviews_one_worker", std::to_string(peakMib));
  // Measured: 90-100 MiB (up to 24 of them the bodies waiting in the buffer budget), about 45
  // per review being decoded. Through simdjson (a 16-byte tape entry per number) it was 105-136;
  // with a worker per node CPU instead of per container CPU, 420 (the figure).
  EXPECT_LT(peakMib, 150) << "the peak for 8 concurrent 3 MiB reviews on one worker";
}

TEST(CpuQuota, WorkersFollowTheContainersCpuLimit) {
  EXPECT_EQ(cpusFromCpuMax("max 100000\n"), 0u);
  EXPECT_EQ(cpusFromCpuMax("50000 100000\n"), 1u);  // 500m: one worker
  EXPECT_EQ(cpusFromCpuMax("200000 100000"), 2u);
  EXPECT_EQ(cpusFromCpuMax("250000 100000"), 3u);  // rounded up
  EXPECT_EQ(cpusFromCpuMax("-1 100000"), 0u);      // cgroup v1: no quota
  EXPECT_EQ(cpusFromCpuMax(""), 0u);
  EXPECT_EQ(cpusFromCpuMax("garbage"), 0u);
  EXPECT_GE(ServerOptions::defaultThreads(), 1u);
}

}  // namespace
}  // namespace stateguard::testing
