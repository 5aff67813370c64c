// Every rule suite case, sent over real TLS to the real stateguard-webhook binary started with
// the suite's cluster state (and the case's policy), with the audit log checked per decision.

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <thread>

#include "tests/support/suite.h"
#include "tests/support/webhook_process.h"

namespace stateguard::testing {
namespace {

class WebhookRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = makeTempDir("sg-rules");
    certs_ = makeDevCerts(dir_ + "/certs");
  }
  void TearDown() override { removeTree(dir_); }
  std::string dir_;
  DevCerts certs_;
};

TEST_F(WebhookRulesTest, EverySuiteCaseOverTls) {
  size_t checked = 0;
  int group = 0;
  for (const Suite& suite : loadSuites()) {
    // One webhook per (suite, policy): the policy is a start-up file, the state is the suite's.
    std::map<std::string, std::vector<const SuiteCase*>> byPolicy;
    for (const auto& c : suite.cases)
      byPolicy[c.policy.is_null() ? "" : c.policy.dump()].push_back(&c);
    for (const auto& [policyText, cases] : byPolicy) {
      const std::string gdir = dir_ + "/g" + std::to_string(group++);
      std::filesystem::create_directories(gdir);
      writeText(gdir + "/state.json",
                json{{"apiVersion", "v1"}, {"kind", "List"}, {"items", suite.state}}.dump());
      std::vector<std::string> extra;
      if (!policyText.empty()) {
        writeText(gdir + "/policy.yaml", policyText);  // JSON is YAML
        extra = {"--policy", gdir + "/policy.yaml"};
      }
      WebhookProcess webhook(gdir, certs_, {"--cluster-state", gdir + "/state.json"}, extra);
      ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
      for (const SuiteCase* c : cases) {
        SCOPED_TRACE(suite.path + ": " + c->name);
        auto [status, body] = webhook.post(c->review.dump());
        ASSERT_EQ(status, 200) << body;
        EXPECT_EQ(checkResponse(*c, json::parse(body)), "");
        ++checked;
      }
      // One audit line per decision, in order, carrying the uid, verdict and dry-run flag.
      auto records = webhook.auditRecords();
      ASSERT_EQ(records.size(), cases.size());
      for (size_t i = 0; i < cases.size(); ++i) {
        const json& req = cases[i]->review["request"];
        SCOPED_TRACE(cases[i]->name);
        EXPECT_EQ(records[i]["uid"], req["uid"]);
        EXPECT_EQ(records[i]["operation"], req["operation"]);
        EXPECT_EQ(records[i]["user"], req["userInfo"]["username"]);
        EXPECT_EQ(records[i]["dryRun"], req["dryRun"]);
        if (!cases[i]->expect.verdict.empty()) {
          EXPECT_EQ(records[i]["verdict"], cases[i]->expect.verdict);
        }
        EXPECT_EQ(records[i]["breakGlass"], records[i]["verdict"] == "break-glass");
        if (records[i]["verdict"] == "break-glass") {
          EXPECT_FALSE(records[i].value("breakGlassReason", "").empty());
        }
      }
    }
  }
  EXPECT_GT(checked, 50u);
}

// Replaces a file in one step, as a ConfigMap volume update does (no half-written reads).
void replaceFile(const std::string& path, const std::string& text) {
  writeText(path + ".tmp", text);
  std::filesystem::rename(path + ".tmp", path);
}

