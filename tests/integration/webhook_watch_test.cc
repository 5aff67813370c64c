// The real stateguard-webhook with --kubeconfig against the test API server: not ready until the
// cache syncs, decisions follow live changes without an API call per admission, and the cache
// survives a dropped watch and a 410 Gone.

#include <gtest/gtest.h>

#include <thread>

#include "core/cluster_state.h"
#include "core/timeutil.h"
#include "tests/support/process.h"
#include "tests/support/suite.h"
#include "tests/support/test_apiserver.h"
#include "tests/support/tls_material.h"
#include "tests/support/webhook_process.h"

namespace stateguard::testing {
namespace {

json boundPv(const std::string& name, const std::string& reclaim) {
  return {{"apiVersion", "v1"},
          {"kind", "PersistentVolume"},
          {"metadata", {{"name", name}}},
          {"spec",
           {{"capacity", {{"storage", "10Gi"}}},
            {"persistentVolumeReclaimPolicy", reclaim},
            {"claimRef", {{"namespace", "db"}, {"name", "data-" + name}}},
            {"csi", {{"driver", "driver.longhorn.io"}, {"volumeHandle", name}}}}},
          {"status", {{"phase", "Bound"}}}};
}

json claim(const std::string& name, const std::string& pv) {
  return {{"apiVersion", "v1"},
          {"kind", "PersistentVolumeClaim"},
          {"metadata", {{"name", name}, {"namespace", "db"}}},
          {"spec", {{"volumeName", pv}, {"storageClassName", "longhorn"}}},
          {"status", {{"phase", "Bound"}}}};
}

class WebhookWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = makeTempDir("sg-watch");
    auto tls = makeTlsMaterial(dir_ + "/api");
    ASSERT_TRUE(tls.ok()) << tls.error();
    api_ = std::make_unique<TestApiServer>(tls.value());
    ASSERT_TRUE(api_->start().ok());
    ASSERT_TRUE(writeKubeconfig(dir_ + "/kubeconfig", api_->kubeConfig()).ok());
    certs_ = makeDevCerts(dir_ + "/certs");
  }
  void TearDown() override {
    api_.reset();
    removeTree(dir_);
  }

