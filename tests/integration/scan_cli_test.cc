// stateguardctl scan through the real binary: a cluster state holding each hazard (a stale
// backup, a quarantined volume, a Released PV, a StatefulSet whose retention policy deletes its
// bound claims) reports each one, in table, JSON and SARIF; the same cluster with every hazard
// fixed exits 0. Both from a state file and from the test API server through --kubeconfig. The
// seeds' configuration (S3 lifecycle rules, a Longhorn RecurringJob keeping one backup, registry
// mirrors without a working fallback), which the cache does not watch, is found the same ways.

#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <set>
#include <tuple>

#include "core/cluster_state.h"
#include "core/json_yaml.h"
#include "core/timeutil.h"
#include "tests/support/process.h"
#include "tests/support/test_apiserver.h"
#include "tests/support/tls_material.h"
#include "webhook/scan.h"

namespace stateguard::testing {
namespace {

/// (rule, kind, namespace/name, severity) of each finding.
using Row = std::tuple<std::string, std::string, std::string, std::string>;

/// `text` with ${NOW-2h}, ${NOW-9d}, ${NOW-30m} replaced by times before now.
std::string nowTimes(const std::string& text) {
  static const std::regex kNow(R"(\$\{NOW-([0-9]+)([mhd])\})");
  std::string out;
  auto begin = std::sregex_iterator(text.begin(), text.end(), kNow);
  size_t last = 0;
  for (auto it = begin; it != std::sregex_iterator(); ++it) {
    const long n = std::stol((*it)[1]);
    const char unit = (*it)[2].str()[0];
    const std::chrono::seconds ago(n * (unit == 'm' ? 60 : unit == 'h' ? 3600 : 86400));
    out += text.substr(last, it->position() - last) + formatRfc3339(Clock::now() - ago);
    last = it->position() + it->length();
  }
  return out + text.substr(last);
}

/// A fixture of tests/fixtures/scan with its times made relative to now (nowTimes()).
std::string fixtureText(const std::string& name) {
  return nowTimes(readText(sourcePath("tests/fixtures/scan/" + name)));
}

class ScanCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = makeTempDir("sg-scan");
    writeText(dir_ + "/hazards.yaml", fixtureText("hazards.yaml"));
    writeText(dir_ + "/fixed.yaml", fixtureText("fixed.yaml"));
  }
  void TearDown() override { removeTree(dir_); }

  static CommandResult scan(std::vector<std::string> args) {
    args.insert(args.begin(), "scan");
    return runCommand(binaryPath("stateguardctl"), args);
  }

  static std::set<Row> rows(const json& out) {
    std::set<Row> r;
    for (const auto& f : out["findings"]) {
      const std::string ns = f["namespace"].get<std::string>();
      r.insert({f["rule"].get<std::string>(), f["kind"].get<std::string>(),
                (ns.empty() ? "" : ns + "/") + f["name"].get<std::string>(),
                f["severity"].get<std::string>()});
    }
    return r;
  }

  static std::string messageOf(const json& out, const std::string& rule) {
    for (const auto& f : out["findings"])
      if (f["rule"] == rule) return f["message"].get<std::string>();
    return "";
  }

  const std::set<Row> kHazards = {
      {"backup-stale", "PersistentVolumeClaim", "media/library", "warning"},
      {"volume-quarantined", "PersistentVolume", "pvc-uploads", "error"},
      {"pv-released", "PersistentVolume", "pvc-old-logs", "warning"},
      {"statefulset-retention", "StatefulSet", "shop/db", "error"},
  };