TEST_F(WebhookRulesTest, PolicyReloadsAndKeepsLastGoodOnError) {
  const std::string policy = dir_ + "/policy.yaml";
  replaceFile(policy, "rules:\n  pv-delete: enforce\n");
  WebhookProcess webhook(dir_, certs_,
                         {"--cluster-state", sourcePath("examples/cluster-state.yaml")},
                         {"--policy", policy, "--policy-poll-ms", "50"});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
  const std::string review = readText(sourcePath("examples/reviews/delete-bound-pv.json"));
  auto allowed = [&] {
    return json::parse(webhook.post(review).second)["response"]["allowed"].get<bool>();
  };
  ASSERT_FALSE(allowed());

  auto waitFor = [&](bool want) {
    for (int i = 0; i < 200; ++i) {
      if (allowed() == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  };
  replaceFile(policy, "rules:\n  pv-delete: warn\n");
  ASSERT_TRUE(waitFor(true)) << "policy change to warn was not picked up";
  auto warned = json::parse(webhook.post(review).second);
  EXPECT_FALSE(warned["response"]["warnings"].empty());

  replaceFile(policy, "rules:\n  pv-delete: maybe\n");
  ASSERT_TRUE(
      webhook.process().waitForOutput("keeping the last good policy", std::chrono::seconds(5)));
  EXPECT_NE(webhook.process().stderrText().find("not one of enforce, warn, audit, off"),
            std::string::npos);
  EXPECT_TRUE(allowed()) << "an invalid policy must not replace the last good one";

  replaceFile(policy, "rules:\n  pv-delete: enforce\n");
  ASSERT_TRUE(waitFor(false));
  auto metrics = webhook.get("/metrics").second;
  EXPECT_NE(metrics.find("stateguard_policy_reload_failures_total 1"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("stateguard_admission_requests_total{rule=\"pv-delete\",verdict=\"deny\","
                         "operation=\"DELETE\"}"),
            std::string::npos);
}

TEST_F(WebhookRulesTest, InvalidPolicyAtStartIsRefusedWithTheReason) {
  writeText(dir_ + "/bad.yaml", "rules:\n  no-such-rule: enforce\n");
  ChildProcess p(binaryPath("stateguard-webhook"),
                 {"--listen", "127.0.0.1:0", "--tls-cert", certs_.tlsCert, "--tls-key",
                  certs_.tlsKey, "--cluster-state", sourcePath("examples/cluster-state.yaml"),
                  "--policy", dir_ + "/bad.yaml"},
                 dir_);
  EXPECT_EQ(p.wait(std::chrono::seconds(10)), 2);
  EXPECT_NE(p.stderrText().find("unknown rule \"no-such-rule\""), std::string::npos)
      << p.stderrText();
}

TEST_F(WebhookRulesTest, HealthReadyAndMetrics) {
  WebhookProcess webhook(dir_, certs_,
                         {"--cluster-state", sourcePath("examples/cluster-state.yaml")});
  ASSERT_TRUE(webhook.started());
  EXPECT_EQ(webhook.get("/healthz").first, 200);
  EXPECT_EQ(webhook.get("/readyz").first, 200);
  webhook.post(readText(sourcePath("examples/reviews/delete-bound-pv.json")));
  auto [status, metrics] = webhook.get("/metrics");
  EXPECT_EQ(status, 200);
  EXPECT_NE(metrics.find("stateguard_admission_duration_seconds_count 1"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("stateguard_cluster_state_ready 1"), std::string::npos);
}

TEST_F(WebhookRulesTest, ServingCertificateHasServiceSansAndChainsToCa) {
  auto r = runCommand("/usr/bin/openssl",
                      {"x509", "-in", certs_.tlsCert, "-noout", "-ext", "subjectAltName"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  for (const char* san :
       {"DNS:stateguard-webhook.stateguard-system.svc", "DNS:stateguard-webhook.stateguard-system",
        "DNS:stateguard-webhook.stateguard-system.svc.cluster.local"}) {
    EXPECT_NE(r.out.find(san), std::string::npos) << r.out;
  }
  auto v = runCommand("/usr/bin/openssl", {"verify", "-CAfile", certs_.caCert, certs_.tlsCert});
  EXPECT_EQ(v.exitCode, 0) << v.out << v.err;
  // The script prints the caBundle: the base64 of ca.crt, reusing the existing CA.
  auto again = runCommand("/bin/bash", {sourcePath("certs/gen-certs.sh"), "--out", certs_.dir});
  ASSERT_EQ(again.exitCode, 0);
  auto b64 = runCommand("/usr/bin/base64", {"-w0", certs_.caCert});
  EXPECT_EQ(again.out, b64.out + "\n");
}

TEST_F(WebhookRulesTest, StateguardctlReviewMatchesTheWebhook) {
  const std::string state = sourcePath("examples/cluster-state.yaml");
  auto denied = runCommand(
      binaryPath("stateguardctl"),
      {"review", "--cluster-state", state, sourcePath("examples/reviews/delete-bound-pv.json")});
  EXPECT_EQ(denied.exitCode, 1) << denied.err;
  auto response = json::parse(denied.out);
  EXPECT_FALSE(response["response"]["allowed"].get<bool>());
  EXPECT_EQ(response["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");

  WebhookProcess webhook(dir_, certs_, {"--cluster-state", state});
  ASSERT_TRUE(webhook.started());
  auto [status, body] = webhook.post(readText(sourcePath("examples/reviews/delete-bound-pv.json")));
  EXPECT_EQ(json::parse(body), response) << "CLI and webhook must give the same answer";

  // From stdin, with a policy that only warns: allowed, exit 0.
  writeText(dir_ + "/warn.yaml", "rules: {pv-delete: warn}\n");
  auto warned =
      runCommand(binaryPath("stateguardctl"),
                 {"review", "--policy", dir_ + "/warn.yaml", "--cluster-state", state, "-"},
                 readText(sourcePath("examples/reviews/delete-bound-pv.json")));
  EXPECT_EQ(warned.exitCode, 0) << warned.err;
  EXPECT_TRUE(json::parse(warned.out)["response"]["allowed"].get<bool>());

  auto bad = runCommand(binaryPath("stateguardctl"), {"review", "-"}, "{\"apiVersion\": 3}");
  EXPECT_EQ(bad.exitCode, 2);
  EXPECT_NE(bad.err.find("apiVersion must be a string"), std::string::npos) << bad.err;
}

// By default the webhook writes audit lines in batches (--audit-flush-ms 5): under concurrent
// load every decision is still in the log once the process has stopped, each line whole.
TEST_F(WebhookRulesTest, BatchedAuditLinesAreAllWrittenByShutdown) {
  WebhookProcess webhook(dir_, certs_,
                         {"--cluster-state", sourcePath("examples/cluster-state.yaml")},
                         {"--audit-flush-ms", "200"});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
  const std::string body = readText(sourcePath("examples/reviews/delete-bound-pv.json"));
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      for (int i = 0; i < 25; ++i) EXPECT_EQ(webhook.post(body).first, 200);
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(webhook.process().stop(), 0);
  const auto records = webhook.auditRecords();
  EXPECT_EQ(records.size(), 100u) << "a batched line was lost at shutdown";
  for (const auto& r : records) EXPECT_EQ(r["verdict"], "deny");

  auto bad =
      runCommand(binaryPath("stateguard-webhook"),
                 {"--tls-cert", certs_.tlsCert, "--tls-key", certs_.tlsKey, "--cluster-state",
                  sourcePath("examples/cluster-state.yaml"), "--audit-flush-ms", "soon"});
  EXPECT_EQ(bad.exitCode, 2);
  EXPECT_NE(bad.err.find("--audit-flush-ms must be a number of milliseconds"), std::string::npos)
      << bad.err;
}

}  // namespace
}  // namespace stateguard::testing
