// The live cluster-state sources: kubeconfig / in-cluster configuration, the kube API client and
// the list+watch cache, against a fake apiserver that speaks the real wire format over TLS.

#include "core/watch_cache.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <thread>

#include "core/kube_client.h"
#include "core/log.h"
#include "tests/support/process.h"
#include "tests/support/test_apiserver.h"
#include "tests/support/tls_material.h"

namespace stateguard {
namespace {

using namespace std::chrono_literals;
using testing::TestApiServer;
using testing::TlsMaterial;

/// Polls `pred` until it holds or the timeout passes; returns the last answer.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

json meta(const std::string& ns, const std::string& name) {
  json m = {{"name", name}};
  if (!ns.empty()) m["namespace"] = ns;
  return json{{"metadata", m}};
}

json pv(const std::string& name) {
  json o = meta("", name);
  o["spec"] = {{"capacity", {{"storage", "1Gi"}}}, {"persistentVolumeReclaimPolicy", "Retain"}};
  return o;
}

json pvc(const std::string& ns, const std::string& name) {
  json o = meta(ns, name);
  o["spec"] = {{"volumeName", "pv-" + name}};
  return o;
}

json pod(const std::string& ns, const std::string& name) {
  json o = meta(ns, name);
  o["spec"] = {{"containers", json::array({{{"name", "app"}, {"image", "busybox"}}})}};
  return o;
}

/// One object of every watched kind (two pods).
void seed(TestApiServer& server) {
  server.add("PersistentVolume", pv("pv-a"));
  server.add("PersistentVolume", pv("pv-b"));
  server.add("PersistentVolumeClaim", pvc("default", "data-web-0"));
  server.add("Namespace", meta("", "default"));
  server.add("StatefulSet", meta("default", "web"));
  server.add("Pod", pod("default", "web-0"));
  server.add("Pod", pod("other", "job-1"));
  server.add("StorageClass", meta("", "longhorn"));
}

/// A fake apiserver per test; TLS material (a trusted and an unrelated CA) per suite.
class WatchCacheTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    log::setQuiet(true);
    dir_ = new std::string(testing::makeTempDir("sg-watch-cache"));
    auto tls = testing::makeTlsMaterial(*dir_ + "/tls");
    auto other = testing::makeTlsMaterial(*dir_ + "/other-ca");
    if (!tls.ok() || !other.ok()) {
      setupError_ = new std::string(!tls.ok() ? tls.error() : other.error());
      return;
    }
    tls_ = new TlsMaterial(tls.value());
    otherTls_ = new TlsMaterial(other.value());
  }
  static void TearDownTestSuite() {
    testing::removeTree(*dir_);
    delete dir_;
    delete tls_;
    delete otherTls_;
    delete setupError_;
    dir_ = nullptr;
    tls_ = otherTls_ = nullptr;
    setupError_ = nullptr;
  }

  void SetUp() override {
    ASSERT_EQ(setupError_, nullptr) << *setupError_;
    server_ = std::make_unique<TestApiServer>(*tls_);
    auto started = server_->start();
    ASSERT_TRUE(started.ok()) << started.error();
  }

  void TearDown() override {
    if (cache_) cache_->stop();
    cache_.reset();
    if (server_) server_->stop();
  }

  static WatchCacheOptions fast() {
    WatchCacheOptions o;
    o.initialBackoff = 10ms;
    o.maxBackoff = 200ms;
    return o;
  }

  WatchCachePtr start(KubeConfig config, WatchCacheOptions options = fast()) {
    auto c = startWatchCache(std::move(config), std::move(options));
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error());
    if (!c.ok()) return nullptr;
    cache_ = c.value();
    return cache_;
  }

  /// Starts a cache on the fake server and waits for it to sync.
  WatchCachePtr startReady(WatchCacheOptions options = fast()) {
    auto c = start(server_->kubeConfig(), std::move(options));
    if (c == nullptr) return nullptr;
    EXPECT_TRUE(c->waitReady(10s)) << "cache did not sync";
    return c;
  }

  /// Every reflector has its watch open.
  bool allWatching() { return server_->openWatches() == watchedKinds().size(); }

  std::map<std::string, size_t> listCounts() {
    std::map<std::string, size_t> counts;
    for (const auto& k : watchedKinds()) counts[k.storeKey()] = server_->listRequests(k.storeKey());
    return counts;
  }

  std::string writeFile(const std::string& rel, const std::string& text) {
    std::string path = *dir_ + "/" + rel;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    testing::writeText(path, text);
    return path;
  }

  static std::string* dir_;
  static TlsMaterial* tls_;
  static TlsMaterial* otherTls_;
  static std::string* setupError_;
  std::unique_ptr<TestApiServer> server_;
  WatchCachePtr cache_;
};

std::string* WatchCacheTest::dir_ = nullptr;
TlsMaterial* WatchCacheTest::tls_ = nullptr;
TlsMaterial* WatchCacheTest::otherTls_ = nullptr;
std::string* WatchCacheTest::setupError_ = nullptr;

// ---- initial list ----