  /// Checks the hazards' findings and what their messages say.
  void expectHazards(const CommandResult& r) {
    ASSERT_EQ(r.exitCode, 1) << r.out << r.err;
    const json out = json::parse(r.out);
    EXPECT_EQ(rows(out), kHazards) << out.dump(2);
    EXPECT_EQ(out["summary"]["findings"], 4);
    EXPECT_EQ(out["summary"]["errors"], 2);

    const std::string stale = messageOf(out, "backup-stale");
    EXPECT_NE(stale.find("claim media/library (PV pvc-library, 200Gi)"), std::string::npos)
        << stale;
    EXPECT_NE(stale.find("Longhorn Backup longhorn-system/backup-library-old"), std::string::npos);
    EXPECT_NE(stale.find("(9d old), older than the policy's maxAge 1d"), std::string::npos);
    EXPECT_NE(stale.find("backup-library-failed did not count"), std::string::npos);
    EXPECT_NE(stale.find("--include-namespaces media --wait"), std::string::npos);

    const std::string q = messageOf(out, "volume-quarantined");
    EXPECT_NE(q.find("PersistentVolume pvc-uploads (claim shop/uploads) is quarantined"),
              std::string::npos)
        << q;
    EXPECT_NE(q.find("on node worker-2: the device holds ext4 UUID 9f9f"), std::string::npos);
    EXPECT_NE(q.find("stateguardctl csi ledger clear-quarantine --volume pvc-uploads"),
              std::string::npos);

    const std::string released = messageOf(out, "pv-released");
    EXPECT_NE(released.find("its claim logs/old-logs was deleted"), std::string::npos) << released;
    EXPECT_NE(released.find("spec.volumeName: pvc-old-logs"), std::string::npos);

    const std::string sts = messageOf(out, "statefulset-retention");
    EXPECT_NE(sts.find("whenDeleted is Delete, so deleting it makes Kubernetes delete its bound "
                       "claims: data-db-0 (20Gi, reclaim policy Delete"),
              std::string::npos)
        << sts;
    EXPECT_NE(sts.find("\"whenDeleted\":\"Retain\""), std::string::npos);
  }

  std::string dir_;
};

TEST_F(ScanCli, FindsEachHazardInAStateFile) {
  expectHazards(scan({"--cluster-state", dir_ + "/hazards.yaml", "-o", "json"}));
}

TEST_F(ScanCli, TableNamesEachFindingAndItsFix) {
  auto r = scan({"--cluster-state", dir_ + "/hazards.yaml"});
  ASSERT_EQ(r.exitCode, 1) << r.err;
  for (const char* want :
       {"SEVERITY", "error     statefulset-retention", "pvc-uploads", "media/library",
        "pvc-old-logs", "4 finding(s) in", "2 error(s), 2 warning(s), 0 note(s)",
        "kubectl patch statefulset db -n shop"})
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
}

TEST_F(ScanCli, SarifLikeLint) {
  auto r = scan({"--cluster-state", dir_ + "/hazards.yaml", "-o", "sarif"});
  ASSERT_EQ(r.exitCode, 1) << r.err;
  const json sarif = json::parse(r.out);
  EXPECT_EQ(sarif["version"], "2.1.0");
  const json& run = sarif["runs"][0];
  std::set<std::string> ruleIds, resultIds;
  for (const auto& rule : run["tool"]["driver"]["rules"])
    ruleIds.insert(rule["id"].get<std::string>());
  for (const auto& res : run["results"]) {
    const std::string id = res["ruleId"].get<std::string>();
    resultIds.insert(id);
    EXPECT_TRUE(ruleIds.count(id)) << id << " is not in the driver's rules";
    EXPECT_EQ(res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
              dir_ + "/hazards.yaml");
  }
  EXPECT_EQ(resultIds, (std::set<std::string>{"backup-stale", "volume-quarantined", "pv-released",
                                              "statefulset-retention"}));
  EXPECT_TRUE(ruleIds.count("backup-quarantine")) << "the webhook's rules are listed too";
}

TEST_F(ScanCli, FixedStateIsClean) {
  auto r = scan({"--cluster-state", dir_ + "/fixed.yaml"});
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("No hazards found"), std::string::npos) << r.out;
  auto j = scan({"--cluster-state", dir_ + "/fixed.yaml", "-o", "json"});
  EXPECT_EQ(j.exitCode, 0);
  EXPECT_EQ(json::parse(j.out)["findings"], json::array());
}

