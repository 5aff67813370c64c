// Drives the real stateguard-webhook binary over real TLS with everything a broken or hostile
// client can send: malformed reviews, oversized and truncated bodies, wrong methods and paths,
// binary garbage, plain HTTP, old TLS versions and a burst of concurrent bad requests. Each
// answer must be the right HTTP status with a Kubernetes Status body that says what is wrong,
// nothing bad may reach the audit log, and the server must keep serving correct decisions and
// exit 0 on SIGTERM afterwards. Every test runs against its own server process.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/json_yaml.h"
#include "tests/support/process.h"
#include "tests/support/raw_tls.h"
#include "tests/support/tls_material.h"
#include "webhook/admission.h"

namespace stateguard::testing {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

constexpr time_t kClientTimeoutSeconds = 10;  // generous: a loaded 2-core machine
constexpr auto kStartTimeout = 30s;
constexpr auto kPrompt = 8s;  // "did not hang": well under the server's 10 s read timeout
const char* const kGoodReviewPath = "examples/reviews/delete-bound-pv.json";
const char* const kGoodUid = "705ab4f5-6393-11e8-b7cc-42010a800002";

std::string errorText(const httplib::Result& res) {
  return res ? "HTTP " + std::to_string(res->status) : httplib::to_string(res.error());
}

/// Peak resident memory of a process (VmHWM), in KiB; -1 if unreadable.
long peakRssKib(pid_t pid) {
  std::istringstream status(readText("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

double secondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

/// Checks a Kubernetes Status error answer: status code, JSON Status body, message text.
void expectStatus(const httplib::Result& res, int code, const std::vector<std::string>& needles) {
  ASSERT_TRUE(res) << "no HTTP answer: " << errorText(res);
  EXPECT_EQ(res->status, code) << "body: " << res->body;
  json status = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(status.is_discarded()) << "the body is not JSON: " << res->body;
  ASSERT_TRUE(status.is_object()) << res->body;
  EXPECT_EQ(status.value("kind", ""), "Status") << res->body;
  EXPECT_EQ(status.value("apiVersion", ""), "v1") << res->body;
  EXPECT_EQ(status.value("status", ""), "Failure") << res->body;
  EXPECT_EQ(status.value("code", 0), code) << res->body;
  const std::string message = status.value("message", "");
  for (const auto& needle : needles) {
    EXPECT_NE(message.find(needle), std::string::npos)
        << "message does not say \"" << needle << "\": " << message;
  }
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
}

/// One malformed review and what the answer must say.
struct BadReview {
  std::string name;
  std::string body;
  std::vector<std::string> needles;
};

class BadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A server that stops reading mid-body must fail our write, not kill the test with SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);
    tlsDir_ = new std::string(makeTempDir("sg-bad-input-tls"));
    auto tls = makeTlsMaterial(*tlsDir_);
    if (tls.ok()) {
      tls_ = new TlsMaterial(tls.value());
    } else {
      tlsError_ = new std::string(tls.error());
    }
  }

  static void TearDownTestSuite() {
    removeTree(*tlsDir_);
    delete tlsDir_;
    delete tls_;
    delete tlsError_;
    tlsDir_ = nullptr;
    tls_ = nullptr;
    tlsError_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(tls_, nullptr) << "cannot make TLS material: " << *tlsError_;
    work_ = makeTempDir("sg-bad-input");
    auditPath_ = work_ + "/audit.log";
    server_ = std::make_unique<ChildProcess>(
        binaryPath("stateguard-webhook"),
        std::vector<std::string>{"--listen", "127.0.0.1:0", "--tls-cert", tls_->serverCertPath,
                                 "--tls-key", tls_->serverKeyPath, "--cluster-state",
                                 sourcePath("examples/cluster-state.yaml"), "--audit-log",
                                 auditPath_, "--audit-flush-ms", "0"},
        work_);
    ASSERT_TRUE(server_->waitForOutput("listening on https://", kStartTimeout))
        << "the webhook did not start:\n"
        << server_->stderrText();
    static const std::regex kListening(R"(listening on https://127\.0\.0\.1:(\d+))");
    std::smatch m;
    const std::string err = server_->stderrText();
    ASSERT_TRUE(std::regex_search(err, m, kListening)) << err;
    port_ = std::stoi(m[1].str());
    goodReview_ = readText(sourcePath(kGoodReviewPath));
    ASSERT_FALSE(goodReview_.empty()) << "cannot read " << kGoodReviewPath;
  }

  void TearDown() override {
    if (server_) {
      EXPECT_TRUE(server_->running()) << "the webhook died during the test:\n"
                                      << server_->stderrText();
      const std::string err = server_->stderrText();
      EXPECT_EQ(err.find("internal error"), std::string::npos)
          << "the webhook logged an internal error:\n"
          << err;
      EXPECT_EQ(server_->stop(10000ms), 0) << "the webhook did not exit 0 on SIGTERM:\n"
                                           << server_->stderrText();
    }
    if (!work_.empty()) removeTree(work_);
  }

  std::unique_ptr<httplib::SSLClient> client() const {
    auto c = std::make_unique<httplib::SSLClient>("127.0.0.1", port_);
    c->set_ca_cert_path(tls_->caCertPath);
    c->enable_server_certificate_verification(true);
    c->set_connection_timeout(kClientTimeoutSeconds);
    c->set_read_timeout(kClientTimeoutSeconds);
    c->set_write_timeout(kClientTimeoutSeconds);
    return c;
  }

  httplib::Result post(const std::string& body, const std::string& path = "/validate") const {
    return client()->Post(path, body, "application/json");
  }

  /// A copy of the good review with `edit` applied to its JSON.
  template <typename Edit>
  std::string edited(const std::string& uid, Edit edit) const {
    json review = json::parse(goodReview_);
    review["request"]["uid"] = uid;
    edit(review);
    return review.dump();
  }

  /// Every malformed review the decoder must refuse, with the words the answer must use.
  std::vector<BadReview> badReviews() const {
    std::mt19937 random(20240611);  // fixed seed: the same "random" bytes every run
    std::string binary = "\x89PNG\r\n\x1a\n";
    for (int i = 0; i < 2048; ++i) binary.push_back(static_cast<char>(random() & 0xFF));
    return {
        {"malformed JSON",
         R"({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionRev)",
         {"not valid JSON"}},
        {"JSON array", "[" + goodReview_ + "]", {"must be a JSON object"}},
        {"wrong apiVersion",
         edited("bad-apiversion", [](json& r) { r["apiVersion"] = "admission.k8s.io/v1beta1"; }),
         {"apiVersion must be admission.k8s.io/v1", "admission.k8s.io/v1beta1"}},
        {"wrong kind",
         edited("bad-kind", [](json& r) { r["kind"] = "AdmissionResponse"; }),
         {"kind must be AdmissionReview", "AdmissionResponse"}},
        {"missing request",
         edited("bad-no-request", [](json& r) { r.erase("request"); }),
         {"request is missing"}},
        {"request not an object",
         edited("bad-request-string", [](json& r) { r["request"] = "x"; }),
         {"request is missing or not an object"}},
        {"missing uid",
         edited("unused", [](json& r) { r["request"].erase("uid"); }),
         {"request.uid is missing"}},
        {"empty uid", edited("", [](json&) {}), {"request.uid is empty"}},
        {"bad operation",
         edited("bad-operation", [](json& r) { r["request"]["operation"] = "DESTROY"; }),
         {"request.operation \"DESTROY\" is not one of CREATE, UPDATE, DELETE, CONNECT"}},
        {"DELETE without oldObject",
         edited("bad-no-old-object", [](json& r) { r["request"]["oldObject"] = nullptr; }),
         {"request.oldObject is missing on a DELETE"}},
        {"userInfo.groups not a list",
         edited("bad-groups",
                [](json& r) { r["request"]["userInfo"]["groups"] = "system:masters"; }),
         {"request.userInfo.groups must be a list of strings"}},
        {"number out of range",
         [&] {
           std::string body = edited("bad-number", [](json& r) { r["request"]["dryRun"] = 7; });
           body.replace(body.find("\"dryRun\":7"), 10, "\"dryRun\":1e999");
           return body;
         }(),
         {"1e999"}},
        {"empty body", "", {"not valid JSON"}},
        {"random binary bytes", binary, {"not valid JSON"}},
    };
  }

  /// The audit log as JSON records (one per line).
  std::vector<json> auditRecords() const {
    std::vector<json> out;
    std::istringstream lines(readText(auditPath_));
    std::string line;
    while (std::getline(lines, line)) {
      if (line.empty()) continue;
      json record = json::parse(line, nullptr, /*allow_exceptions=*/false);
      EXPECT_FALSE(record.is_discarded()) << "audit line is not JSON: " << line;
      out.push_back(std::move(record));
    }
    return out;
  }

  /// The good review must still get its denial, promptly.
  void expectGoodDecision(const std::string& when) const {
    SCOPED_TRACE("good review " + when);
    auto started = SteadyClock::now();
    auto res = post(goodReview_);
    ASSERT_TRUE(res) << "no answer: " << errorText(res);
    EXPECT_LT(secondsSince(started), std::chrono::duration<double>(kPrompt).count());
    ASSERT_EQ(res->status, 200) << res->body;
    json review = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(review.is_discarded()) << res->body;
    EXPECT_EQ(review.value("apiVersion", ""), "admission.k8s.io/v1");
    EXPECT_EQ(review.value("kind", ""), "AdmissionReview");
    const json& response = review["response"];
    EXPECT_EQ(response.value("uid", ""), kGoodUid) << res->body;
    EXPECT_EQ(response.value("allowed", true), false) << res->body;
  }

  /// The value of one metric line (e.g. `stateguard_admission_rejected_total{code="400"}`).
  std::optional<double> metric(const std::string& series) const {
    auto res = client()->Get("/metrics");
    if (!res || res->status != 200) {
      ADD_FAILURE() << "GET /metrics failed: " << errorText(res);
      return std::nullopt;
    }
    std::istringstream lines(res->body);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
    }
    return std::nullopt;
  }

