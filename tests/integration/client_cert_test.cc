// Only the apiserver may speak (issue 13): with --client-ca, the real webhook judges
// AdmissionReviews only for callers whose TLS client certificate it verifies, so a pod that
// reaches the port cannot write "break-glass by ciso@example.com" into the audit trail. Probes
// and /metrics stay open; every audit line says whether its caller was verified.

#include <gtest/gtest.h>
#include <httplib.h>

#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/json_yaml.h"
#include "tests/support/process.h"
#include "tests/support/tls_material.h"
#include "tests/support/webhook_process.h"

namespace stateguard::testing {
namespace {

using namespace std::chrono_literals;

class ClientCertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = makeTempDir("sg-client-cert");
    auto tls = makeTlsMaterial(dir_ + "/cluster");
    ASSERT_TRUE(tls.ok()) << tls.error();
    tls_ = tls.value();
    auto apiserver = makeClientCertificate(tls_, "apiserver", "kube-apiserver-webhook-client");
    ASSERT_TRUE(apiserver.ok()) << apiserver.error();
    apiserver_ = apiserver.value();
    auto kubelet = makeClientCertificate(tls_, "kubelet", "system:node:worker-1", "system:nodes");
    ASSERT_TRUE(kubelet.ok()) << kubelet.error();
    kubelet_ = kubelet.value();
    auto other = makeTlsMaterial(dir_ + "/other");
    ASSERT_TRUE(other.ok()) << other.error();
    auto stranger =
        makeClientCertificate(other.value(), "stranger", "kube-apiserver-webhook-client");
    ASSERT_TRUE(stranger.ok()) << stranger.error();
    stranger_ = stranger.value();
    review_ = readText(sourcePath("examples/reviews/delete-bound-pv.json"));
  }
  void TearDown() override {
    if (webhook_)
      EXPECT_EQ(webhook_->process().stop(10000ms), 0) << webhook_->process().stderrText();
    removeTree(dir_);
  }

  void start(std::vector<std::string> extra) {
    webhook_ = startOnExampleState(dir_, tls_, std::move(extra));
    ASSERT_TRUE(webhook_->started()) << webhook_->process().stderrText();
    port_ = webhook_->port();
  }

  /// A client presenting `cert` (nullptr: none), to the main port or `port`.
  httplib::Result call(const ClientCertificate* cert, const std::string& method,
                       const std::string& path, int port = -1) {
    if (port < 0) port = port_;
    std::unique_ptr<httplib::SSLClient> c =
        cert == nullptr ? std::make_unique<httplib::SSLClient>("127.0.0.1", port)
                        : std::make_unique<httplib::SSLClient>("127.0.0.1", port, cert->certPath,
                                                               cert->keyPath);
    c->set_ca_cert_path(tls_.caCertPath);
    c->enable_server_certificate_verification(true);
    c->set_read_timeout(10);
    if (method == "GET") return c->Get(path);
    return c->Post(path, review_, "application/json");
  }

  std::vector<json> audit() {
    std::vector<json> out;
    std::istringstream in(readText(dir_ + "/audit.log"));
    std::string line;
    while (std::getline(in, line)) out.push_back(json::parse(line));
    return out;
  }

  std::string dir_;
  TlsMaterial tls_;
  ClientCertificate apiserver_, kubelet_, stranger_;
  std::string review_;
  std::unique_ptr<WebhookProcess> webhook_;
  int port_ = -1;
};

std::string messageOf(const httplib::Result& res) {
  if (!res) return "no answer: " + httplib::to_string(res.error());
  json status = json::parse(res->body, nullptr, false);
  return status.is_object() ? status.value("message", res->body) : res->body;
}

TEST_F(ClientCertTest, OnlyAVerifiedCallerIsJudgedAndTheAuditSaysSo) {
  start({"--client-ca", tls_.caCertPath});
  // The apiserver's certificate: judged, and the audit line names it as verified.
  auto judged = call(&apiserver_, "POST", "/validate");
  ASSERT_TRUE(judged) << httplib::to_string(judged.error());
  EXPECT_EQ(judged->status, 200) << judged->body;
  // No certificate: refused before anything is judged or audited.
  auto anonymous = call(nullptr, "POST", "/validate");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 403) << anonymous->body;
  EXPECT_NE(messageOf(anonymous).find("presented no client certificate"), std::string::npos)
      << messageOf(anonymous);
  EXPECT_NE(messageOf(anonymous).find("--client-ca"), std::string::npos);
  // A certificate from another CA, with the very same name: refused.
  auto forged = call(&stranger_, "POST", "/validate");
  ASSERT_TRUE(forged) << "the handshake must finish, so the caller hears why";
  EXPECT_EQ(forged->status, 403) << forged->body;
  EXPECT_NE(messageOf(forged).find("did not verify"), std::string::npos) << messageOf(forged);
  // Probes and metrics need no certificate.
  auto health = call(nullptr, "GET", "/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto metrics = call(nullptr, "GET", "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);

  const auto records = audit();
  ASSERT_EQ(records.size(), 1u) << "only the verified caller's review is in the audit log";
  EXPECT_EQ(records[0]["caller"],
            (json{{"name", "kube-apiserver-webhook-client"}, {"verified", true}}));
}