TEST_F(WatchCacheTest, InitialListSyncsAllKindsAndReadyFlips) {
  seed(*server_);
  auto idle = std::make_shared<WatchCache>(KubeClient::create(server_->kubeConfig()).value());
  EXPECT_FALSE(idle->ready());  // not started: never ready

  auto cache = startReady();
  ASSERT_NE(cache, nullptr);
  EXPECT_TRUE(cache->ready());
  EXPECT_TRUE(cache->store()->ready());
  for (const auto& k : watchedKinds()) {
    WatchStats s = cache->stats(k.storeKey());
    EXPECT_TRUE(s.synced) << k.storeKey();
    EXPECT_EQ(s.lists, 1u) << k.storeKey();
    EXPECT_EQ(s.errors, 0u) << k.storeKey() << ": " << s.lastError;
    EXPECT_EQ(server_->listRequests(k.storeKey()), 1u) << k.storeKey();
  }
  EXPECT_EQ(cache->list("PersistentVolume").size(), 2u);
  EXPECT_EQ(cache->list("Pod").size(), 2u);
  EXPECT_EQ(cache->list("Pod", "default").size(), 1u);
  auto p = cache->get("Pod", "default", "web-0");
  ASSERT_NE(p, nullptr);
  // List items come without kind/apiVersion: the cache fills them in from the list.
  EXPECT_EQ((*p)["kind"], "Pod");
  EXPECT_EQ((*p)["apiVersion"], "v1");
  auto sts = cache->get("StatefulSet", "default", "web");
  ASSERT_NE(sts, nullptr);
  EXPECT_EQ((*sts)["apiVersion"], "apps/v1");
  auto sc = cache->get("StorageClass", "", "longhorn");
  ASSERT_NE(sc, nullptr);
  EXPECT_EQ((*sc)["apiVersion"], "storage.k8s.io/v1");
  EXPECT_NE(cache->get("PersistentVolumeClaim", "default", "data-web-0"), nullptr);
  EXPECT_NE(cache->get("Namespace", "", "default"), nullptr);
  EXPECT_EQ(cache->get("Pod", "default", "missing"), nullptr);
  EXPECT_EQ(cache->stats("Pod").resourceVersion, std::to_string(server_->resourceVersion()));
}

TEST_F(WatchCacheTest, ReadyWaitsForEveryKind) {
  seed(*server_);
  server_->failRequests("StorageClass", 403);
  auto cache = start(server_->kubeConfig());
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(eventually([&] {
    return cache->synced("Pod") && cache->synced("PersistentVolume") &&
           cache->stats("StorageClass").errors >= 2;
  }));
  EXPECT_FALSE(cache->ready());
  EXPECT_FALSE(cache->waitReady(50ms));
  EXPECT_NE(cache->stats("StorageClass").lastError.find("HTTP 403"), std::string::npos)
      << cache->stats("StorageClass").lastError;
  server_->failRequests("StorageClass", 0);
  EXPECT_TRUE(cache->waitReady(10s));
  EXPECT_NE(cache->get("StorageClass", "", "longhorn"), nullptr);
}

TEST_F(WatchCacheTest, OptionalKindWithoutItsCrdDoesNotHoldReadinessAndIsPickedUpLater) {
  seed(*server_);
  json backup = meta("velero", "nightly-1");
  backup["status"] = {{"phase", "Completed"}, {"completionTimestamp", "2026-11-20T02:00:00Z"}};
  server_->add(kVeleroBackup, backup);
  json lhBackup = meta("longhorn-system", "backup-1");
  server_->add(kLonghornBackup, lhBackup);
  // Velero is not installed (404); the cluster has no RBAC for VolumeSnapshots (403).
  server_->failRequests(kVeleroBackup, 404);
  server_->failRequests("VolumeSnapshot", 403);
  WatchCacheOptions options = fast();
  options.absentRecheck = 100ms;
  auto cache = startReady(options);
  ASSERT_NE(cache, nullptr);
  EXPECT_TRUE(cache->stats(kVeleroBackup).absent);
  EXPECT_TRUE(cache->stats("VolumeSnapshot").absent);
  EXPECT_FALSE(cache->stats(kLonghornBackup).absent);
  EXPECT_EQ(cache->list(kVeleroBackup).size(), 0u);
  // Same kind name, other group: kept apart by store key, each stamped with its own apiVersion.
  auto lh = cache->get(kLonghornBackup, "longhorn-system", "backup-1");
  ASSERT_NE(lh, nullptr);
  EXPECT_EQ((*lh)["kind"], "Backup");
  EXPECT_EQ((*lh)["apiVersion"], "longhorn.io/v1beta2");

  // Velero gets installed: the next look finds it, lists and watches it.
  server_->failRequests(kVeleroBackup, 0);
  ASSERT_TRUE(
      eventually([&] { return cache->get(kVeleroBackup, "velero", "nightly-1") != nullptr; }));
  EXPECT_FALSE(cache->stats(kVeleroBackup).absent);
  EXPECT_EQ((*cache->get(kVeleroBackup, "velero", "nightly-1"))["apiVersion"], "velero.io/v1");
  json second = meta("velero", "nightly-2");
  server_->add(kVeleroBackup, second);
  EXPECT_TRUE(eventually([&] { return cache->list(kVeleroBackup, "velero").size() == 2; }));
  EXPECT_TRUE(cache->ready());
}

TEST(ClusterStateFile, BackupKindsAreToldApartByTheirApiGroup) {
  auto store = loadClusterStateText(R"(
apiVersion: velero.io/v1
kind: Backup
metadata: {name: nightly, namespace: velero}
---
apiVersion: longhorn.io/v1beta2
kind: Backup
metadata: {name: backup-1, namespace: longhorn-system}
---
apiVersion: example.com/v1
kind: Backup
metadata: {name: unrelated, namespace: x}
---
kind: Pod
metadata: {name: no-api-version, namespace: default}
)",
                                    "state.yaml");
  ASSERT_TRUE(store.ok()) << store.error();
  EXPECT_NE(store.value()->get(kVeleroBackup, "velero", "nightly"), nullptr);
  EXPECT_NE(store.value()->get(kLonghornBackup, "longhorn-system", "backup-1"), nullptr);
  EXPECT_EQ(store.value()->size(kVeleroBackup), 1u);
  EXPECT_EQ(store.value()->size(kLonghornBackup), 1u);
  EXPECT_EQ(store.value()->size("Backup"), 0u);
  EXPECT_NE(store.value()->get("Pod", "default", "no-api-version"), nullptr);
}