  static std::string* tlsDir_;
  static TlsMaterial* tls_;
  static std::string* tlsError_;

  std::string work_;
  std::string auditPath_;
  std::string goodReview_;
  std::unique_ptr<ChildProcess> server_;
  int port_ = 0;
};

std::string* BadInputTest::tlsDir_ = nullptr;
TlsMaterial* BadInputTest::tls_ = nullptr;
std::string* BadInputTest::tlsError_ = nullptr;

TEST_F(BadInputTest, VersionFlagAndBuildInfoMetricAgree) {
  CommandResult v = runCommand(binaryPath("stateguard-webhook"), {"--version"});
  ASSERT_EQ(v.exitCode, 0) << v.err;
  ASSERT_EQ(v.out.rfind("stateguard-webhook ", 0), 0u) << v.out;
  const std::string version = v.out.substr(19, v.out.find('\n') - 19);
  EXPECT_NE(version.find('.'), std::string::npos) << v.out;
  EXPECT_EQ(
      metric("stateguard_build_info{version=\"" + version + "\",component=\"stateguard-webhook\"}"),
      1.0);
}

TEST_F(BadInputTest, MalformedReviewsGet400NamingTheProblem) {
  for (const auto& bad : badReviews()) {
    SCOPED_TRACE(bad.name);
    expectStatus(post(bad.body), 400, [&] {
      auto needles = bad.needles;
      needles.insert(needles.begin(), "could not read the AdmissionReview");
      return needles;
    }());
  }
  expectGoodDecision("after the malformed ones");
}

