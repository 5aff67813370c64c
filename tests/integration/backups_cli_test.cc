// stateguardctl backups through the real binary: newest good backup per claim from a state file
// and from a live cluster (test API server), Failed / PartiallyFailed / object-only backups that
// do not count, retention in force, etcd snapshots, and a mirrored etcd-manager store with and
// without its control files.

#include <gtest/gtest.h>

#include <filesystem>

#include "core/cluster_state.h"
#include "core/json_yaml.h"
#include "core/timeutil.h"
#include "tests/support/process.h"
#include "tests/support/test_apiserver.h"
#include "tests/support/tls_material.h"

namespace stateguard::testing {
namespace {

using std::chrono::hours;

CommandResult backupsCmd(std::vector<std::string> args) {
  args.insert(args.begin(), "backups");
  return runCommand(binaryPath("stateguardctl"), args);
}

std::string ago(hours h) { return formatRfc3339(Clock::now() - h); }

json pv(const std::string& name, const std::string& ns, const std::string& claim,
        const std::string& driver) {
  return {{"apiVersion", "v1"},
          {"kind", "PersistentVolume"},
          {"metadata", {{"name", name}}},
          {"spec",
           {{"capacity", {{"storage", "10Gi"}}},
            {"persistentVolumeReclaimPolicy", "Delete"},
            {"claimRef", {{"namespace", ns}, {"name", claim}}},
            {"csi", {{"driver", driver}, {"volumeHandle", name}}}}},
          {"status", {{"phase", "Bound"}}}};
}

json pvc(const std::string& ns, const std::string& name, const std::string& volume,
         json labels = json::object()) {
  return {{"apiVersion", "v1"},
          {"kind", "PersistentVolumeClaim"},
          {"metadata", {{"name", name}, {"namespace", ns}, {"labels", labels}}},
          {"spec", {{"volumeName", volume}}},
          {"status", {{"phase", "Bound"}}}};
}

json velero(const std::string& name, json spec, const std::string& phase, hours age) {
  return {{"apiVersion", "velero.io/v1"},
          {"kind", "Backup"},
          {"metadata", {{"name", name}, {"namespace", "velero"}}},
          {"spec", spec},
          {"status", {{"phase", phase}, {"completionTimestamp", ago(age)}}}};
}

json longhorn(const std::string& name, const std::string& volume, const std::string& state,
              hours age) {
  return {{"apiVersion", "longhorn.io/v1beta2"},
          {"kind", "Backup"},
          {"metadata", {{"name", name}, {"namespace", "longhorn-system"}}},
          {"status", {{"state", state}, {"volumeName", volume}, {"backupCreatedAt", ago(age)}}}};
}

json etcdSnapshot(const std::string& name, bool ready, hours age) {
  return {{"apiVersion", "k3s.cattle.io/v1"},
          {"kind", "ETCDSnapshotFile"},
          {"metadata", {{"name", name}}},
          {"spec", {{"snapshotName", name}, {"nodeName", "server-1"}}},
          {"status", {{"readyToUse", ready}, {"creationTime", ago(age)}}}};
}

/// shop/data-db-0: good Velero backup 9 days old, newer PartiallyFailed; shop/data-db-1: nothing;
/// media/data-fresh: Longhorn backup 3 h old, newer Error; docs/data-wiki: object-only backup.
std::vector<json> cluster() {
  return {
      pv("pvc-db-0", "shop", "data-db-0", "driver.longhorn.io"),
      pvc("shop", "data-db-0", "pvc-db-0", {{"backup", "nightly"}}),
      pv("pvc-db-1", "shop", "data-db-1", "driver.longhorn.io"),
      pvc("shop", "data-db-1", "pvc-db-1", {{"recurring-job-group.longhorn.io/hourly", "enabled"}}),
      pv("pvc-fresh", "media", "data-fresh", "driver.longhorn.io"),
      pvc("media", "data-fresh", "pvc-fresh"),
      pv("pv-wiki", "docs", "data-wiki", "ebs.csi.aws.com"),
      pvc("docs", "data-wiki", "pv-wiki"),
      velero("nightly-old",
             {{"includedNamespaces", {"shop"}},
              {"labelSelector", {{"matchLabels", {{"backup", "nightly"}}}}}},
             "Completed", hours(24 * 9)),
      velero("nightly-partial",
             {{"includedNamespaces", {"shop"}},
              {"labelSelector", {{"matchLabels", {{"backup", "nightly"}}}}}},
             "PartiallyFailed", hours(2)),
      velero("wiki-objects", {{"includedNamespaces", {"docs"}}, {"snapshotVolumes", false}},
             "Completed", hours(1)),
      velero("all-failed", {{"includedNamespaces", {"*"}}}, "Failed", hours(5)),
      longhorn("backup-fresh", "pvc-fresh", "Completed", hours(3)),
      longhorn("backup-fresh-err", "pvc-fresh", "Error", hours(1)),
      etcdSnapshot("etcd-snapshot-old", true, hours(72)),
      etcdSnapshot("etcd-snapshot-failed", false, hours(1)),
  };
}

class BackupsCliTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = makeTempDir("sg-backups"); }
  void TearDown() override { removeTree(dir_); }