TEST_F(ScanCli, ABackupTakenAfterTheQuarantineIsNotAGoodCopy) {
  // Seed 1: the volume read blank, was backed up, and the blank copy replaced the good one. Here
  // shop/uploads' good backup is 3 days old, and a "fresh" one was taken 10 minutes ago, 20
  // minutes after stateguard-csi quarantined the volume.
  std::string text = readText(sourcePath("tests/fixtures/scan/hazards.yaml"));
  const std::string goodTime = "backupCreatedAt: \"${NOW-3h}\"";
  ASSERT_NE(text.find(goodTime), std::string::npos);
  text.replace(text.find(goodTime), goodTime.size(), "backupCreatedAt: \"${NOW-3d}\"");
  text +=
      "---\napiVersion: longhorn.io/v1beta2\nkind: Backup\nmetadata: {name: backup-uploads-blank, "
      "namespace: longhorn-system, labels: {backup-volume: pvc-uploads}}\nstatus: {state: "
      "Completed, volumeName: pvc-uploads, backupCreatedAt: \"${NOW-10m}\"}\n";
  writeText(dir_ + "/blank.yaml", nowTimes(text));
  auto r = scan({"--cluster-state", dir_ + "/blank.yaml", "-o", "json"});
  ASSERT_EQ(r.exitCode, 1) << r.out << r.err;
  const json out = json::parse(r.out);
  EXPECT_TRUE(rows(out).count({"backup-stale", "PersistentVolumeClaim", "shop/uploads", "warning"}))
      << out.dump(2);
  std::string stale;
  for (const auto& f : out["findings"])
    if (f["rule"] == "backup-stale" && f["name"] == "uploads") stale = f["message"];
  EXPECT_NE(stale.find("Longhorn Backup longhorn-system/backup-uploads from"), std::string::npos)
      << "the copy from before the quarantine is the newest good one: " << stale;
  EXPECT_NE(stale.find("backup-uploads-blank did not count"), std::string::npos) << stale;
  EXPECT_NE(stale.find("taken after stateguard-csi quarantined the volume"), std::string::npos)
      << stale;
}

TEST_F(ScanCli, DataMarkedExpendableIsNotReported) {
  const std::string text = readText(sourcePath("tests/fixtures/scan/hazards.yaml"));
  auto mark = [](std::string t, const std::string& meta, const std::string& value) {
    const size_t at = t.find(meta);
    EXPECT_NE(at, std::string::npos) << meta;
    if (at != std::string::npos)
      t.replace(at, meta.size(),
                meta.substr(0, meta.size() - 1) + ", annotations: {stateguard.io/expendable: \"" +
                    value + "\"}}");
    return t;
  };
  const std::set<Row> rest = {
      {"volume-quarantined", "PersistentVolume", "pvc-uploads", "error"},
      {"statefulset-retention", "StatefulSet", "shop/db", "error"},
  };
  // The claim media/library (backup-stale) and the Released PV pvc-old-logs, marked one by one.
  std::string marked = mark(text, "{name: library, namespace: media}", "rebuilt from upstream");
  marked = mark(marked, "{name: pvc-old-logs}", "logs kept 30 days elsewhere");
  writeText(dir_ + "/marked.yaml", nowTimes(marked));
  auto r = scan({"--cluster-state", dir_ + "/marked.yaml", "-o", "json"});
  ASSERT_EQ(r.exitCode, 1) << r.out << r.err;
  EXPECT_EQ(rows(json::parse(r.out)), rest) << r.out;

  // A whole namespace marked: its claims are not reported.
  const std::string ns =
      "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: media, annotations: "
      "{stateguard.io/expendable: \"scratch\"}}\n";
  writeText(dir_ + "/ns.yaml", nowTimes(mark(text, "{name: pvc-old-logs}", "x") + ns));
  r = scan({"--cluster-state", dir_ + "/ns.yaml", "-o", "json"});
  EXPECT_EQ(rows(json::parse(r.out)), rest) << r.out;

  // "false" is no reason; the message says how to mark.
  writeText(dir_ + "/false.yaml",
            nowTimes(mark(text, "{name: library, namespace: media}", "false")));
  r = scan({"--cluster-state", dir_ + "/false.yaml", "-o", "json"});
  const json out = json::parse(r.out);
  EXPECT_EQ(rows(out), kHazards) << r.out;
  EXPECT_NE(messageOf(out, "backup-stale")
                .find("kubectl annotate pvc library -n media stateguard.io/expendable='<why>'"),
            std::string::npos)
      << messageOf(out, "backup-stale");
}