TEST_F(BadInputTest, AuditLogHoldsOnlyDecisionsForValidReviews) {
  for (const auto& bad : badReviews()) post(bad.body);
  expectGoodDecision("after the malformed ones");
  auto records = auditRecords();
  ASSERT_EQ(records.size(), 1u) << readText(auditPath_);
  EXPECT_EQ(records[0].value("uid", ""), kGoodUid);
  EXPECT_EQ(records[0].value("verdict", ""), "deny");
}

TEST_F(BadInputTest, BodiesOverTheLimitGet413WithoutHanging) {
  // Just over the limit: httplib reads it, the decoder refuses it by size.
  std::string justOver = goodReview_;
  justOver.insert(justOver.size() - 2, kMaxReviewBytes + 1 - justOver.size(), ' ');
  ASSERT_EQ(justOver.size(), kMaxReviewBytes + 1);
  // Far over: httplib refuses it from Content-Length.
  std::string farOver(4 * 1024 * 1024, ' ');
  farOver.replace(0, goodReview_.size(), goodReview_);

  for (const auto& [name, body] :
       {std::pair{"3 MiB + 1 byte", &justOver}, std::pair{"4 MiB", &farOver}}) {
    SCOPED_TRACE(name);
    auto started = SteadyClock::now();
    expectStatus(post(*body), 413, {"over the 3145728-byte limit"});
    EXPECT_LT(secondsSince(started), std::chrono::duration<double>(kPrompt).count());
  }
  expectGoodDecision("after the oversized ones");
  EXPECT_EQ(auditRecords().size(), 1u) << readText(auditPath_);
}