TEST_F(ClientCertTest, NamesNarrowWhichCertificatesOfTheCaMaySpeak) {
  start({"--client-ca", tls_.caCertPath, "--client-cert-names", "kube-apiserver-webhook-client"});
  auto judged = call(&apiserver_, "POST", "/validate");
  ASSERT_TRUE(judged);
  EXPECT_EQ(judged->status, 200) << judged->body;
  // A kubelet's certificate comes from the same cluster CA but is not the apiserver.
  auto kubelet = call(&kubelet_, "POST", "/validate");
  ASSERT_TRUE(kubelet);
  EXPECT_EQ(kubelet->status, 403) << kubelet->body;
  EXPECT_NE(messageOf(kubelet).find("system:node:worker-1"), std::string::npos)
      << messageOf(kubelet);
  EXPECT_NE(messageOf(kubelet).find("--client-cert-names"), std::string::npos);
}

TEST_F(ClientCertTest, WithoutAClientCaTheAuditSaysTheCallerWasNotVerified) {
  start({});
  auto judged = call(&apiserver_, "POST", "/validate");
  ASSERT_TRUE(judged);
  EXPECT_EQ(judged->status, 200);
  auto anonymous = call(nullptr, "POST", "/validate");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 200);
  const auto records = audit();
  ASSERT_EQ(records.size(), 2u);
  for (const auto& r : records) {
    EXPECT_EQ(r["caller"]["verified"], false) << r.dump();
  }
}

// With --metrics-listen, /metrics moves to a port of its own (which the NetworkPolicy opens to
// the monitoring namespace only) and reviews stay on the main port.
TEST_F(ClientCertTest, MetricsOnTheirOwnPortAndReviewsOnlyOnTheMain) {
  start({"--client-ca", tls_.caCertPath, "--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(webhook_->process().waitForOutput("metrics on https://", 10s))
      << webhook_->process().stderrText();
  std::smatch m;
  const std::string err = webhook_->process().stderrText();
  ASSERT_TRUE(std::regex_search(err, m, std::regex(R"(metrics on https://127\.0\.0\.1:(\d+))")));
  const int metricsPort = std::stoi(m[1].str());
  ASSERT_NE(metricsPort, port_);
  auto scraped = call(nullptr, "GET", "/metrics", metricsPort);
  ASSERT_TRUE(scraped);
  EXPECT_EQ(scraped->status, 200);
  EXPECT_NE(scraped->body.find("stateguard_audit_lines_total"), std::string::npos);
  auto probe = call(nullptr, "GET", "/readyz", metricsPort);
  ASSERT_TRUE(probe);
  EXPECT_EQ(probe->status, 200);
  auto onMain = call(nullptr, "GET", "/metrics");
  ASSERT_TRUE(onMain);
  EXPECT_EQ(onMain->status, 404);
  EXPECT_NE(messageOf(onMain).find("--metrics-listen"), std::string::npos) << messageOf(onMain);
  auto review = call(&apiserver_, "POST", "/validate", metricsPort);
  ASSERT_TRUE(review);
  EXPECT_EQ(review->status, 404) << "a review was taken on the metrics port";
  auto judged = call(&apiserver_, "POST", "/validate");
  ASSERT_TRUE(judged);
  EXPECT_EQ(judged->status, 200);
}

TEST_F(ClientCertTest, UnreadableClientCaIsAClearStartupError) {
  writeText(dir_ + "/not-a-ca.pem", "hello\n");
  CommandResult r =
      runCommand(binaryPath("stateguard-webhook"),
                 {"--listen", "127.0.0.1:0", "--tls-cert", tls_.serverCertPath, "--tls-key",
                  tls_.serverKeyPath, "--cluster-state", sourcePath("examples/cluster-state.yaml"),
                  "--client-ca", dir_ + "/not-a-ca.pem"});
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_NE(r.err.find("--client-ca " + dir_ + "/not-a-ca.pem"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace stateguard::testing