  /// Polls until the webhook's verdict on deleting claim db/<name> is `allowed`.
  bool eventuallyClaimDeleteAllowed(const WebhookProcess& webhook, const json& pvc, bool allowed) {
    json review = makeReview("uid-" + std::to_string(counter_++), "DELETE", nullptr, pvc, nullptr,
                             false, nullptr);
    for (int i = 0; i < 300; ++i) {
      auto [status, body] = webhook.post(review.dump());
      if (status == 200 && json::parse(body)["response"]["allowed"] == allowed) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  std::string dir_;
  std::unique_ptr<TestApiServer> api_;
  DevCerts certs_;
  int counter_ = 0;
};

TEST_F(WebhookWatchTest, DecisionsFollowTheLiveClusterThroughDropsAndGone) {
  api_->add("PersistentVolume", boundPv("pv-a", "Delete"));
  api_->add("PersistentVolumeClaim", claim("data-a", "pv-a"));
  WebhookProcess webhook(dir_, certs_, {"--kubeconfig", dir_ + "/kubeconfig"});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
  bool ready = false;
  for (int i = 0; i < 250 && !ready; ++i) {
    ready = webhook.get("/readyz").first == 200;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(ready) << webhook.process().stderrText();
  for (const char* kind : {"PersistentVolume", "PersistentVolumeClaim", "Namespace", "StatefulSet",
                           "Pod", "StorageClass"}) {
    EXPECT_GE(api_->listRequests(kind), 1u) << kind;
  }

  // Synced: deleting data-a destroys pv-a (reclaim Delete).
  ASSERT_TRUE(eventuallyClaimDeleteAllowed(webhook, claim("data-a", "pv-a"), false));
  const size_t listsBefore = api_->listRequests("PersistentVolume");

  // A change arrives through the watch: the PV is now retained, the delete is allowed.
  api_->modify("PersistentVolume", boundPv("pv-a", "Retain"));
  ASSERT_TRUE(eventuallyClaimDeleteAllowed(webhook, claim("data-a", "pv-a"), true));

  // The watch drops; a change made meanwhile still arrives (resumed from the last resourceVersion).
  // The verdict is right at once (an allowance is confirmed live); the cache has the change once
  // a denial needs no API call.
  api_->dropWatches();
  api_->modify("PersistentVolume", boundPv("pv-a", "Delete"));
  bool cached = false;
  for (int i = 0; i < 300 && !cached; ++i) {
    const size_t gets = api_->objectGets();
    ASSERT_TRUE(eventuallyClaimDeleteAllowed(webhook, claim("data-a", "pv-a"), false));
    cached = api_->objectGets() == gets;
    if (!cached) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(cached) << "the watch never delivered the change";
  EXPECT_EQ(api_->listRequests("PersistentVolume"), listsBefore)
      << "a dropped watch needs no re-list";

  // History compacted while disconnected: the resumed watch gets 410 and the cache re-lists.
  api_->pauseWatches();
  api_->dropWatches();
  // A claim whose PV is unknown is judged as reclaim Delete (denied); once the re-list brings the
  // retained pv-b, deleting the claim is allowed.
  ASSERT_TRUE(eventuallyClaimDeleteAllowed(webhook, claim("data-b", "pv-b"), false));
  api_->add("PersistentVolume", boundPv("pv-b", "Retain"));
  api_->compactHistory();
  api_->resumeWatches();
  ASSERT_TRUE(eventuallyClaimDeleteAllowed(webhook, claim("data-b", "pv-b"), true))
      << "pv-b must be known after the re-list";
  EXPECT_GT(api_->listRequests("PersistentVolume"), listsBefore) << webhook.process().stderrText();

  // The webhook stayed ready throughout and shuts down cleanly.
  EXPECT_EQ(webhook.get("/readyz").first, 200);
  EXPECT_EQ(webhook.process().stop(), 0);
}

TEST_F(WebhookWatchTest, DenialsBecomeRateLimitedEventsButDryRunsDoNot) {
  api_->add("PersistentVolume", boundPv("pv-a", "Delete"));
  api_->add("PersistentVolumeClaim", claim("data-a", "pv-a"));
  WebhookProcess webhook(dir_, certs_, {"--kubeconfig", dir_ + "/kubeconfig"});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
  ASSERT_TRUE(eventuallyClaimDeleteAllowed(webhook, claim("data-a", "pv-a"), false));

  // A dry run is judged but leaves no trace in the cluster.
  json dry =
      makeReview("dry-1", "DELETE", nullptr, claim("data-a", "pv-a"), nullptr, true, nullptr);
  ASSERT_FALSE(json::parse(webhook.post(dry.dump()).second)["response"]["allowed"].get<bool>());

  // More denials of the same object: still one event (rate limit per object and reason).
  for (int i = 0; i < 3; ++i) {
    json review = makeReview("again-" + std::to_string(i), "DELETE", nullptr,
                             claim("data-a", "pv-a"), nullptr, false, nullptr);
    ASSERT_FALSE(
        json::parse(webhook.post(review.dump()).second)["response"]["allowed"].get<bool>());
  }
  std::vector<json> events;
  for (int i = 0; i < 250 && events.empty(); ++i) {
    events = api_->events();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(events.size(), 1u);
  const json& e = events.front();
  EXPECT_EQ(e["metadata"]["namespace"], "db");
  EXPECT_EQ(e["involvedObject"]["kind"], "PersistentVolumeClaim");
  EXPECT_EQ(e["involvedObject"]["name"], "data-a");
  EXPECT_EQ(e["reason"], "StateguardDenied");
  EXPECT_EQ(e["type"], "Warning");
  EXPECT_NE(e["message"].get<std::string>().find("PV pv-a"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(api_->events().size(), 1u);
  auto metrics = webhook.get("/metrics").second;
  EXPECT_NE(metrics.find("stateguard_events_posted_total 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("stateguard_events_suppressed_total 3"), std::string::npos) << metrics;

  // The audit log marks the dry run.
  bool sawDryRun = false;
  for (const auto& r : webhook.auditRecords())
    sawDryRun |= r["uid"] == "dry-1" && r["dryRun"] == true;
  EXPECT_TRUE(sawDryRun);
}

/// POSTs a review; returns the response object.
json answer(const WebhookProcess& webhook, const json& review) {
  auto [status, body] = webhook.post(review.dump());
  EXPECT_EQ(status, 200) << body;
  return status == 200 ? json::parse(body)["response"] : json::object();
}

bool waitReady(WebhookProcess& webhook) {
  for (int i = 0; i < 250; ++i) {
    if (webhook.get("/readyz").first == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Issue 12, item 5: a PV patched from Retain to Delete, then its claim deleted milliseconds later,
// before the watch delivers the patch. The cache says Retain (allowed); the allowance destroys
// data, so it is confirmed with one GET and refused. Denials and requests that read no lagging
// state cost no API call; a confirmation that cannot be read refuses instead of allowing.
TEST_F(WebhookWatchTest, AllowancesThatDestroyDataAreConfirmedLiveAndNothingElse) {
  api_->add("PersistentVolume", boundPv("pv-a", "Retain"));
  api_->add("PersistentVolumeClaim", claim("data-a", "pv-a"));
  api_->add("PersistentVolume", boundPv("pv-d", "Delete"));
  WebhookProcess webhook(dir_, certs_, {"--kubeconfig", dir_ + "/kubeconfig"});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
  ASSERT_TRUE(waitReady(webhook)) << webhook.process().stderrText();
  auto deleteClaim = [&](const std::string& name, const std::string& pv) {
    return answer(webhook, makeReview("del-" + std::to_string(counter_++), "DELETE", nullptr,
                                      claim(name, pv), nullptr, false, nullptr));
  };

  // Retained in the cache and in the API: allowed, after one GET of the PV.
  size_t gets = api_->objectGets();
  EXPECT_TRUE(deleteClaim("data-a", "pv-a")["allowed"].get<bool>());
  EXPECT_EQ(api_->objectGets(), gets + 1);

  // The watch lags: the patch to Delete has not reached the cache. Still refused.
  api_->pauseWatches();
  api_->dropWatches();
  api_->modify("PersistentVolume", boundPv("pv-a", "Delete"));
  gets = api_->objectGets();
  json refused = deleteClaim("data-a", "pv-a");
  EXPECT_FALSE(refused["allowed"].get<bool>());
  EXPECT_NE(refused["status"]["message"].get<std::string>().find("PV pv-a"), std::string::npos)
      << refused.dump();
  EXPECT_EQ(api_->objectGets(), gets + 1);

  // A denial from the cache, and requests that read nothing that lags: no API call.
  gets = api_->objectGets();
  EXPECT_FALSE(deleteClaim("data-d", "pv-d")["allowed"].get<bool>());
  json labelled = boundPv("pv-d", "Delete");
  labelled["metadata"]["labels"] = {{"team", "db"}};
  EXPECT_TRUE(answer(webhook, makeReview("upd", "UPDATE", labelled, boundPv("pv-d", "Delete"),
                                         nullptr, false, nullptr))["allowed"]
                  .get<bool>());
  EXPECT_EQ(api_->objectGets(), gets);
  // A StatefulSet rollout and a scale-up destroy nothing: judged from the cache alone.
  json sts = {{"apiVersion", "apps/v1"},
              {"kind", "StatefulSet"},
              {"metadata", {{"name", "web"}, {"namespace", "db"}}},
              {"spec",
               {{"replicas", 2},
                {"volumeClaimTemplates", json::array({{{"metadata", {{"name", "data"}}}}})},
                {"template", {{"spec", {{"containers", json::array({{{"image", "a:1"}}})}}}}}}}};
  json rolled = sts;
  rolled["spec"]["template"]["spec"]["containers"][0]["image"] = "a:2";
  rolled["spec"]["replicas"] = 3;
  const size_t claimLists = api_->listRequests("PersistentVolumeClaim");
  EXPECT_TRUE(
      answer(webhook, makeReview("roll", "UPDATE", rolled, sts, nullptr, false, nullptr))["allowed"]
          .get<bool>());
  EXPECT_EQ(api_->objectGets(), gets);
  EXPECT_EQ(api_->listRequests("PersistentVolumeClaim"), claimLists);

  // The API cannot confirm: what the cache would allow is refused, saying why.
  api_->modify("PersistentVolume", boundPv("pv-a", "Retain"));
  api_->failRequests("PersistentVolume", 500);
  json cannot = deleteClaim("data-a", "pv-a");
  EXPECT_FALSE(cannot["allowed"].get<bool>());
  EXPECT_EQ(cannot["status"]["code"], 503);
  EXPECT_NE(cannot["status"]["message"].get<std::string>().find("confirmed from the API server"),
            std::string::npos)
      << cannot.dump();
  api_->failRequests("PersistentVolume", 0);
  api_->resumeWatches();

  auto metrics = webhook.get("/metrics").second;
  EXPECT_NE(metrics.find("stateguard_live_confirmations_total 3"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("stateguard_cache_silence_seconds"), std::string::npos) << metrics;
}

// Issue 12, item 6: a denial in a namespace being deleted has nowhere to put its Event; the
// webhook neither retries nor logs it at every denial.
TEST_F(WebhookWatchTest, NoEventsIntoANamespaceBeingDeleted) {
  api_->add("Namespace",
            {{"apiVersion", "v1"},
             {"kind", "Namespace"},
             {"metadata", {{"name", "db"}, {"deletionTimestamp", "2026-01-01T00:00:00Z"}}},
             {"status", {{"phase", "Terminating"}}}});
  api_->add("PersistentVolume", boundPv("pv-a", "Delete"));
  WebhookProcess webhook(dir_, certs_, {"--kubeconfig", dir_ + "/kubeconfig"});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
  ASSERT_TRUE(waitReady(webhook)) << webhook.process().stderrText();
  // Refused for a person (the namespace controller would pass: see the pvc-delete suite).
  json r = answer(webhook, makeReview("in-terminating", "DELETE", nullptr, claim("data-a", "pv-a"),
                                      nullptr, false, nullptr));
  ASSERT_FALSE(r["allowed"].get<bool>());
  std::string metrics;
  for (int i = 0; i < 250; ++i) {
    metrics = webhook.get("/metrics").second;
    if (metrics.find("stateguard_events_suppressed_total 1") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(metrics.find("stateguard_events_suppressed_total 1"), std::string::npos) << metrics;
  EXPECT_TRUE(api_->events().empty());
  EXPECT_EQ(webhook.process().stderrText().find("could not record"), std::string::npos)
      << webhook.process().stderrText();
}

// Issue 12, item 6: /readyz says so when the cache has not heard from the apiserver for longer
// than --max-cache-silence, and recovers once it hears again.
TEST_F(WebhookWatchTest, ReadinessFailsWhenTheCacheHearsNothing) {
  WebhookProcess webhook(dir_, certs_, {"--kubeconfig", dir_ + "/kubeconfig"},
                         {"--max-cache-silence", "1"});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
  ASSERT_TRUE(waitReady(webhook)) << webhook.process().stderrText();
  api_->pauseWatches();
  api_->dropWatches();
  std::pair<int, std::string> ready;
  for (int i = 0; i < 200; ++i) {
    ready = webhook.get("/readyz");
    if (ready.first == 503) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(ready.first, 503);
  EXPECT_NE(ready.second.find("no word from the apiserver"), std::string::npos) << ready.second;
  api_->resumeWatches();
  for (int i = 0; i < 250; ++i) {
    api_->sendBookmarks();
    ready = webhook.get("/readyz");
    if (ready.first == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(ready.first, 200) << ready.second;
  EXPECT_NE(webhook.process().stop(), -1);
}

json veleroBackup(const std::string& name, const std::string& phase, Clock::time_point done) {
  return {{"apiVersion", "velero.io/v1"},
          {"kind", "Backup"},
          {"metadata", {{"name", name}, {"namespace", "velero"}}},
          {"spec", {{"includedNamespaces", {"db"}}}},
          {"status", {{"phase", phase}, {"completionTimestamp", formatRfc3339(done)}}}};
}

// Rule backup-freshness reads backups from the watch cache: Velero backups of different ages and
// states arrive by watch events and change the verdict, with no API request per admission; a
// kind whose CRD is not installed (Longhorn here) does not keep the webhook unready.
TEST_F(WebhookWatchTest, BackupFreshnessFollowsBackupsFromTheWatchCache) {
  using std::chrono::hours;
  const auto now = Clock::now();
  api_->add("PersistentVolume", boundPv("pv-a", "Delete"));
  api_->add("PersistentVolumeClaim", claim("data-pv-a", "pv-a"));
  api_->add(kVeleroBackup, veleroBackup("old-good", "Completed", now - hours(72)));
  api_->add(kVeleroBackup, veleroBackup("recent-failed", "Failed", now - hours(2)));
  api_->add(kVeleroBackup, veleroBackup("recent-partial", "PartiallyFailed", now - hours(1)));
  api_->failRequests(kLonghornBackup, 404);
  writeText(dir_ + "/policy.yaml", R"(apiVersion: stateguard.io/v1alpha1
kind: Policy
rules:
  pvc-delete: "off"
  backup-freshness: {mode: enforce, params: {maxAge: 24h}}
)");
  WebhookProcess webhook(dir_, certs_, {"--kubeconfig", dir_ + "/kubeconfig"},
                         {"--policy", dir_ + "/policy.yaml"});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
  const json pvc = claim("data-pv-a", "pv-a");
  ASSERT_TRUE(eventuallyClaimDeleteAllowed(webhook, pvc, false)) << webhook.process().stderrText();
  bool ready = false;
  for (int i = 0; i < 250 && !ready; ++i) {
    ready = webhook.get("/readyz").first == 200;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(ready) << "an absent CRD must not hold readiness: " << webhook.process().stderrText();

  json review = makeReview("fresh-1", "DELETE", nullptr, pvc, nullptr, false, nullptr);
  const json denied = json::parse(webhook.post(review.dump()).second)["response"];
  const std::string message = denied["status"]["message"].get<std::string>();
  EXPECT_NE(message.find("Velero Backup velero/old-good"), std::string::npos) << message;
  EXPECT_NE(message.find("(3d old)"), std::string::npos) << message;
  EXPECT_NE(message.find("a newer Velero Backup velero/recent-partial did not count "
                         "(PartiallyFailed"),
            std::string::npos)
      << message;

  // Admissions are answered from the cache: many reviews, no further list or watch request.
  const size_t lists = api_->listRequests(kVeleroBackup);
  const size_t watches = api_->watchRequests(kVeleroBackup);
  for (int i = 0; i < 20; ++i) {
    json r =
        makeReview("again-" + std::to_string(i), "DELETE", nullptr, pvc, nullptr, false, nullptr);
    ASSERT_EQ(webhook.post(r.dump()).first, 200);
  }
  EXPECT_EQ(api_->listRequests(kVeleroBackup), lists);
  EXPECT_EQ(api_->watchRequests(kVeleroBackup), watches);

  // A backup that completes now arrives by a watch event: the deletion is allowed.
  api_->add(kVeleroBackup, veleroBackup("just-now", "Completed", Clock::now()));
  EXPECT_TRUE(eventuallyClaimDeleteAllowed(webhook, pvc, true));
  // And when it is deleted (expired), the verdict goes back.
  api_->remove(kVeleroBackup, "velero", "just-now");
  EXPECT_TRUE(eventuallyClaimDeleteAllowed(webhook, pvc, false));
  EXPECT_NE(webhook.process().stderrText().find("CRD not installed"), std::string::npos)
      << webhook.process().stderrText();
}

TEST_F(WebhookWatchTest, NotReadyWhileTheApiRefusesIt) {
  api_->setToken("another-token");  // the kubeconfig's token is now wrong: 401 for every list
  WebhookProcess webhook(dir_, certs_, {"--kubeconfig", dir_ + "/kubeconfig"});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto [status, body] = webhook.get("/readyz");
  EXPECT_EQ(status, 503);
  EXPECT_NE(body.find("not synced"), std::string::npos);
  EXPECT_TRUE(webhook.process().waitForOutput("401", std::chrono::seconds(5)))
      << webhook.process().stderrText();
  EXPECT_NE(webhook.get("/metrics").second.find("stateguard_cluster_state_ready 0"),
            std::string::npos);
}

}  // namespace
}  // namespace stateguard::testing