// The apiserver always sends Content-Length, but anyone who can reach the port can stream a
// chunked body or one without a length: the 3 MiB limit must hold for those too, without the
// server first buffering the whole body.
constexpr size_t kStreamedBytes = 64 * 1024 * 1024;
constexpr long kMaxGrowthKib = 24 * 1024;  // well under the streamed size, well over the limit

TEST_F(BadInputTest, ChunkedBodyOverTheLimitIsRefusedWithoutBufferingIt) {
  expectGoodDecision("to warm up");
  const long before = peakRssKib(server_->pid());
  ASSERT_GT(before, 0);
  const std::string chunk(64 * 1024, ' ');
  auto started = SteadyClock::now();
  auto res = client()->Post(
      "/validate",
      [&chunk](size_t offset, httplib::DataSink& sink) {
        if (!sink.write(chunk.data(), chunk.size())) return false;
        if (offset + chunk.size() >= kStreamedBytes) sink.done();
        return true;
      },
      "application/json");
  EXPECT_LT(secondsSince(started), std::chrono::duration<double>(kPrompt).count());
  if (res) {  // refusing early by closing the connection is fine too
    EXPECT_TRUE(res->status == 411 || res->status == 413)
        << "expected 411 Length Required or 413, got " << res->status << ": " << res->body;
    expectStatus(res, res->status, {});
  }
  const long growth = peakRssKib(server_->pid()) - before;
  EXPECT_LT(growth, kMaxGrowthKib) << "the server's peak memory grew by " << growth / 1024
                                   << " MiB for a " << kStreamedBytes / (1024 * 1024)
                                   << " MiB chunked body: it buffered the body past the limit ("
                                   << (res ? res->body : errorText(res)) << ")";
  expectGoodDecision("after the chunked body");
}