/// The seeds' configuration (tests/fixtures/scan/configuration.yaml): one finding per object.
const std::set<Row> kConfigurationHazards = {
    {"backup-lifecycle", "Bucket", "infra/kops-state", "error"},
    {"backup-lifecycle", "BucketLifecycleConfiguration", "kops-state-lifecycle", "error"},
    {"backup-retention", "RecurringJob", "longhorn-system/nightly-backup", "warning"},
    {"registry-broken-fallback", "TalosConfigTemplate", "capi/workers", "error"},
    {"registry-no-fallback", "ConfigMap", "kube-system/containerd-mirrors", "error"},
};

TEST_F(ScanCli, FindsTheSeedsConfigurationInAStateFileAndClearsWhenFixed) {
  auto r =
      scan({"--cluster-state", sourcePath("tests/fixtures/scan/configuration.yaml"), "-o", "json"});
  ASSERT_EQ(r.exitCode, 1) << r.out << r.err;
  const json out = json::parse(r.out);
  EXPECT_EQ(rows(out), kConfigurationHazards) << out.dump(2);
  const std::string lifecycle = messageOf(out, "backup-lifecycle");
  EXPECT_NE(lifecycle.find("control/"), std::string::npos) << lifecycle;
  EXPECT_NE(messageOf(out, "backup-retention").find("keeps only 1 backup (spec.retain: 1)"),
            std::string::npos);

  auto fixed = scan({"--cluster-state", sourcePath("tests/fixtures/scan/configuration-fixed.yaml"),
                     "-o", "json"});
  EXPECT_EQ(fixed.exitCode, 0) << fixed.out << fixed.err;
  EXPECT_EQ(json::parse(fixed.out)["summary"]["objects"], 5) << "every object was judged";
}

TEST_F(ScanCli, ListsTheConfigurationKindsThroughKubeconfig) {
  auto tls = makeTlsMaterial(dir_ + "/tls");
  ASSERT_TRUE(tls.ok()) << tls.error();
  for (const char* file : {"configuration.yaml", "configuration-fixed.yaml"}) {
    SCOPED_TRACE(file);
    TestApiServerOptions options;
    options.extraKinds = scan::configurationKinds();
    TestApiServer api(tls.value(), options);
    ASSERT_TRUE(api.start().ok());
    api.failRequests("ETCDSnapshotFile", 404);
    auto objects =
        parseObjects(readText(sourcePath("tests/fixtures/scan/" + std::string(file))), file);
    ASSERT_TRUE(objects.ok()) << objects.error();
    for (const auto& so : objects.value()) {
      const ResourceKind* rk = watchedKindOf(so.object, scan::configurationKinds());
      ASSERT_NE(rk, nullptr) << so.object.dump();
      api.add(rk->storeKey(), so.object);
    }
    // Not labelled for the registry rules: listed by neither the scan nor anyone else.
    api.add("ConfigMap", json::parse(R"({"metadata":{"name":"unlabelled","namespace":"kube-system"},
        "data":{"docker.io.hosts.toml":"server = \"http://10.96.120.15\"\n"}})"));
    ASSERT_TRUE(writeKubeconfig(dir_ + "/kubeconfig", api.kubeConfig()).ok());
    auto r = scan({"--kubeconfig", dir_ + "/kubeconfig", "-o", "json"});
    // Listed once, never watched: the webhook's RBAC grants only list on them.
    for (const char* key : {"ConfigMap", "RecurringJob.longhorn.io", "Bucket.s3.services.k8s.aws"})
      EXPECT_EQ(api.watchRequests(key), 0u) << key;
    EXPECT_EQ(api.listRequests("ConfigMap"), 1u);
    if (std::string(file) == "configuration.yaml") {
      ASSERT_EQ(r.exitCode, 1) << r.out << r.err;
      EXPECT_EQ(rows(json::parse(r.out)), kConfigurationHazards) << r.out;
    } else {
      EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
    }
  }
}