TEST_F(WatchCacheTest, PaginatedListDeliversEveryObject) {
  for (int i = 0; i < 50; ++i) {
    server_->add("Pod", pod("ns-" + std::to_string(i % 3), "pod-" + std::to_string(i)));
  }
  WatchCacheOptions o = fast();
  o.pageLimit = 7;
  auto cache = startReady(o);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->store()->size("Pod"), 50u);
  EXPECT_EQ(server_->listRequests("Pod"), 8u);  // ceil(50 / 7) pages
  EXPECT_EQ(cache->stats("Pod").lists, 1u);
  EXPECT_EQ(cache->list("Pod", "ns-1").size(), 17u);
}

TEST_F(WatchCacheTest, ExpiredContinueTokenRestartsTheList) {
  for (int i = 0; i < 12; ++i) server_->add("PersistentVolume", pv("pv-" + std::to_string(i)));
  server_->expireContinueTokensOnce();  // only PersistentVolumes need a second page
  WatchCacheOptions o = fast();
  o.pageLimit = 5;
  auto cache = startReady(o);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->store()->size("PersistentVolume"), 12u);
  // First page, second page answered 410 Expired, then 3 pages from the start.
  EXPECT_EQ(server_->listRequests("PersistentVolume"), 5u);
  EXPECT_EQ(cache->stats("PersistentVolume").lists, 1u);
}

// ---- watch ----

// Issue 15: what the cache keeps of a listed and of a watched object is only what rules read
// (core/projection.h): managedFields and a Pod's status details never reach the store.
TEST_F(WatchCacheTest, ListedAndWatchedObjectsAreKeptProjected) {
  auto heavy = [](const std::string& name) {
    json p = pod("default", name);
    p["metadata"]["managedFields"] = json::array({{{"manager", "kubelet"}}});
    p["status"]["conditions"] = json::array({{{"type", "Ready"}}});
    p["spec"]["containers"] = json::array({{{"name", "app"}, {"image", "app:1"}, {"env", {1}}}});
    return p;
  };
  server_->add("Pod", heavy("listed"));
  auto cache = startReady();
  ASSERT_NE(cache, nullptr);
  server_->add("Pod", heavy("watched"));
  ASSERT_TRUE(eventually([&] { return cache->get("Pod", "default", "watched") != nullptr; }));
  for (const char* name : {"listed", "watched"}) {
    SCOPED_TRACE(name);
    auto p = cache->get("Pod", "default", name);
    ASSERT_NE(p, nullptr);
    EXPECT_FALSE((*p)["metadata"].contains("managedFields"));
    EXPECT_FALSE((*p)["status"].contains("conditions"));
    EXPECT_EQ((*p)["spec"]["containers"], json::parse(R"([{"name":"app","image":"app:1"}])"));
  }
}

TEST_F(WatchCacheTest, AddedModifiedDeletedEventsReachTheStore) {
  seed(*server_);
  auto cache = startReady();
  ASSERT_NE(cache, nullptr);
  auto lists = listCounts();

  server_->add("Pod", pod("default", "web-1"));
  json changed = pv("pv-a");
  changed["metadata"]["labels"] = {{"tier", "gold"}};
  server_->modify("PersistentVolume", changed);
  server_->remove("PersistentVolumeClaim", "default", "data-web-0");

  EXPECT_TRUE(eventually([&] { return cache->get("Pod", "default", "web-1") != nullptr; }));
  EXPECT_TRUE(eventually([&] {
    auto p = cache->get("PersistentVolume", "", "pv-a");
    return p != nullptr && p->value("/metadata/labels/tier"_json_pointer, "") == "gold";
  }));
  EXPECT_TRUE(eventually(
      [&] { return cache->get("PersistentVolumeClaim", "default", "data-web-0") == nullptr; }));
  auto p = cache->get("Pod", "default", "web-1");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ((*p)["kind"], "Pod");
  EXPECT_GE(cache->stats("Pod").events, 1u);
  EXPECT_EQ(listCounts(), lists);  // events, not re-lists
  EXPECT_TRUE(eventually([&] {
    return cache->stats("PersistentVolumeClaim").resourceVersion ==
           std::to_string(server_->resourceVersion());
  }));
}

TEST_F(WatchCacheTest, EventsSplitOverChunksOrSharingAChunkArrive) {
  auto cache = startReady();
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(eventually([&] { return allWatching(); }));
  const std::string rv = std::to_string(server_->resourceVersion());
  auto event = [&](const std::string& name) {
    return json{{"type", "ADDED"},
                {"object",
                 {{"kind", "Pod"},
                  {"apiVersion", "v1"},
                  {"metadata",
                   {{"name", name}, {"namespace", "default"}, {"resourceVersion", rv}}}}}}
               .dump() +
           "\n";
  };
  // Two events in one chunk.
  server_->injectWatchData("Pod", event("two-a") + event("two-b"));
  EXPECT_TRUE(eventually([&] { return cache->store()->size("Pod") == 2; }));
  // Every event cut into 7-byte chunks.
  server_->setWatchChunkSize(7);
  server_->add("Pod", pod("default", "split-1"));
  server_->add("Pod", pod("default", "split-2"));
  EXPECT_TRUE(eventually([&] { return cache->store()->size("Pod") == 4; }));
  EXPECT_NE(cache->get("Pod", "default", "split-2"), nullptr);
  EXPECT_EQ(cache->stats("Pod").errors, 0u) << cache->stats("Pod").lastError;
}