TEST_F(BadInputTest, BodyWithoutLengthIsRefusedWithoutBufferingIt) {
  expectGoodDecision("to warm up");
  const long before = peakRssKib(server_->pid());
  ASSERT_GT(before, 0);
  std::string error;
  auto conn = RawTls::connect(port_, tls_->caCertPath, 0, 0, error);
  ASSERT_NE(conn, nullptr) << error;
  // No Content-Length and no Transfer-Encoding: the body would run until the connection ends.
  bool wroteAll = conn->write(
      "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\r\n");
  const std::string chunk(64 * 1024, ' ');
  for (size_t sent = 0; wroteAll && sent < kStreamedBytes; sent += chunk.size()) {
    wroteAll = conn->write(chunk);
  }
  conn->shutdownWrite();
  const std::string answer = conn->readResponse();
  conn->close();
  if (!answer.empty()) {  // refusing early by closing the connection is fine too
    static const std::regex kStatusLine(R"(^HTTP/1\.1 (\d+) )");
    std::smatch m;
    ASSERT_TRUE(std::regex_search(answer, m, kStatusLine)) << answer.substr(0, 300);
    const int code = std::stoi(m[1].str());
    EXPECT_TRUE(code == 411 || code == 413)
        << "expected 411 Length Required or 413, got: " << answer.substr(0, 400);
    json status = json::parse(answer.substr(answer.find("\r\n\r\n") + 4), nullptr, false);
    ASSERT_FALSE(status.is_discarded()) << answer.substr(0, 400);
    EXPECT_EQ(status.value("kind", ""), "Status");
    EXPECT_EQ(status.value("code", 0), code);
    EXPECT_FALSE(status.value("message", "").empty()) << answer.substr(0, 400);
  }
  const long growth = peakRssKib(server_->pid()) - before;
  EXPECT_LT(growth, kMaxGrowthKib) << "the server's peak memory grew by " << growth / 1024
                                   << " MiB for a " << kStreamedBytes / (1024 * 1024)
                                   << " MiB body without a length: it buffered the body past "
                                      "the limit (answer: "
                                   << answer.substr(0, 300) << ")";
  expectGoodDecision("after the body without a length");
}

// A request line or header line that never ends must not be buffered either: the server may
// hold at most its 16 KiB header limit, answer 431 (or just close), and forget the rest.
TEST_F(BadInputTest, LineWithoutNewlineIsRefusedWithoutBufferingIt) {
  expectGoodDecision("to warm up");
  for (const auto& [name, start] :
       {std::pair{"header line", "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: "},
        std::pair{"request line", "GET /"}}) {
    SCOPED_TRACE(name);
    const long before = peakRssKib(server_->pid());
    ASSERT_GT(before, 0);
    std::string error;
    auto conn = RawTls::connect(port_, tls_->caCertPath, 0, 0, error);
    ASSERT_NE(conn, nullptr) << error;
    auto started = SteadyClock::now();
    bool wroteAll = conn->write(start);
    const std::string chunk(64 * 1024, 'a');
    for (size_t sent = 0; wroteAll && sent < kStreamedBytes; sent += chunk.size()) {
      wroteAll = conn->write(chunk);
    }
    conn->shutdownWrite();
    const std::string answer = conn->readResponse();
    conn->close();
    EXPECT_LT(secondsSince(started), std::chrono::duration<double>(kPrompt).count());
    if (!answer.empty()) {  // refusing early by closing the connection is fine too
      EXPECT_EQ(answer.rfind("HTTP/1.1 431 ", 0), 0u) << answer.substr(0, 400);
      json status = json::parse(answer.substr(answer.find("\r\n\r\n") + 4), nullptr, false);
      ASSERT_FALSE(status.is_discarded()) << answer.substr(0, 400);
      EXPECT_EQ(status.value("kind", ""), "Status");
      EXPECT_EQ(status.value("code", 0), 431);
      EXPECT_NE(status.value("message", "").find("16384-byte limit"), std::string::npos)
          << answer.substr(0, 400);
    }
    const long growth = peakRssKib(server_->pid()) - before;
    EXPECT_LT(growth, kMaxGrowthKib)
        << "the server's peak memory grew by " << growth / 1024 << " MiB for a "
        << kStreamedBytes / (1024 * 1024) << " MiB " << name
        << " without a newline (answer: " << answer.substr(0, 300) << ")";
  }
  expectGoodDecision("after the endless lines");
  EXPECT_EQ(auditRecords().size(), 2u) << readText(auditPath_);
}