  std::string writeState(std::vector<json> objects) {
    const std::string path = dir_ + "/state.json";
    writeText(path, json{{"apiVersion", "v1"}, {"kind", "List"}, {"items", objects}}.dump());
    return path;
  }

  /// One etcd-manager cluster folder under store/<cluster>/backups/etcd/<name>.
  std::string makeStore(const std::string& name, bool spec, bool created, hours newest) {
    namespace fs = std::filesystem;
    const std::string base = dir_ + "/store/prod.k8s.local/backups/etcd/" + name;
    fs::create_directories(base + "/control");
    if (spec)
      writeText(base + "/control/etcd-cluster-spec",
                R"({"memberCount": 3, "etcdVersion": "3.5.9"})");
    if (created)
      writeText(base + "/control/etcd-cluster-created", R"({"timestamp":1700000000000000000})");
    for (hours age : {newest, newest + hours(24)}) {
      const auto t = Clock::now() - age;
      const std::string folder =
          base + "/" + formatRfc3339(t) + "-000" + std::to_string(age.count() % 1000);
      fs::create_directories(folder);
      const long long secs =
          std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
      writeText(folder + "/_etcd_backup.meta",
                json{{"etcdVersion", "3.5.9"},
                     {"timestamp", std::to_string(secs)},
                     {"clusterSpec", {{"memberCount", 3}, {"etcdVersion", "3.5.9"}}}}
                    .dump(2));
      writeText(folder + "/etcd.backup.gz", "not really gzip; the command does not read it");
    }
    return base;
  }

  std::string dir_;
};

json findClaim(const json& out, const std::string& claim) {
  for (const auto& c : out["claims"])
    if (c["claim"] == claim) return c;
  ADD_FAILURE() << "no row for " << claim << " in " << out.dump(2);
  return json::object();
}

