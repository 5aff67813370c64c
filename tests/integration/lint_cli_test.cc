// stateguardctl lint through the real binary: exit codes, text/json/SARIF output that names the
// file, line, object and rule, directories and stdin, --as / --as-group, and unreadable input.

#include <gtest/gtest.h>

#include "core/json_yaml.h"
#include "tests/support/process.h"

namespace stateguard::testing {
namespace {

std::string fixture(const std::string& name) { return sourcePath("tests/fixtures/lint/" + name); }
std::string lifecycleFixture(const std::string& name) {
  return sourcePath("tests/fixtures/lifecycle/" + name);
}

CommandResult lint(std::vector<std::string> args, const std::string& in = "") {
  args.insert(args.begin(), "lint");
  return runCommand(binaryPath("stateguardctl"), args, in);
}

TEST(LintCli, CleanManifestsExitZero) {
  auto r = lint({"--cluster-state", fixture("state.yaml"), fixture("clean.yaml")});
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("2 object(s) in 1 file(s): 0 denied"), std::string::npos) << r.out;
}

TEST(LintCli, DenialsNameFileLineObjectAndRule) {
  auto r = lint({"--cluster-state", fixture("state.yaml"), fixture("dangerous.yaml")});
  EXPECT_EQ(r.exitCode, 1) << r.out << r.err;
  // The StatefulSet is a creation (not in the state) onto a new template: statefulset-recreate.
  EXPECT_NE(r.out.find("dangerous.yaml:2 (document 0) StatefulSet gitea/gitea: DENIED by "
                       "statefulset-recreate"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("data-gitea-0 (20Gi)"), std::string::npos);
  // The PV exists in the state with Retain: applying Delete is an update judged by reclaim-policy.
  EXPECT_NE(
      r.out.find("dangerous.yaml:10 (document 1) PersistentVolume pv-db: DENIED by reclaim-policy"),
      std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("2 denied"), std::string::npos);
}

TEST(LintCli, WithoutClusterStateOnlyObjectLocalRulesFire) {
  auto r = lint({fixture("dangerous.yaml")});
  EXPECT_EQ(r.exitCode, 0) << "without the live claims the recreate cannot be judged: " << r.out;
}

TEST(LintCli, JsonAndSarifOutput) {
  auto j =
      lint({"--cluster-state", fixture("state.yaml"), "-o", "json", fixture("dangerous.yaml")});
  ASSERT_EQ(j.exitCode, 1) << j.err;
  json findings = json::parse(j.out);
  ASSERT_EQ(findings.size(), 2u);
  EXPECT_EQ(findings[0]["rule"], "statefulset-recreate");
  EXPECT_EQ(findings[0]["level"], "error");
  EXPECT_EQ(findings[0]["line"], 2);

  auto s =
      lint({"--cluster-state", fixture("state.yaml"), "-o", "sarif", fixture("dangerous.yaml")});
  ASSERT_EQ(s.exitCode, 1) << s.err;
  json sarif = json::parse(s.out);
  EXPECT_EQ(sarif["version"], "2.1.0");
  const json& run = sarif["runs"][0];
  EXPECT_EQ(run["tool"]["driver"]["name"], "stateguard");
  std::set<std::string> ruleIds;
  for (const auto& rule : run["tool"]["driver"]["rules"]) ruleIds.insert(rule["id"]);
  ASSERT_EQ(run["results"].size(), 2u);
  for (const auto& result : run["results"]) {
    EXPECT_TRUE(ruleIds.count(result["ruleId"])) << "every result's rule is described";
    EXPECT_EQ(result["level"], "error");
    const json& loc = result["locations"][0]["physicalLocation"];
    EXPECT_NE(loc["artifactLocation"]["uri"].get<std::string>().find("dangerous.yaml"),
              std::string::npos);
    EXPECT_GE(loc["region"]["startLine"].get<int>(), 1);
  }
}

TEST(LintCli, WarningsDoNotFail) {
  const std::string dir = makeTempDir("sg-lint");
  writeText(dir + "/policy.yaml", "rules: {statefulset-recreate: warn, reclaim-policy: warn}\n");
  auto r = lint({"--policy", dir + "/policy.yaml", "--cluster-state", fixture("state.yaml"),
                 fixture("dangerous.yaml")});
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("warning by statefulset-recreate"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 denied, 2 warning(s)"), std::string::npos) << r.out;
  removeTree(dir);
}

// Issue 17: a pipeline can fail on warnings too (Kyverno's --warn-exit-code); denials still
// exit 1, clean input 0, and a bad value is a usage error.
TEST(LintCli, WarnExitCodeMakesWarningsFailThePipeline) {
  const std::string dir = makeTempDir("sg-lint");
  writeText(dir + "/policy.yaml", "rules: {statefulset-recreate: warn, reclaim-policy: warn}\n");
  auto warned = lint({"--warn-exit-code", "3", "--policy", dir + "/policy.yaml", "--cluster-state",
                      fixture("state.yaml"), fixture("dangerous.yaml")});
  EXPECT_EQ(warned.exitCode, 3) << warned.out << warned.err;
  auto denied = lint({"--warn-exit-code", "3", "--cluster-state", fixture("state.yaml"),
                      fixture("dangerous.yaml")});
  EXPECT_EQ(denied.exitCode, 1) << denied.out << denied.err;
  auto clean = lint(
      {"--warn-exit-code", "3", "--cluster-state", fixture("state.yaml"), fixture("clean.yaml")});
  EXPECT_EQ(clean.exitCode, 0) << clean.out << clean.err;
  auto bad = lint({"--warn-exit-code", "many", fixture("clean.yaml")});
  EXPECT_EQ(bad.exitCode, 2);
  EXPECT_NE(bad.err.find("--warn-exit-code must be a number from 0 to 255"), std::string::npos)
      << bad.err;
  removeTree(dir);
}

TEST(StateguardctlCli, VersionAndTheKubectlPlugin) {
  auto v = runCommand(binaryPath("stateguardctl"), {"--version"});
  EXPECT_EQ(v.exitCode, 0);
  EXPECT_EQ(v.out.rfind("stateguardctl ", 0), 0u) << v.out;
  EXPECT_NE(v.out.find("."), std::string::npos) << v.out;
  // Shell completion completes commands and a command's flags (from its --help).
  const std::string bin0 = binaryPath("stateguardctl");
  auto complete = [&](const std::string& words, int cword) {
    return runCommand("/bin/bash", {"-c",
                                    "source <(\"$0\" completion bash) && COMP_WORDS=(" + words +
                                        ") && COMP_CWORD=" + std::to_string(cword) +
                                        " && _stateguardctl && echo \"${COMPREPLY[*]}\"",
                                    bin0});
  };
  EXPECT_EQ(complete(bin0 + " li", 1).out, "lint\n");
  EXPECT_NE(complete(bin0 + " lint --warn", 2).out.find("--warn-exit-code"), std::string::npos);
  EXPECT_EQ(runCommand(bin0, {"completion", "fish"}).exitCode, 2);
  // kubectl finds kubectl-stateguard on PATH: `kubectl stateguard ...` is stateguardctl.
  const std::string kubectl = findProgram("kubectl");
  if (kubectl.empty()) GTEST_SKIP() << "kubectl is not installed: plugin check skipped";
  const std::string bin = binaryPath("stateguardctl");
  const std::string dir = bin.substr(0, bin.rfind('/'));
  auto r = runCommand("/usr/bin/env",
                      {"PATH=" + dir + ":/usr/bin:/bin", kubectl, "stateguard", "rules"});
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("pv-delete"), std::string::npos) << r.out;
}

TEST(LintCli, AsAndAsGroupAreTheRequestingUser) {
  // Creating an object that carries the break-glass annotation is refused for an ordinary user.
  auto outsider = lint({fixture("warn-only.json")});
  EXPECT_EQ(outsider.exitCode, 1) << outsider.out;
  EXPECT_NE(outsider.out.find("user \"stateguardctl-lint\" may not set the break-glass annotation"),
            std::string::npos)
      << outsider.out;
  // A member of a break-glass group passes the group check; the fixture's until= (2099) is then
  // refused for being beyond the 24 h limit.
  auto member = lint({"--as", "oncall", "--as-group", "system:authenticated", "--as-group",
                      "stateguard:break-glass", fixture("warn-only.json")});
  EXPECT_EQ(member.exitCode, 1);
  EXPECT_NE(member.out.find("more than 24h from now"), std::string::npos) << member.out;
  EXPECT_EQ(member.out.find("may not set"), std::string::npos) << member.out;
}

TEST(LintCli, DirectoriesAndStdin) {
  auto dir = lint({"--cluster-state", fixture("state.yaml"), sourcePath("tests/fixtures/lint/")});
  EXPECT_EQ(dir.exitCode, 1) << dir.out << dir.err;
  // clean.yaml, dangerous.yaml, state.yaml and warn-only.json: every YAML and JSON file is read.
  EXPECT_NE(dir.out.find("in 4 file(s)"), std::string::npos) << dir.out;
  auto in =
      lint({"--cluster-state", fixture("state.yaml"), "-"}, readText(fixture("dangerous.yaml")));
  EXPECT_EQ(in.exitCode, 1);
  EXPECT_NE(in.out.find("stdin:2 (document 0)"), std::string::npos) << in.out;
}

TEST(LintCli, UnreadableInputExitsTwoAndSaysWhere) {
  auto missing = lint({"/nonexistent/manifests"});
  EXPECT_EQ(missing.exitCode, 2);
  EXPECT_NE(missing.err.find("/nonexistent/manifests: no such file or directory"),
            std::string::npos);
  auto broken = lint({"-"}, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n");
  EXPECT_EQ(broken.exitCode, 2);
  EXPECT_NE(broken.err.find("stdin: invalid YAML at line"), std::string::npos) << broken.err;
  auto notK8s = lint({"-"}, "just: data\n");
  EXPECT_EQ(notK8s.exitCode, 2);
  EXPECT_NE(notK8s.err.find("not a Kubernetes object"), std::string::npos) << notK8s.err;
  auto usage = lint({"-o", "xml", "-"});
  EXPECT_EQ(usage.exitCode, 2);
  EXPECT_NE(usage.err.find("usage: stateguardctl lint"), std::string::npos);
}

// Raw S3 lifecycle configurations (aws s3api JSON, also as YAML) and kops Cluster specs.
TEST(LintCli, SeedLifecycleJsonIsDeniedWithTheFix) {
  auto r = lint({lifecycleFixture("seed-lifecycle.json")});
  EXPECT_EQ(r.exitCode, 1) << r.out << r.err;
  for (const char* want :
       {"seed-lifecycle.json:1 (document 0) S3 lifecycle configuration",
        "DENIED by backup-lifecycle",
        "lifecycle rule \"expire-old-etcd-backups\" (Rules[0]) has prefix "
        "\"prod.k8s.local/backups/etcd/main\" and expires objects after 90 days",
        "prod.k8s.local/backups/etcd/main/control/", "seeds a brand-new empty etcd cluster",
        "spec.etcdClusters[].manager.backupRetentionDays", "1 denied"}) {
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
  }
}

TEST(LintCli, LifecycleRulesThatCannotReachControlFilesPass) {
  // A snapshot-date prefix, a tag filter, a disabled rule, an upload cleanup.
  auto r = lint({lifecycleFixture("snapshots-only.json")});
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("1 object(s) in 1 file(s): 0 denied"), std::string::npos) << r.out;
}

TEST(LintCli, CliInputJsonWithLegacyEmptyPrefixCoversTheWholeBucket) {
  auto r = lint({"-o", "json", lifecycleFixture("cli-input.json")});
  ASSERT_EQ(r.exitCode, 1) << r.out << r.err;
  json out = json::parse(r.out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["rule"], "backup-lifecycle");
  EXPECT_NE(out[0]["message"].get<std::string>().find(
                "has no prefix, so it applies to every object in the bucket"),
            std::string::npos);
}

TEST(LintCli, KopsClusterSpecAddsItsStorePathsToTheProtectedOnes) {
  // Alone, a rule on the cluster's folder names no store, and "cilium" is not etcd-manager's
  // default main/events: nothing to deny.
  auto alone = lint({lifecycleFixture("cluster-folder.yaml")});
  EXPECT_EQ(alone.exitCode, 0) << alone.out << alone.err;
  // With the kops Cluster spec in the same run, its stores (configBase and a custom
  // backupStore) are known: both rules reach control files.
  auto r = lint({"-o", "json", lifecycleFixture("kops-cluster.yaml"),
                 lifecycleFixture("cluster-folder.yaml")});
  ASSERT_EQ(r.exitCode, 1) << r.out << r.err;
  json out = json::parse(r.out);
  ASSERT_EQ(out.size(), 2u) << out.dump(2);
  const std::string folder = out[0]["message"];
  EXPECT_NE(folder.find("\"expire-cluster-folder\""), std::string::npos) << folder;
  EXPECT_NE(folder.find("prod.k8s.local/backups/etcd/main/control/, "
                        "prod.k8s.local/backups/etcd/events/control/ and "
                        "prod.k8s.local/backups/etcd/cilium/control/"),
            std::string::npos)
      << folder;
  const std::string cilium = out[1]["message"];
  EXPECT_NE(cilium.find("expires noncurrent versions after 7 days"), std::string::npos) << cilium;
  EXPECT_EQ(out[1]["line"], 4) << "the line where the document starts";

  // A policy in warn mode reports without failing the build.
  auto dir = makeTempDir("sg-lint-policy");
  writeText(dir + "/policy.yaml",
            "apiVersion: stateguard.io/v1alpha1\nkind: Policy\nrules:\n  backup-lifecycle: warn\n");
  auto warned = lint({"--policy", dir + "/policy.yaml", lifecycleFixture("seed-lifecycle.json")});
  EXPECT_EQ(warned.exitCode, 0) << warned.out << warned.err;
  EXPECT_NE(warned.out.find("warning by backup-lifecycle"), std::string::npos) << warned.out;
  removeTree(dir);
}

}  // namespace
}  // namespace stateguard::testing