// Rules may read different labels: the ConfigMaps carrying any of them are listed, one list per
// label, and one carrying two is judged once.
TEST_F(ScanCli, ListsTheConfigMapsOfEveryRulesLabel) {
  auto tls = makeTlsMaterial(dir_ + "/tls");
  ASSERT_TRUE(tls.ok()) << tls.error();
  TestApiServerOptions options;
  options.extraKinds = scan::configurationKinds();
  TestApiServer api(tls.value(), options);
  ASSERT_TRUE(api.start().ok());
  api.failRequests("ETCDSnapshotFile", 404);
  // Under a key no parser knows by name: only rules whose label the ConfigMap carries read it.
  // Talos mirrors: one served by a NodePort with no fallback (registry-no-fallback), one named
  // by a cluster DNS name (registry-cluster-dns warns).
  const std::string noFallback =
      "machine:\n  registries:\n    mirrors:\n      docker.io:\n"
      "        endpoints: [\"http://127.0.0.1:30002\"]\n        skipFallback: true\n";
  const std::string clusterDns =
      "machine:\n  registries:\n    mirrors:\n      ghcr.io:\n"
      "        endpoints: [\"http://zot.registry.svc.cluster.local:5000\"]\n";
  auto configMap = [&](const std::string& name, const json& labels) {
    return json{{"apiVersion", "v1"},
                {"kind", "ConfigMap"},
                {"metadata", {{"name", name}, {"namespace", "kube-system"}, {"labels", labels}}},
                {"data", {{"no-fallback", noFallback}, {"cluster-dns", clusterDns}}}};
  };
  const std::string team = "mirrors.example.com/config";
  const std::string standard = "stateguard.io/registry-config";
  api.add("ConfigMap", configMap("default-label", {{standard, "true"}}));
  api.add("ConfigMap", configMap("team-label", {{team, "true"}}));
  api.add("ConfigMap", configMap("both-labels", {{standard, "true"}, {team, "true"}}));
  api.add("ConfigMap", configMap("no-label", json::object()));
  ASSERT_TRUE(writeKubeconfig(dir_ + "/kubeconfig", api.kubeConfig()).ok());
  // registry-no-fallback reads the team's label; registry-cluster-dns keeps the standard one.
  writeText(dir_ + "/policy.yaml",
            "apiVersion: stateguard.io/v1alpha1\nkind: Policy\nrules:\n"
            "  registry-no-fallback: {mode: enforce, params: {configLabel: " +
                team + "}}\n");
  auto r =
      scan({"--kubeconfig", dir_ + "/kubeconfig", "--policy", dir_ + "/policy.yaml", "-o", "json"});
  ASSERT_EQ(r.exitCode, 1) << r.out << r.err;
  EXPECT_EQ(api.listRequests("ConfigMap"), 2u) << "one list per label";
  std::map<std::string, std::map<std::string, int>> found;  // rule -> object -> findings
  const json out = json::parse(r.out);
  for (const json& f : out["findings"]) {
    ++found[f["rule"].get<std::string>()][f["name"].get<std::string>()];
  }
  // Each rule judged the ConfigMaps carrying its label, each of them once.
  EXPECT_EQ(found["registry-no-fallback"],
            (std::map<std::string, int>{{"team-label", 1}, {"both-labels", 1}}))
      << r.out;
  EXPECT_EQ(found["registry-cluster-dns"],
            (std::map<std::string, int>{{"default-label", 1}, {"both-labels", 1}}))
      << r.out;
}

TEST(ScanConfigurationKinds, EachResourceOnceUnderOneKeyNewestVersionFirstNoSecrets) {
  std::vector<std::string> lifecycle;
  std::set<std::string> keys;
  for (const ResourceKind& rk : scan::configurationKinds()) {
    keys.insert(rk.storeKey());
    const std::string path = rk.apiPath;
    if (path.find("/bucketlifecycleconfigurations") != std::string::npos) {
      EXPECT_EQ(rk.storeKey(), "BucketLifecycleConfiguration.s3.aws.upbound.io");
      lifecycle.push_back(rk.apiVersion());
    }
    EXPECT_EQ(path.find("/secrets"), std::string::npos) << "a guard must not read every Secret";
    EXPECT_EQ(watchedKindOf(json{{"kind", rk.kind}, {"apiVersion", rk.apiVersion()}}), nullptr)
        << rk.storeKey() << " is watched already";
  }
  // listConfiguration tries them in this order and stops at the first that is served.
  EXPECT_EQ(lifecycle,
            (std::vector<std::string>{"s3.aws.upbound.io/v1beta3", "s3.aws.upbound.io/v1beta2",
                                      "s3.aws.upbound.io/v1beta1"}));
  for (const char* key :
       {"Bucket.s3.services.k8s.aws", "Bucket.s3.aws.crossplane.io", "RecurringJob.longhorn.io",
        "Schedule.velero.io", "ConfigMap", "TalosConfigTemplate.bootstrap.cluster.x-k8s.io",
        "Cluster.provisioning.cattle.io"})
    EXPECT_TRUE(keys.count(key)) << key;
}