TEST_F(BadInputTest, PipelinedRequestsAreAnsweredInOrder) {
  std::string error;
  auto conn = RawTls::connect(port_, tls_->caCertPath, 0, 0, error);
  ASSERT_NE(conn, nullptr) << error;
  const std::string review = "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " +
                             std::to_string(goodReview_.size()) + "\r\n\r\n" + goodReview_;
  ASSERT_TRUE(
      conn->write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + review +
                  "GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + review +
                  "HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
  const std::string answers = conn->readAll();
  static const std::regex kStatusLine(R"(HTTP/1\.1 (\d+) )");
  std::vector<std::string> codes;
  for (std::sregex_iterator it(answers.begin(), answers.end(), kStatusLine), end; it != end; ++it) {
    codes.push_back((*it)[1].str());
  }
  EXPECT_EQ(codes, (std::vector<std::string>{"200", "200", "404", "200", "200"})) << answers;
  EXPECT_NE(answers.find(kGoodUid), std::string::npos);
  // The HEAD answer has the GET answer's length but no body: the stream ends with its headers.
  EXPECT_EQ(answers.size() - answers.rfind("\r\n\r\n"), 4u) << answers;
  EXPECT_EQ(auditRecords().size(), 2u) << readText(auditPath_);
}

// Nesting is cheap to send (two bytes a level) and, handled recursively, exhausts a worker
// thread's stack. Refusing it (400) or judging it (200) are both fine; dying is not.
TEST_F(BadInputTest, DeeplyNestedReviewDoesNotCrashTheServer) {
  constexpr size_t kDepth = 1000 * 1000;  // 2 MB of brackets: under the 3 MiB limit
  std::string body = edited("deep-nesting", [](json& r) {
    r["request"]["oldObject"]["metadata"]["annotations"] = {{"deep", "@@DEEP@@"}};
  });
  body.replace(body.find("\"@@DEEP@@\""), 10, std::string(kDepth, '[') + std::string(kDepth, ']'));
  ASSERT_LT(body.size(), kMaxReviewBytes);
  auto res = post(body);
  ASSERT_TRUE(res) << "no answer to a deeply nested review (" << errorText(res)
                   << "); server alive: " << server_->running() << "\n"
                   << server_->stderrText();
  if (res->status == 200) {
    json review = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(review.is_discarded()) << res->body.substr(0, 300);
    EXPECT_EQ(review["response"].value("uid", ""), "deep-nesting") << res->body.substr(0, 300);
  } else {
    expectStatus(res, 400, {"could not read the AdmissionReview"});
  }
  expectGoodDecision("after a deeply nested review");
}

TEST_F(BadInputTest, WrongMethodsOnValidateGet405AllowPost) {
  auto c = client();
  const std::vector<std::pair<std::string, httplib::Result>> answers = [&] {
    std::vector<std::pair<std::string, httplib::Result>> out;
    out.emplace_back("GET", c->Get("/validate"));
    out.emplace_back("PUT", c->Put("/validate", goodReview_, "application/json"));
    out.emplace_back("DELETE", c->Delete("/validate"));
    out.emplace_back("PATCH", c->Patch("/validate", goodReview_, "application/json"));
    return out;
  }();
  for (const auto& [method, res] : answers) {
    SCOPED_TRACE(method);
    expectStatus(res, 405, {method + " /validate is not supported", "send POST"});
    if (res) {
      EXPECT_EQ(res->get_header_value("Allow"), "POST");
    }
  }
  EXPECT_TRUE(auditRecords().empty()) << readText(auditPath_);
}

TEST_F(BadInputTest, UnknownPathsGet404) {
  auto c = client();
  expectStatus(c->Get("/nope"), 404, {"GET /nope is not served", "POST /validate"});
  expectStatus(c->Post("/validate/extra", goodReview_, "application/json"), 404,
               {"POST /validate/extra is not served"});
  expectStatus(c->Post("/mutate", goodReview_, "application/json"), 404,
               {"POST /mutate is not served"});
  // A percent-encoded path that decodes to bytes that are not UTF-8.
  expectStatus(c->Get("/%FF%FE"), 404, {"is not served"});
  EXPECT_TRUE(auditRecords().empty()) << readText(auditPath_);
  expectGoodDecision("after unknown paths");
}

TEST_F(BadInputTest, TruncatedBodyThenCloseDoesNotHangTheServer) {
  const std::string partial = goodReview_.substr(0, 100);
  const std::string head =
      "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(goodReview_.size() + 5000) + "\r\n\r\n";
  {
    std::string error;
    auto conn = RawTls::connect(port_, tls_->caCertPath, 0, 0, error);
    ASSERT_NE(conn, nullptr) << error;
    ASSERT_TRUE(conn->write(head + partial));
    conn->close();  // mid-body: the server must give up on this request, not wait for it
  }
  expectGoodDecision("after a truncated request was abandoned");

  // The same lie on a connection left open must not hold up anyone else.
  std::string error;
  auto idle = RawTls::connect(port_, tls_->caCertPath, 0, 0, error);
  ASSERT_NE(idle, nullptr) << error;
  ASSERT_TRUE(idle->write(head + partial));
  expectGoodDecision("while a truncated request is pending on another connection");
  idle->close();
  expectGoodDecision("after the pending truncated request was closed");
  auto records = auditRecords();
  EXPECT_EQ(records.size(), 3u) << readText(auditPath_);
  for (const auto& r : records) EXPECT_EQ(r.value("uid", ""), kGoodUid);
}

TEST_F(BadInputTest, ConcurrentBadRequestsLeaveTheServerAnsweringCorrectly) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 50;
  struct Shot {
    std::string method;
    std::string path;
    std::string body;
    int code;
  };
  const std::vector<Shot> shots = {
      {"POST", "/validate", R"({"apiVersion": "admission.k8s.io/v1", "kind": )", 400},
      {"POST", "/validate", edited("c-apiversion", [](json& r) { r["apiVersion"] = "v1"; }), 400},
      {"POST", "/validate", edited("c-uid", [](json& r) { r["request"].erase("uid"); }), 400},
      {"POST", "/validate", "", 400},
      {"POST", "/validate", "[1,2,3]", 400},
      {"GET", "/validate", "", 405},
      {"POST", "/elsewhere", goodReview_, 404},
  };
  std::atomic<int> wrong{0};
  std::mutex mu;
  std::string firstWrong;
  std::vector<std::thread> threads;
  auto started = SteadyClock::now();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto c = client();
      c->set_keep_alive(true);
      for (int i = 0; i < kPerThread; ++i) {
        const Shot& shot = shots[static_cast<size_t>(t + i) % shots.size()];
        auto res = shot.method == "GET" ? c->Get(shot.path)
                                        : c->Post(shot.path, shot.body, "application/json");
        if (!res || res->status != shot.code || res->body.find("\"Status\"") == std::string::npos) {
          ++wrong;
          std::lock_guard lock(mu);
          if (firstWrong.empty()) {
            firstWrong = shot.method + " " + shot.path + " expected " + std::to_string(shot.code) +
                         ", got " + errorText(res) + (res ? ": " + res->body : "");
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0) << "first wrong answer: " << firstWrong;
  EXPECT_LT(secondsSince(started), 60.0);
  expectGoodDecision("after the concurrent burst");
  auto records = auditRecords();
  ASSERT_EQ(records.size(), 1u) << readText(auditPath_);
  EXPECT_EQ(records[0].value("uid", ""), kGoodUid);
}

TEST_F(BadInputTest, PlainHttpToTheHttpsPortFailsWithoutBreakingTheServer) {
  httplib::Client plain("127.0.0.1", port_);
  plain.set_connection_timeout(kClientTimeoutSeconds);
  plain.set_read_timeout(kClientTimeoutSeconds);
  plain.set_write_timeout(kClientTimeoutSeconds);
  auto started = SteadyClock::now();
  auto get = plain.Get("/healthz");
  EXPECT_FALSE(get && get->status == 200) << "plain HTTP was served: " << errorText(get);
  auto postRes = plain.Post("/validate", goodReview_, "application/json");
  EXPECT_FALSE(postRes && postRes->status == 200)
      << "plain HTTP was served: " << errorText(postRes);
  EXPECT_LT(secondsSince(started), std::chrono::duration<double>(kPrompt).count() * 2)
      << "the server kept the plain HTTP connections waiting";
  EXPECT_TRUE(auditRecords().empty()) << readText(auditPath_);
  expectGoodDecision("after plain HTTP");
}

TEST_F(BadInputTest, Tls11IsRefusedAndTls12Works) {
  {
    SCOPED_TRACE("TLS 1.0-1.1 only");
    std::string error;
    unsigned long code = 0;
    auto conn =
        RawTls::connect(port_, tls_->caCertPath, TLS1_VERSION, TLS1_1_VERSION, error, &code);
    EXPECT_EQ(conn, nullptr) << "a TLS " << (conn ? conn->version() : 0) << " handshake succeeded";
    // The server must be the one saying no (an alert), not this client failing to start.
    EXPECT_EQ(ERR_GET_REASON(code), SSL_R_TLSV1_ALERT_PROTOCOL_VERSION) << error;
  }
  {
    SCOPED_TRACE("raw TLS 1.2");
    std::string error;
    auto conn = RawTls::connect(port_, tls_->caCertPath, TLS1_2_VERSION, TLS1_2_VERSION, error);
    ASSERT_NE(conn, nullptr) << error;
    EXPECT_EQ(conn->version(), TLS1_2_VERSION);
    ASSERT_TRUE(
        conn->write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
    EXPECT_EQ(conn->readAll().rfind("HTTP/1.1 200", 0), 0u);
  }
  {
    SCOPED_TRACE("httplib client pinned to TLS 1.2");
    auto c = client();
    SSL_CTX_set_min_proto_version(c->ssl_context(), TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(c->ssl_context(), TLS1_2_VERSION);
    auto res = c->Get("/healthz");
    ASSERT_TRUE(res) << errorText(res);
    EXPECT_EQ(res->status, 200);
    auto review = c->Post("/validate", goodReview_, "application/json");
    ASSERT_TRUE(review) << errorText(review);
    EXPECT_EQ(review->status, 200);
    EXPECT_NE(review->body.find(kGoodUid), std::string::npos) << review->body;
  }
  expectGoodDecision("after the TLS version checks");
}

TEST_F(BadInputTest, MetricsCountRejectedRequests) {
  expectStatus(post("{not json"), 400, {"not valid JSON"});
  expectStatus(post(edited("m-uid", [](json& r) { r["request"]["uid"] = 7; })), 400,
               {"request.uid must be a string"});
  std::string justOver = goodReview_;
  justOver.insert(justOver.size() - 2, kMaxReviewBytes + 1 - justOver.size(), ' ');
  expectStatus(post(justOver), 413, {"over the 3145728-byte limit"});
  expectStatus(post(std::string(kMaxReviewBytes + 4096, ' ')), 413,
               {"over the 3145728-byte limit"});
  expectGoodDecision("before reading the metrics");

  auto rejected400 = metric(R"(stateguard_admission_rejected_total{code="400"})");
  ASSERT_TRUE(rejected400.has_value()) << "no rejected_total{code=\"400\"} series";
  EXPECT_EQ(*rejected400, 2.0);
  auto rejected413 = metric(R"(stateguard_admission_rejected_total{code="413"})");
  ASSERT_TRUE(rejected413.has_value()) << "no rejected_total{code=\"413\"} series";
  EXPECT_EQ(*rejected413, 2.0);
  auto decided = metric(
      R"(stateguard_admission_requests_total{rule="pv-delete",verdict="deny",operation="DELETE"})");
  ASSERT_TRUE(decided.has_value()) << "the good review was not counted as a decision";
  EXPECT_EQ(*decided, 1.0);
}

}  // namespace
}  // namespace stateguard::testing