TEST_F(WatchCacheTest, DroppedWatchResumesFromLastResourceVersionWithoutRelist) {
  seed(*server_);
  auto cache = startReady();
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(eventually([&] { return allWatching(); }));
  auto lists = listCounts();

  // Streams break; the changes happen while the cache cannot watch.
  server_->pauseWatches();
  server_->add("Pod", pod("default", "web-1"));
  server_->remove("PersistentVolume", "", "pv-b");
  server_->add("Namespace", meta("", "team-a"));
  EXPECT_EQ(cache->get("Pod", "default", "web-1"), nullptr);
  server_->resumeWatches();

  EXPECT_TRUE(eventually([&] {
    return cache->get("Pod", "default", "web-1") != nullptr &&
           cache->get("PersistentVolume", "", "pv-b") == nullptr &&
           cache->get("Namespace", "", "team-a") != nullptr;
  }));
  EXPECT_EQ(listCounts(), lists);  // resumed from the resourceVersion: no re-list
  for (const auto& k : watchedKinds()) {
    EXPECT_GE(cache->stats(k.storeKey()).watchRestarts, 1u) << k.storeKey();
    EXPECT_EQ(cache->stats(k.storeKey()).relistsAfterGone, 0u) << k.storeKey();
  }

  // A plain drop, with a change right behind it.
  server_->dropWatches();
  server_->add("Pod", pod("default", "web-2"));
  EXPECT_TRUE(eventually([&] { return cache->get("Pod", "default", "web-2") != nullptr; }));
  EXPECT_EQ(listCounts(), lists);
}

TEST_F(WatchCacheTest, GoneErrorEventTriggersRelistAndTheStoreConverges) {
  seed(*server_);
  auto cache = startReady();
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(eventually([&] { return allWatching(); }));

  server_->pauseWatches();
  server_->remove("PersistentVolume", "", "pv-a");
  server_->add("PersistentVolume", pv("pv-c"));
  server_->compactHistory();  // the DELETED event is gone for good: only a list can tell
  server_->resumeWatches();

  EXPECT_TRUE(eventually([&] {
    return cache->get("PersistentVolume", "", "pv-a") == nullptr &&
           cache->get("PersistentVolume", "", "pv-c") != nullptr;
  }));
  WatchStats s = cache->stats("PersistentVolume");
  EXPECT_GE(s.relistsAfterGone, 1u);
  EXPECT_GE(s.lists, 2u);
  EXPECT_GE(server_->listRequests("PersistentVolume"), 2u);
  EXPECT_TRUE(cache->ready());
  // Watching again after the re-list.
  server_->add("PersistentVolume", pv("pv-d"));
  EXPECT_TRUE(eventually([&] { return cache->get("PersistentVolume", "", "pv-d") != nullptr; }));
}

TEST_F(WatchCacheTest, GoneHttpStatusTriggersRelistAndTheStoreConverges) {
  seed(*server_);
  server_->setGoneAsHttpStatus(true);
  auto cache = startReady();
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(eventually([&] { return allWatching(); }));

  server_->pauseWatches();
  server_->remove("Pod", "other", "job-1");
  server_->add("Pod", pod("other", "job-2"));
  server_->compactHistory();
  server_->resumeWatches();

  EXPECT_TRUE(eventually([&] {
    return cache->get("Pod", "other", "job-1") == nullptr &&
           cache->get("Pod", "other", "job-2") != nullptr;
  }));
  EXPECT_GE(cache->stats("Pod").relistsAfterGone, 1u);
  EXPECT_GE(server_->listRequests("Pod"), 2u);
  EXPECT_EQ(cache->stats("Pod").errors, 0u) << cache->stats("Pod").lastError;
}

TEST_F(WatchCacheTest, BookmarkKeepsTheResourceVersionFreshSoNoRelistIsNeeded) {
  seed(*server_);
  auto cache = startReady();
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(eventually([&] { return allWatching(); }));
  // Other kinds move the global resourceVersion past what the PV watch has seen.
  for (int i = 0; i < 3; ++i) server_->add("Pod", pod("default", "p" + std::to_string(i)));
  const std::string current = std::to_string(server_->resourceVersion());
  EXPECT_NE(cache->stats("PersistentVolume").resourceVersion, current);
  server_->sendBookmarks();
  ASSERT_TRUE(
      eventually([&] { return cache->stats("PersistentVolume").resourceVersion == current; }));
  EXPECT_GE(cache->stats("PersistentVolume").bookmarks, 1u);
  EXPECT_EQ(cache->stats("PersistentVolume").events, 0u);

  // History is compacted up to now: only a client that kept up through bookmarks can resume.
  server_->compactHistory();
  server_->dropWatches();
  ASSERT_TRUE(eventually([&] {
    return cache->stats("PersistentVolume").watchRestarts >= 1 &&
           server_->openWatches("PersistentVolume") == 1;
  }));
  server_->add("PersistentVolume", pv("pv-new"));
  EXPECT_TRUE(eventually([&] { return cache->get("PersistentVolume", "", "pv-new") != nullptr; }));
  EXPECT_EQ(cache->stats("PersistentVolume").relistsAfterGone, 0u);
  EXPECT_EQ(server_->listRequests("PersistentVolume"), 1u);
}

TEST_F(WatchCacheTest, ServerSideWatchTimeoutEndsNormallyAndIsRewatched) {
  seed(*server_);
  WatchCacheOptions o = fast();
  o.watchTimeoutSeconds = 1;
  auto cache = startReady(o);
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(eventually(
      [&] { return cache->stats("Pod").watchRestarts >= 1 && server_->watchRequests("Pod") >= 2; },
      8000ms));
  WatchStats s = cache->stats("Pod");
  EXPECT_EQ(s.errors, 0u) << s.lastError;
  EXPECT_EQ(s.relistsAfterGone, 0u);
  EXPECT_EQ(server_->listRequests("Pod"), 1u);
  server_->add("Pod", pod("default", "after-timeout"));
  EXPECT_TRUE(eventually([&] { return cache->get("Pod", "default", "after-timeout") != nullptr; }));
}