TEST_F(ScanCli, ConfigurationListsTheNewestServedVersionAndToleratesAbsentCrds) {
  auto tls = makeTlsMaterial(dir_ + "/tls");
  ASSERT_TRUE(tls.ok()) << tls.error();
  TestApiServerOptions options;
  // Only v1beta1 of Crossplane's BucketLifecycleConfiguration is served, and no ACK at all.
  for (const ResourceKind& rk : scan::configurationKinds()) {
    const std::string path = rk.apiPath;
    if (path.find("s3.services.k8s.aws") != std::string::npos) continue;
    if (path.find("bucketlifecycleconfigurations") != std::string::npos &&
        path.find("/v1beta1/") == std::string::npos)
      continue;
    options.extraKinds.push_back(rk);
  }
  TestApiServer api(tls.value(), options);
  ASSERT_TRUE(api.start().ok());
  api.failRequests("ETCDSnapshotFile", 404);
  json lifecycle = json::parse(R"({"metadata":{"name":"events"},"spec":{"forProvider":{
      "bucket":"example-kops-state","rule":[{"id":"x","status":"Enabled",
      "filter":[{"prefix":"prod.k8s.local/backups/etcd/events/"}],"expiration":[{"days":30}]}]}}})");
  api.add("BucketLifecycleConfiguration.s3.aws.upbound.io", lifecycle);
  ASSERT_TRUE(writeKubeconfig(dir_ + "/kubeconfig", api.kubeConfig()).ok());
  auto r = scan({"--kubeconfig", dir_ + "/kubeconfig", "-o", "json"});
  ASSERT_EQ(r.exitCode, 1) << r.out << r.err;
  const json out = json::parse(r.out);
  EXPECT_EQ(
      rows(out),
      (std::set<Row>{{"backup-lifecycle", "BucketLifecycleConfiguration", "events", "error"}}))
      << "v1beta3 and v1beta2 answer 404, so v1beta1 is listed; ACK's 404 is no error: " << r.out;
}

TEST_F(ScanCli, PolicyDecidesMaxAgeAndSeverity) {
  writeText(dir_ + "/policy.yaml",
            "apiVersion: stateguard.io/v1alpha1\nkind: Policy\nrules:\n"
            "  backup-freshness: {mode: enforce, params: {maxAge: 10d}}\n");
  auto r = scan(
      {"--cluster-state", dir_ + "/hazards.yaml", "--policy", dir_ + "/policy.yaml", "-o", "json"});
  ASSERT_EQ(r.exitCode, 1) << r.err;
  EXPECT_EQ(messageOf(json::parse(r.out), "backup-stale"), "")
      << "a 9-day-old backup is within a 10-day maxAge";

  writeText(dir_ + "/policy.yaml",
            "apiVersion: stateguard.io/v1alpha1\nkind: Policy\nrules:\n"
            "  backup-freshness: {mode: enforce, params: {maxAge: 12h}}\n");
  r = scan(
      {"--cluster-state", dir_ + "/hazards.yaml", "--policy", dir_ + "/policy.yaml", "-o", "json"});
  EXPECT_TRUE(rows(json::parse(r.out))
                  .count({"backup-stale", "PersistentVolumeClaim", "media/library", "error"}))
      << r.out;
}

TEST_F(ScanCli, ThroughKubeconfigAgainstTheTestApiServer) {
  auto tls = makeTlsMaterial(dir_ + "/tls");
  ASSERT_TRUE(tls.ok()) << tls.error();
  for (const char* file : {"hazards.yaml", "fixed.yaml"}) {
    SCOPED_TRACE(file);
    TestApiServer api(tls.value());
    ASSERT_TRUE(api.start().ok());
    api.failRequests("ETCDSnapshotFile", 404);  // not a k3s cluster: the CRD is not installed
    auto objects = parseObjects(readText(dir_ + "/" + file), file);
    ASSERT_TRUE(objects.ok()) << objects.error();
    for (const auto& so : objects.value()) {
      const ResourceKind* rk = watchedKindOf(so.object);
      ASSERT_NE(rk, nullptr) << so.object.dump();
      api.add(rk->storeKey(), so.object);
    }
    ASSERT_TRUE(writeKubeconfig(dir_ + "/kubeconfig", api.kubeConfig()).ok());
    auto r = scan({"--kubeconfig", dir_ + "/kubeconfig", "-o", "json"});
    if (std::string(file) == "hazards.yaml") {
      expectHazards(r);
    } else {
      EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
    }
  }
}