TEST_F(BackupsCliTest, NewestGoodBackupPerClaimAndForEtcdFromAStateFile) {
  std::vector<json> objects = cluster();
  objects.push_back(
      {{"apiVersion", "longhorn.io/v1beta2"},
       {"kind", "RecurringJob"},
       {"metadata", {{"name", "hourly-backup"}, {"namespace", "longhorn-system"}}},
       {"spec",
        {{"task", "backup"}, {"cron", "0 * * * *"}, {"retain", 24}, {"groups", {"hourly"}}}}});
  objects.push_back(
      {{"apiVersion", "longhorn.io/v1beta2"},
       {"kind", "RecurringJob"},
       {"metadata", {{"name", "nightly-backup"}, {"namespace", "longhorn-system"}}},
       {"spec",
        {{"task", "backup"}, {"cron", "0 2 * * *"}, {"retain", 1}, {"groups", {"default"}}}}});
  objects.push_back({{"apiVersion", "velero.io/v1"},
                     {"kind", "Schedule"},
                     {"metadata", {{"name", "shop-nightly"}, {"namespace", "velero"}}},
                     {"spec",
                      {{"schedule", "0 1 * * *"},
                       {"template", {{"includedNamespaces", {"shop"}}, {"ttl", "720h0m0s"}}}}}});
  const std::string state = writeState(objects);

  auto r = backupsCmd({"--cluster-state", state, "-o", "json"});
  ASSERT_EQ(r.exitCode, 1) << r.err << r.out;
  const json out = json::parse(r.out);
  EXPECT_EQ(out["claims"].size(), 4u);

  const json db0 = findClaim(out, "shop/data-db-0");
  EXPECT_EQ(db0["status"], "STALE");
  EXPECT_EQ(db0["newestGood"]["name"], "velero/nightly-old");
  EXPECT_EQ(db0["newestGood"]["age"], "9d old");
  EXPECT_EQ(db0["newerFailure"]["name"], "velero/nightly-partial");
  EXPECT_EQ(db0["newerFailure"]["state"], "PartiallyFailed");
  // Longhorn: data-db-0 has no recurring-job labels, so the "default" group's job applies.
  EXPECT_EQ(
      db0["retention"],
      json({"Longhorn RecurringJob longhorn-system/nightly-backup (backup, 0 2 * * *, keeps 1)",
            "Velero Schedule velero/shop-nightly (0 1 * * *, ttl 720h0m0s)"}));

  const json db1 = findClaim(out, "shop/data-db-1");
  EXPECT_EQ(db1["status"], "UNCOVERED");
  EXPECT_TRUE(db1["newestGood"].is_null());
  EXPECT_EQ(db1["newerFailure"]["name"], "velero/all-failed");
  EXPECT_EQ(db1["retention"][0],
            "Longhorn RecurringJob longhorn-system/hourly-backup (backup, 0 * * * *, keeps 24)");

  const json fresh = findClaim(out, "media/data-fresh");
  EXPECT_EQ(fresh["status"], "ok");
  EXPECT_EQ(fresh["newestGood"]["source"], "Longhorn Backup");
  EXPECT_EQ(fresh["newerFailure"]["state"], "Error");

  const json wiki = findClaim(out, "docs/data-wiki");
  EXPECT_EQ(wiki["status"], "UNCOVERED") << "an object-only Velero backup holds no data";
  EXPECT_NE(wiki["newerFailure"]["note"].get<std::string>().find("objects only"),
            std::string::npos);

  EXPECT_EQ(out["etcd"]["status"], "STALE");
  EXPECT_EQ(out["etcd"]["newestGood"]["name"], "etcd-snapshot-old");
  EXPECT_EQ(out["etcd"]["newerFailure"]["name"], "etcd-snapshot-failed");
  EXPECT_EQ(out["summary"], (json{{"ok", 1}, {"stale", 2}, {"uncovered", 2}}));

  // The table says the same in columns, with the failures as notes.
  auto table = backupsCmd({"--cluster-state", state});
  EXPECT_EQ(table.exitCode, 1);
  for (const char* want : {"CLAIM", "NEWEST GOOD BACKUP", "RETENTION",
                           "Velero Backup velero/nightly-old", "9d old", "STALE", "UNCOVERED",
                           "note: shop/data-db-0: a newer Velero Backup velero/nightly-partial "
                           "did not count (PartiallyFailed",
                           "etcd (2 ETCDSnapshotFiles): newest ready "
                           "etcd-snapshot-old",
                           "Summary: 1 ok, 2 stale, 2 uncovered or missing"}) {
    EXPECT_NE(table.out.find(want), std::string::npos) << want << "\n" << table.out;
  }

  // A wider limit turns the stale ones ok; the uncovered stay.
  auto wide = backupsCmd({"--cluster-state", state, "--max-age", "10d", "-o", "json"});
  EXPECT_EQ(wide.exitCode, 1);
  EXPECT_EQ(json::parse(wide.out)["summary"], (json{{"ok", 3}, {"stale", 0}, {"uncovered", 2}}));

  // One namespace, all fresh, no etcd objects in that state: exit 0.
  std::vector<json> small = {pv("pvc-fresh", "media", "data-fresh", "driver.longhorn.io"),
                             pvc("media", "data-fresh", "pvc-fresh"),
                             longhorn("backup-fresh", "pvc-fresh", "Completed", hours(3))};
  auto okRun = backupsCmd({"--cluster-state", writeState(small), "--namespace", "media"});
  EXPECT_EQ(okRun.exitCode, 0) << okRun.out << okRun.err;
  EXPECT_NE(okRun.out.find("etcd: no ETCDSnapshotFile seen"), std::string::npos) << okRun.out;
}

TEST_F(BackupsCliTest, LiveClusterThroughTheWatchCache) {
  auto tls = makeTlsMaterial(dir_ + "/api");
  ASSERT_TRUE(tls.ok()) << tls.error();
  TestApiServer api(tls.value());
  ASSERT_TRUE(api.start().ok());
  ASSERT_TRUE(writeKubeconfig(dir_ + "/kubeconfig", api.kubeConfig()).ok());
  for (const json& o : cluster()) {
    const ResourceKind* rk = watchedKindOf(o);
    ASSERT_NE(rk, nullptr) << o.dump();
    if (rk->storeKey() != "ETCDSnapshotFile") api.add(rk->storeKey(), o);
  }
  // The ETCDSnapshotFile CRD is installed but holds no snapshot: etcd is uncovered.
  auto r = backupsCmd({"--kubeconfig", dir_ + "/kubeconfig", "-o", "json"});
  ASSERT_EQ(r.exitCode, 1) << r.err;
  json out = json::parse(r.out);
  EXPECT_EQ(findClaim(out, "shop/data-db-0")["newestGood"]["name"], "velero/nightly-old");
  EXPECT_EQ(findClaim(out, "media/data-fresh")["status"], "ok");
  EXPECT_EQ(out["etcd"]["status"], "UNCOVERED");
  // RecurringJobs and Schedules are not served by this API server (404): no retention seen.
  EXPECT_EQ(findClaim(out, "shop/data-db-0")["retention"], json::array());

  // Without the CRD (404), a cluster without embedded etcd is not flagged for etcd.
  api.failRequests("ETCDSnapshotFile", 404);
  auto noCrd = backupsCmd({"--kubeconfig", dir_ + "/kubeconfig", "-o", "json"});
  EXPECT_TRUE(json::parse(noCrd.out)["etcd"].is_null()) << noCrd.out;
}