TEST_F(WatchCacheTest, MalformedWatchDataIsLoggedAndRewatchedNotACrash) {
  seed(*server_);
  auto cache = startReady();
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(eventually([&] { return allWatching(); }));

  // Each bad line ends the watch with an error; the cache watches again from its resourceVersion.
  for (const char* bad :
       {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"na\n", "[1,2,3]\n",
        "{\"type\":\"ADDED\"}\n", "{\"type\":\"EXPLODED\",\"object\":{}}\n",
        "{\"type\":\"ERROR\",\"object\":{\"code\":\"410\",\"reason\":7}}\n",
        "{\"type\":\"ERROR\",\"object\":{\"code\":500,\"message\":\"boom\"}}\n"}) {
    const uint64_t errors = cache->stats("Pod").errors;
    const size_t watches = server_->watchRequests("Pod");
    server_->injectWatchData("Pod", bad);
    EXPECT_TRUE(eventually([&] {
      return cache->stats("Pod").errors > errors && server_->watchRequests("Pod") > watches &&
             server_->openWatches("Pod") == 1;
    })) << bad;
  }
  EXPECT_NE(cache->stats("Pod").lastError.find("watch ERROR event: code 500: boom"),
            std::string::npos)
      << cache->stats("Pod").lastError;
  // An event without a name is ignored, the stream goes on.
  server_->injectWatchData("Pod", "{\"type\":\"ADDED\",\"object\":{\"metadata\":{}}}\n");

  server_->add("Pod", pod("default", "still-works"));
  EXPECT_TRUE(eventually([&] { return cache->get("Pod", "default", "still-works") != nullptr; }));
  EXPECT_EQ(server_->listRequests("Pod"), 1u);  // re-watched from the resourceVersion
  EXPECT_EQ(cache->store()->size("Pod"), 3u);
}

// ---- authentication and TLS failures ----

TEST_F(WatchCacheTest, WrongTokenIsNotReadyAndTheErrorIsLogged) {
  seed(*server_);
  KubeConfig config = server_->kubeConfig();
  config.token = "not-the-token";
  ::testing::internal::CaptureStderr();
  auto cache = start(config);
  ASSERT_NE(cache, nullptr);
  bool failed = eventually([&] { return cache->stats("PersistentVolume").errors >= 1; });
  cache->stop();
  std::string logged = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(failed);
  EXPECT_FALSE(cache->ready());
  EXPECT_NE(cache->stats("PersistentVolume").lastError.find("HTTP 401: Unauthorized"),
            std::string::npos)
      << cache->stats("PersistentVolume").lastError;
  EXPECT_NE(logged.find("HTTP 401"), std::string::npos) << logged;
  EXPECT_GE(server_->unauthorizedRequests(), 1u);
}

TEST_F(WatchCacheTest, WrongCaFailsTlsVerificationAndIsNotReady) {
  seed(*server_);
  KubeConfig config = server_->kubeConfig();
  config.caPem = otherTls_->caPem;
  auto cache = start(config);
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(eventually([&] { return cache->stats("Pod").errors >= 1; }));
  EXPECT_FALSE(cache->ready());
  EXPECT_NE(cache->stats("Pod").lastError.find("server certificate verification failed"),
            std::string::npos)
      << cache->stats("Pod").lastError;
  EXPECT_EQ(server_->listRequests("Pod"), 0u);  // never got past the handshake
}

TEST_F(WatchCacheTest, WithoutCaTheSystemStoreRejectsTheTestCa) {
  KubeConfig config = server_->kubeConfig();
  config.caPem.clear();
  auto client = KubeClient::create(config);
  ASSERT_TRUE(client.ok()) << client.error();
  auto r = client.value()->get("/api/v1/namespaces");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("verification failed"), std::string::npos) << r.error();
}

TEST_F(WatchCacheTest, ServerCertificateMustNameTheHost) {
  // By DNS name: the certificate has DNS:localhost besides IP:127.0.0.1.
  KubeConfig byName = server_->kubeConfig();
  byName.server = "https://localhost:" + std::to_string(server_->port());
  auto ok = KubeClient::create(byName).value()->get("/api/v1/namespaces");
  EXPECT_TRUE(ok.ok()) << ok.error();

  // Same CA, but a certificate issued for another host.
  auto elsewhere = testing::makeTlsMaterial(*dir_ + "/elsewhere", {"api.example.invalid"});
  ASSERT_TRUE(elsewhere.ok()) << elsewhere.error();
  TestApiServer server(elsewhere.value());
  ASSERT_TRUE(server.start().ok());
  auto r = KubeClient::create(server.kubeConfig()).value()->get("/api/v1/namespaces");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("IP address mismatch"), std::string::npos) << r.error();
  KubeConfig insecure = server.kubeConfig();
  insecure.insecureSkipVerify = true;
  auto skipped = KubeClient::create(insecure).value()->get("/api/v1/namespaces");
  EXPECT_TRUE(skipped.ok()) << skipped.error();
}

TEST_F(WatchCacheTest, InsecureSkipVerifyConnectsWithoutCa) {
  seed(*server_);
  KubeConfig config = server_->kubeConfig();
  config.caPem.clear();
  config.insecureSkipVerify = true;
  auto cache = start(config);
  ASSERT_NE(cache, nullptr);
  EXPECT_TRUE(cache->waitReady(10s));
}