TEST_F(ScanCli, BreakGlassAnnotationsInForceAreNotesExpiredOnesErrors) {
  const auto at = [](std::chrono::hours h) { return formatRfc3339(Clock::now() + h); };
  writeText(
      dir_ + "/bg.yaml",
      "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: armed, namespace: x, "
      "annotations: {stateguard.io/allow: \"pvc-delete; until=" +
          at(std::chrono::hours(2)) +
          "; reason=INC-42\"}}\n---\n"
          "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: stale, namespace: x, "
          "annotations: {stateguard.io/allow: \"pvc-delete; until=" +
          at(std::chrono::hours(-2)) +
          "; reason=INC-41\"}}\n---\n"
          "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {volumes: "
          "[{name: a, persistentVolumeClaim: {claimName: armed}}, {name: b, "
          "persistentVolumeClaim: {claimName: stale}}]}\n");
  auto r = scan({"--cluster-state", dir_ + "/bg.yaml", "-o", "json"});
  ASSERT_EQ(r.exitCode, 1) << r.err;
  const json out = json::parse(r.out);
  EXPECT_EQ(
      rows(out),
      (std::set<Row>{{"break-glass-annotation", "PersistentVolumeClaim", "x/armed", "note"},
                     {"break-glass-annotation", "PersistentVolumeClaim", "x/stale", "error"}}));
  EXPECT_NE(
      out.dump().find("kubectl annotate persistentvolumeclaim stale -n x stateguard.io/allow-"),
      std::string::npos)
      << out.dump(2);
}

TEST_F(ScanCli, BadInputIsAUsageError) {
  auto none = scan({});
  EXPECT_EQ(none.exitCode, 2);
  EXPECT_NE(none.err.find("exactly one of --cluster-state"), std::string::npos) << none.err;
  auto both = scan({"--cluster-state", dir_ + "/fixed.yaml", "--kubeconfig", "/x"});
  EXPECT_EQ(both.exitCode, 2);
  auto missing = scan({"--cluster-state", "/nonexistent/state.yaml"});
  EXPECT_EQ(missing.exitCode, 2);
  EXPECT_NE(missing.err.find("/nonexistent/state.yaml"), std::string::npos) << missing.err;
  writeText(dir_ + "/broken.yaml", "kind: [unclosed\n");
  auto broken = scan({"--cluster-state", dir_ + "/broken.yaml"});
  EXPECT_EQ(broken.exitCode, 2);
  EXPECT_NE(broken.err.find("broken.yaml"), std::string::npos) << broken.err;
  auto format = scan({"--cluster-state", dir_ + "/fixed.yaml", "-o", "xml"});
  EXPECT_EQ(format.exitCode, 2);
  EXPECT_NE(format.err.find("-o must be table, json or sarif"), std::string::npos);
  auto policy = scan({"--cluster-state", dir_ + "/fixed.yaml", "--policy", "/nonexistent.yaml"});
  EXPECT_EQ(policy.exitCode, 2);
  EXPECT_NE(policy.err.find("policy"), std::string::npos);
  auto help = scan({"--help"});
  EXPECT_EQ(help.exitCode, 0);
  EXPECT_NE(help.out.find("statefulset-retention"), std::string::npos);
}

TEST(ScanCompletion, CommandIsListedAndCompleted) {
  auto usage = runCommand(binaryPath("stateguardctl"), {"--help"});
  EXPECT_NE(usage.out.find("  scan "), std::string::npos) << usage.out;
  auto completion = runCommand(binaryPath("stateguardctl"), {"completion", "bash"});
  EXPECT_NE(completion.out.find(" backups scan completion"), std::string::npos);
}

}  // namespace
}  // namespace stateguard::testing