TEST_F(BackupsCliTest, EtcdManagerStoreWithMissingControlFilesSaysWhatTheNextRestartDoes) {
  makeStore("main", true, true, hours(2));
  // The seed: a lifecycle rule expired events' control files; backups stopped 40 days ago.
  makeStore("events", false, false, hours(24 * 40));
  // A backup folder whose meta is unreadable does not count.
  const std::string bad =
      dir_ + "/store/prod.k8s.local/backups/etcd/main/2026-01-01T00:00:00Z-000009";
  std::filesystem::create_directories(bad);
  writeText(bad + "/_etcd_backup.meta", "{not json");

  auto r = backupsCmd({"--etcd-manager-store", dir_ + "/store"});
  ASSERT_EQ(r.exitCode, 1) << r.err;
  for (const char* want :
       {"backups/etcd/events: CONTROL FILES MISSING",
        "control/etcd-cluster-spec is missing: etcd-manager finds \"no cluster spec set - must "
        "seed new cluster\", stops taking backups, and the next restart will seed a new empty "
        "cluster",
        "control/etcd-cluster-created is missing: the next restart will seed a new empty cluster",
        "backups/etcd/main: ok", "control files: present (3 members, etcd 3.5.9)",
        "2 usable backups",
        "does not count: 2026-01-01T00:00:00Z-000009: _etcd_backup.meta has "
        "no readable timestamp",
        "40d old"}) {
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
  }

  // Pointing at the healthy cluster's folder alone: exit 0; JSON names the newest backup.
  auto main = backupsCmd(
      {"--etcd-manager-store", dir_ + "/store/prod.k8s.local/backups/etcd/main", "-o", "json"});
  EXPECT_EQ(main.exitCode, 0) << main.out << main.err;
  json out = json::parse(main.out);
  ASSERT_EQ(out["etcdManagerStores"].size(), 1u);
  EXPECT_EQ(out["etcdManagerStores"][0]["status"], "ok");
  EXPECT_EQ(out["etcdManagerStores"][0]["newest"]["age"], "2h old");

  // A control file that etcd-manager cannot parse is as bad as a missing one.
  writeText(dir_ + "/store/prod.k8s.local/backups/etcd/main/control/etcd-cluster-spec", "{}");
  auto unreadable =
      backupsCmd({"--etcd-manager-store", dir_ + "/store/prod.k8s.local/backups/etcd/main"});
  EXPECT_EQ(unreadable.exitCode, 1);
  EXPECT_NE(unreadable.out.find("CONTROL FILES UNREADABLE"), std::string::npos) << unreadable.out;
}

TEST_F(BackupsCliTest, BadInputIsAUsageErrorWithWhatIsWrong) {
  auto none = backupsCmd({});
  EXPECT_EQ(none.exitCode, 2);
  EXPECT_NE(none.err.find("give --cluster-state FILE, --kubeconfig FILE or --etcd-manager-store"),
            std::string::npos)
      << none.err;
  auto age = backupsCmd({"--cluster-state", writeState({}), "--max-age", "soon"});
  EXPECT_EQ(age.exitCode, 2);
  EXPECT_NE(age.err.find("--max-age must be a duration"), std::string::npos) << age.err;
  auto missing = backupsCmd({"--cluster-state", dir_ + "/nope.yaml"});
  EXPECT_EQ(missing.exitCode, 2);
  EXPECT_NE(missing.err.find("nope.yaml"), std::string::npos) << missing.err;
  std::filesystem::create_directories(dir_ + "/empty");
  auto empty = backupsCmd({"--etcd-manager-store", dir_ + "/empty"});
  EXPECT_EQ(empty.exitCode, 2);
  EXPECT_NE(empty.err.find("no etcd-manager backup store found"), std::string::npos) << empty.err;
  writeText(dir_ + "/broken.yaml", "items: [\n");
  auto broken = backupsCmd({"--cluster-state", dir_ + "/broken.yaml"});
  EXPECT_EQ(broken.exitCode, 2);
  EXPECT_NE(broken.err.find("broken.yaml"), std::string::npos) << broken.err;
}

}  // namespace
}  // namespace stateguard::testing