TEST_F(WatchCacheTest, ClientCertificateAuthentication) {
  auto cert = testing::makeClientCertificate(*tls_, "client", "stateguard", "system:masters");
  ASSERT_TRUE(cert.ok()) << cert.error();
  testing::TestApiServerOptions mtls;
  mtls.requireClientCert = true;
  TestApiServer server(*tls_, mtls);
  ASSERT_TRUE(server.start().ok());
  seed(server);

  KubeConfig config = server.kubeConfig();
  config.token.clear();
  config.clientCertPem = cert.value().certPem;
  config.clientKeyPem = cert.value().keyPem;
  auto cache = start(config);
  ASSERT_NE(cache, nullptr);
  EXPECT_TRUE(cache->waitReady(10s));
  EXPECT_EQ(cache->store()->size("Pod"), 2u);
  cache->stop();

  KubeConfig noCert = server.kubeConfig();
  auto client = KubeClient::create(noCert);
  ASSERT_TRUE(client.ok());
  const size_t listed = server.listRequests("Pod");
  auto r = client.value()->get("/api/v1/pods");
  ASSERT_FALSE(r.ok());
  // TLS 1.3: the server's "certificate required" alert may come before or after our request.
  EXPECT_TRUE(r.error().find("certificate required") != std::string::npos ||
              r.error().find("connection closed") != std::string::npos)
      << r.error();
  EXPECT_EQ(server.listRequests("Pod"), listed);
}

// ---- KubeClient ----

TEST_F(WatchCacheTest, GetReturnsObjectsAndTheApiserverStatusMessage) {
  seed(*server_);
  auto client = KubeClient::create(server_->kubeConfig());
  ASSERT_TRUE(client.ok()) << client.error();
  auto p = client.value()->get("/api/v1/namespaces/default/pods/web-0");
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(p.value()["kind"], "Pod");
  auto v = client.value()->get("/api/v1/persistentvolumes/pv-a");
  ASSERT_TRUE(v.ok()) << v.error();
  EXPECT_EQ(v.value()["metadata"]["name"], "pv-a");
  auto s = client.value()->get("/apis/apps/v1/namespaces/default/statefulsets/web");
  ASSERT_TRUE(s.ok()) << s.error();

  auto missing = client.value()->get("/api/v1/namespaces/default/pods/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("HTTP 404: pods \"nope\" not found"), std::string::npos)
      << missing.error();
  EXPECT_NE(missing.error().find(server_->url()), std::string::npos) << missing.error();
  KubeResponse raw = client.value()->request("/api/v1/namespaces/default/pods/nope");
  EXPECT_EQ(raw.status, 404);
  EXPECT_EQ(raw.body["reason"], "NotFound");

  KubeConfig bad = server_->kubeConfig();
  bad.token = "nope";
  auto denied = KubeClient::create(bad).value()->get("/api/v1/pods");
  ASSERT_FALSE(denied.ok());
  EXPECT_NE(denied.error().find("HTTP 401: Unauthorized"), std::string::npos) << denied.error();
}

TEST_F(WatchCacheTest, WatchOutcomesAreDistinguishable) {
  seed(*server_);
  auto client = KubeClient::create(server_->kubeConfig()).value();
  const std::string rv = std::to_string(server_->resourceVersion());
  auto ignore = [](const std::string&, json) { return true; };

  // Server-side timeout: a clean end, with the events after the resourceVersion delivered.
  std::vector<std::string> seen;
  WatchResult ended = client->watch("/api/v1/pods", "1", 1, [&](const std::string& type, json o) {
    seen.push_back(type + " " + o["metadata"]["name"].get<std::string>());
    return true;
  });
  EXPECT_EQ(ended.outcome, WatchOutcome::kEnded) << ended.message;
  EXPECT_EQ(ended.httpStatus, 200);
  EXPECT_EQ(seen, (std::vector<std::string>{"ADDED web-0", "ADDED job-1"}));

  // A handler that has had enough.
  WatchResult stopped =
      client->watch("/api/v1/pods", "1", 30, [](const std::string&, json) { return false; });
  EXPECT_EQ(stopped.outcome, WatchOutcome::kStopped);

  // Dropped mid-stream.
  ASSERT_TRUE(eventually([&] { return server_->openWatches("Pod") == 0; }));
  std::optional<WatchResult> dropped;
  std::thread t([&] { dropped = client->watch("/api/v1/pods", rv, 30, ignore); });
  ASSERT_TRUE(eventually([&] { return server_->openWatches("Pod") == 1; }));
  server_->dropWatches();
  t.join();
  EXPECT_EQ(dropped->outcome, WatchOutcome::kDropped) << dropped->message;

  // Too old: 200 + ERROR event 410, or HTTP 410.
  server_->add("Pod", pod("default", "web-1"));
  server_->compactHistory();
  WatchResult goneEvent = client->watch("/api/v1/pods", rv, 30, ignore);
  EXPECT_EQ(goneEvent.outcome, WatchOutcome::kGoneEvent) << goneEvent.message;
  EXPECT_EQ(goneEvent.httpStatus, 200);
  EXPECT_NE(goneEvent.message.find("too old resource version"), std::string::npos);
  server_->setGoneAsHttpStatus(true);
  WatchResult goneHttp = client->watch("/api/v1/pods", rv, 30, ignore);
  EXPECT_EQ(goneHttp.outcome, WatchOutcome::kGoneHttp) << goneHttp.message;
  EXPECT_EQ(goneHttp.httpStatus, 410);

  // Other HTTP errors.
  server_->failRequests("Pod", 500);
  WatchResult failed = client->watch("/api/v1/pods", rv, 30, ignore);
  EXPECT_EQ(failed.outcome, WatchOutcome::kError);
  EXPECT_EQ(failed.httpStatus, 500);
  EXPECT_NE(failed.message.find("injected failure"), std::string::npos) << failed.message;
}

TEST_F(WatchCacheTest, KubeClientStopAbortsAnOpenWatchPromptly) {
  auto client = KubeClient::create(server_->kubeConfig()).value();
  std::optional<WatchResult> result;
  std::thread t([&] {
    result = client->watch("/api/v1/pods", "1", 60, [](const std::string&, json) { return true; });
  });
  ASSERT_TRUE(eventually([&] { return server_->openWatches("Pod") == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  client->stop();
  t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(result->outcome, WatchOutcome::kStopped);
  EXPECT_FALSE(client->get("/api/v1/pods").ok());  // stopped for good
}

TEST_F(WatchCacheTest, StopReturnsPromptlyWhileWatchesAreOpen) {
  seed(*server_);
  auto cache = startReady();
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(eventually([&] { return allWatching(); }));
  const auto t0 = std::chrono::steady_clock::now();
  cache->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  cache->stop();  // idempotent
}

TEST_F(WatchCacheTest, StopReturnsPromptlyWhileBackingOff) {
  KubeConfig config = server_->kubeConfig();
  server_->stop();  // nothing listens there any more: connection refused
  WatchCacheOptions o;
  o.initialBackoff = 5s;
  auto cache = start(config, o);
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(eventually([&] { return cache->stats("Pod").errors >= 1; }));
  EXPECT_NE(cache->stats("Pod").lastError.find("cannot connect"), std::string::npos)
      << cache->stats("Pod").lastError;
  const auto t0 = std::chrono::steady_clock::now();
  cache->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_FALSE(cache->ready());
}

TEST_F(WatchCacheTest, ServerUrlAndPemMaterialAreValidated) {
  KubeConfig c = server_->kubeConfig();
  auto expectError = [](KubeConfig config, const std::string& needle) {
    auto r = KubeClient::create(std::move(config));
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_NE(r.error().find(needle), std::string::npos) << r.error();
  };
  KubeConfig x = c;
  x.server = "http://127.0.0.1:8080";
  expectError(x, "plain http is not supported");
  x.server = "https://[::1";
  expectError(x, "unterminated");
  x.server = "https://127.0.0.1:99999";
  expectError(x, "invalid port");
  x.server = "ftp://host";
  expectError(x, "must start with https://");
  x = c;
  x.caPem = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
  expectError(x, "CA");
  x.caPem = "just text";
  expectError(x, "no PEM certificate");
  x = c;
  x.clientCertPem = tls_->serverCertPem;
  expectError(x, "given together");
  x.clientKeyPem = otherTls_->serverKeyPem;
  expectError(x, "does not match");
  x = c;
  x.server = "https://[::1]:6443/prefix/";
  EXPECT_TRUE(KubeClient::create(x).ok());
  EXPECT_EQ(urlEncode("a+b=/c d"), "a%2Bb%3D%2Fc%20d");
}

// ---- kubeconfig ----

TEST_F(WatchCacheTest, KubeconfigWithInlineDataDrivesACache) {
  seed(*server_);
  const std::string path = *dir_ + "/inline/kubeconfig";
  std::filesystem::create_directories(*dir_ + "/inline");
  ASSERT_TRUE(testing::writeKubeconfig(path, server_->kubeConfig(), "dev").ok());
  auto config = loadKubeconfig(path);
  ASSERT_TRUE(config.ok()) << config.error();
  EXPECT_EQ(config.value().server, server_->url());
  EXPECT_EQ(config.value().caPem, tls_->caPem);
  EXPECT_EQ(config.value().token, "test-token");
  EXPECT_FALSE(config.value().insecureSkipVerify);
  EXPECT_NE(config.value().source.find(path), std::string::npos);
  auto cache = start(config.value());
  ASSERT_NE(cache, nullptr);
  EXPECT_TRUE(cache->waitReady(10s));
}

TEST_F(WatchCacheTest, KubeconfigFilePathsAreRelativeToItsDirectory) {
  auto cert = testing::makeClientCertificate(*tls_, "dev-user", "dev");
  ASSERT_TRUE(cert.ok()) << cert.error();
  writeFile("rel/certs/ca.crt", tls_->caPem);
  writeFile("rel/certs/user.crt", cert.value().certPem);
  writeFile("rel/certs/user.key", cert.value().keyPem);
  writeFile("rel/token", "file-token\n");
  const std::string path = writeFile("rel/kubeconfig", R"(apiVersion: v1
kind: Config
current-context: b
clusters:
- name: c1
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority: certs/ca.crt
contexts:
- name: a
  context: {cluster: c1, user: nobody}
- name: b
  context:
    cluster: c1
    user: u1
    namespace: apps
users:
- name: u1
  user:
    tokenFile: token
    client-certificate: certs/user.crt
    client-key: certs/user.key
)");
  auto config = loadKubeconfig(path);
  ASSERT_TRUE(config.ok()) << config.error();
  EXPECT_EQ(config.value().server, "https://10.0.0.1:6443");
  EXPECT_EQ(config.value().caPem, tls_->caPem);
  EXPECT_EQ(config.value().token, "file-token");
  EXPECT_EQ(config.value().tokenFile, *dir_ + "/rel/token");
  EXPECT_EQ(config.value().clientCertPem, cert.value().certPem);
  EXPECT_EQ(config.value().clientKeyPem, cert.value().keyPem);
  EXPECT_TRUE(KubeClient::create(config.value()).ok());

  // Context "a" names a user that does not exist.
  auto a = loadKubeconfig(path, "a");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error(),
            "kubeconfig " + path + ": user \"nobody\" (used by context \"a\") not found");
}

TEST_F(WatchCacheTest, KubeconfigErrorsNameTheFileAndTheField) {
  const std::string base = R"(apiVersion: v1
kind: Config
current-context: main
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
contexts:
- name: main
  context: {cluster: c, user: u}
)";
  auto load = [&](const std::string& name, const std::string& users,
                  const std::string& context = "") {
    return loadKubeconfig(writeFile("errors/" + name, base + users), context);
  };
  auto ok = load("ok", "users:\n- name: u\n  user: {token: abc}\n");
  ASSERT_TRUE(ok.ok()) << ok.error();
  EXPECT_TRUE(ok.value().insecureSkipVerify);
  EXPECT_EQ(ok.value().token, "abc");

  auto missing = load("missing-context", "users: []\n", "foo");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error(),
            "kubeconfig " + *dir_ + "/errors/missing-context: context \"foo\" not found");

  auto exec = load("exec", R"(users:
- name: u
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: aws-iam-authenticator
)");
  ASSERT_FALSE(exec.ok());
  EXPECT_NE(exec.error().find("user \"u\" uses an exec credential plugin (aws-iam-authenticator)"),
            std::string::npos)
      << exec.error();
  EXPECT_NE(exec.error().find("not supported"), std::string::npos);
  EXPECT_NE(exec.error().find("token"), std::string::npos);

  auto provider =
      load("auth-provider", "users:\n- name: u\n  user:\n    auth-provider: {name: gcp}\n");
  ASSERT_FALSE(provider.ok());
  EXPECT_NE(provider.error().find("auth-provider \"gcp\""), std::string::npos) << provider.error();

  auto basic = load("basic", "users:\n- name: u\n  user: {username: a, password: b}\n");
  ASSERT_FALSE(basic.ok());
  EXPECT_NE(basic.error().find("basic authentication"), std::string::npos);

  auto badData = load("bad-data",
                      "users:\n- name: u\n  user: {client-certificate-data: '%%%', "
                      "client-key-data: 'eA=='}\n");
  ASSERT_FALSE(badData.ok());
  EXPECT_NE(badData.error().find("client-certificate-data is not valid base64"), std::string::npos)
      << badData.error();

  auto missingFile = load("missing-file", "users:\n- name: u\n  user: {tokenFile: nothere}\n");
  ASSERT_FALSE(missingFile.ok());
  EXPECT_NE(missingFile.error().find(*dir_ + "/errors/nothere"), std::string::npos)
      << missingFile.error();

  auto noServer = loadKubeconfig(writeFile("errors/no-server", R"(current-context: x
clusters: [{name: c, cluster: {}}]
contexts: [{name: x, context: {cluster: c}}]
)"));
  ASSERT_FALSE(noServer.ok());
  EXPECT_NE(noServer.error().find("cluster \"c\": no server set"), std::string::npos)
      << noServer.error();

  auto noCluster = loadKubeconfig(writeFile("errors/no-cluster", R"(current-context: x
contexts: [{name: x, context: {cluster: gone}}]
)"));
  ASSERT_FALSE(noCluster.ok());
  EXPECT_NE(noCluster.error().find("cluster \"gone\" (used by context \"x\") not found"),
            std::string::npos)
      << noCluster.error();

  auto noCurrent = loadKubeconfig(writeFile("errors/no-current", "clusters: []\n"));
  ASSERT_FALSE(noCurrent.ok());
  EXPECT_NE(noCurrent.error().find("no current-context"), std::string::npos);

  auto notYaml = loadKubeconfig(writeFile("errors/not-yaml", "clusters: [\n"));
  ASSERT_FALSE(notYaml.ok());
  EXPECT_NE(notYaml.error().find("kubeconfig"), std::string::npos);

  auto absent = loadKubeconfig(*dir_ + "/errors/absent");
  ASSERT_FALSE(absent.ok());
  EXPECT_NE(absent.error().find(*dir_ + "/errors/absent"), std::string::npos) << absent.error();
}

// ---- in-cluster ----

/// Sets environment variables for one test and restores them.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value == nullptr) {
      unsetenv(name);
    } else {
      setenv(name, value, 1);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

TEST_F(WatchCacheTest, InClusterConfigFromServiceAccountDirAndEnv) {
  seed(*server_);
  const std::string sa = *dir_ + "/sa";
  writeFile("sa/token", "sa-token-1\n");
  writeFile("sa/ca.crt", tls_->caPem);
  {
    ScopedEnv host("KUBERNETES_SERVICE_HOST", nullptr);
    ScopedEnv port("KUBERNETES_SERVICE_PORT", nullptr);
    auto missing = loadInClusterConfig(sa);
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.error().find("KUBERNETES_SERVICE_HOST"), std::string::npos);
  }
  {
    ScopedEnv host("KUBERNETES_SERVICE_HOST", "fd00:10:96::1");
    ScopedEnv port("KUBERNETES_SERVICE_PORT", "443");
    auto v6 = loadInClusterConfig(sa);
    ASSERT_TRUE(v6.ok()) << v6.error();
    EXPECT_EQ(v6.value().server, "https://[fd00:10:96::1]:443");
    EXPECT_TRUE(KubeClient::create(v6.value()).ok());
    auto noSa = loadInClusterConfig(*dir_ + "/no-such-sa");
    ASSERT_FALSE(noSa.ok());
    EXPECT_NE(noSa.error().find(*dir_ + "/no-such-sa/token"), std::string::npos) << noSa.error();
  }
  ScopedEnv host("KUBERNETES_SERVICE_HOST", "127.0.0.1");
  const std::string portText = std::to_string(server_->port());
  ScopedEnv port("KUBERNETES_SERVICE_PORT", portText.c_str());
  auto config = loadInClusterConfig(sa);
  ASSERT_TRUE(config.ok()) << config.error();
  EXPECT_EQ(config.value().server, server_->url());
  EXPECT_EQ(config.value().token, "sa-token-1");
  EXPECT_EQ(config.value().tokenFile, sa + "/token");
  EXPECT_EQ(config.value().caPem, tls_->caPem);

  // Bound service-account tokens rotate: a 401 makes the client re-read the file.
  server_->setToken("sa-token-1");
  auto cache = start(config.value());
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(cache->waitReady(10s));
  ASSERT_TRUE(eventually([&] { return allWatching(); }));
  server_->setToken("sa-token-2");
  writeFile("sa/token", "sa-token-2\n");
  server_->dropWatches();
  server_->add("Pod", pod("default", "after-rotation"));
  EXPECT_TRUE(
      eventually([&] { return cache->get("Pod", "default", "after-rotation") != nullptr; }));
  EXPECT_GE(server_->unauthorizedRequests(), 1u);
}

}  // namespace
}  // namespace stateguard
