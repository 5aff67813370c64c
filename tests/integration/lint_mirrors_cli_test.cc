// stateguardctl lint on registry mirror configurations through the real binary: Talos machine
// configs, containerd hosts.d trees, k3s registries.yaml (with config.yaml), CRI-O
// registries.conf and Kubernetes objects carrying them; exit codes 0/1/2 and file:line.

#include <gtest/gtest.h>

#include "core/json_yaml.h"
#include "tests/support/process.h"

namespace stateguard::testing {
namespace {

std::string fixture(const std::string& name) {
  return sourcePath("tests/fixtures/registry/" + name);
}

CommandResult lint(std::vector<std::string> args) {
  args.insert(args.begin(), "lint");
  return runCommand(binaryPath("stateguardctl"), args, "");
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(LintMirrors, TheSeedTalosConfigIsDeniedWithTheFix) {
  auto r = lint({fixture("talos/seed-controlplane.yaml")});
  EXPECT_EQ(r.exitCode, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.out,
                  "seed-controlplane.yaml:16 (document 0) Talos machine config: DENIED by "
                  "registry-broken-fallback"))
      << r.out;
  EXPECT_TRUE(has(r.out, "Fix: remove the explicit upstream endpoint https://registry-1.docker.io"))
      << r.out;
  EXPECT_TRUE(has(r.out, "1 denied")) << r.out;
}

TEST(LintMirrors, TheSeedWithoutTheUpstreamEndpointPasses) {
  auto r = lint({fixture("talos/fixed-controlplane.yaml")});
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "2 object(s) in 1 file(s): 0 denied, 0 warning(s)")) << r.out;
}

TEST(LintMirrors, SpegelAndDragonflyStylePass) {
  auto r = lint({fixture("talos/spegel-worker.yaml"), fixture("k3s/spegel"),
                 fixture("containerd/spegel"), fixture("containerd/dragonfly"), fixture("crio/ok"),
                 fixture("talos/registry-mirror-config.yaml")});
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "0 denied, 0 warning(s)")) << r.out;
}

TEST(LintMirrors, NoFallbackInEveryFormat) {
  for (const auto& [path, where] : std::vector<std::pair<std::string, std::string>>{
           {"talos/no-fallback-worker.yaml", "no-fallback-worker.yaml:6 "},
           {"containerd/no-fallback", "no-fallback/hosts.d/docker.io/hosts.toml:1 "},
           {"k3s/no-fallback", "no-fallback/registries.yaml:2 "},
           {"crio/blocked", "blocked/registries.conf:1 "}}) {
    auto r = lint({fixture(path)});
    EXPECT_EQ(r.exitCode, 1) << path << "\n" << r.out << r.err;
    EXPECT_TRUE(has(r.out, where)) << path << "\n" << r.out;
    EXPECT_TRUE(has(r.out, "DENIED by registry-no-fallback")) << path << "\n" << r.out;
  }
}

TEST(LintMirrors, BrokenFallbackInEveryFormat) {
  for (const auto& [path, where] : std::vector<std::pair<std::string, std::string>>{
           {"containerd/upstream-override", "upstream-override/hosts.d/docker.io/hosts.toml:5 "},
           {"k3s/upstream-path", "upstream-path/registries.yaml:5 "},
           {"crio/upstream-path", "upstream-path/registries.conf:8 "}}) {
    auto r = lint({fixture(path)});
    EXPECT_EQ(r.exitCode, 1) << path << "\n" << r.out << r.err;
    EXPECT_TRUE(has(r.out, where)) << path << "\n" << r.out;
    EXPECT_TRUE(has(r.out, "DENIED by registry-broken-fallback")) << path << "\n" << r.out;
  }
}

TEST(LintMirrors, ClusterDnsWarnsInEveryFormatAndDeniesWhenEnforced) {
  const std::vector<std::string> paths = {fixture("talos/cluster-dns-worker.yaml"),
                                          fixture("containerd/cluster-dns"),
                                          fixture("k3s/cluster-dns"), fixture("crio/cluster-dns")};
  auto r = lint(paths);
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "0 denied, 4 warning(s)")) << r.out;
  EXPECT_TRUE(has(r.out, "cluster-dns-worker.yaml:8 ")) << r.out;

  const std::string dir = makeTempDir("lint-mirrors");
  const std::string policy = dir + "/policy.yaml";
  writeText(policy,
            "apiVersion: stateguard.io/v1alpha1\nkind: Policy\nrules:\n"
            "  registry-cluster-dns: enforce\n");
  std::vector<std::string> args = {"--policy", policy};
  args.insert(args.end(), paths.begin(), paths.end());
  auto e = lint(args);
  EXPECT_EQ(e.exitCode, 1) << e.out << e.err;
  EXPECT_TRUE(has(e.out, "4 denied")) << e.out;
  removeTree(dir);
}

TEST(LintMirrors, KubernetesObjectsCarryingMirrorsGoThroughTheRules) {
  auto r = lint({"-o", "json", fixture("kubernetes/talosconfig-seed.yaml")});
  ASSERT_EQ(r.exitCode, 1) << r.out << r.err;
  json findings = json::parse(r.out);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0]["rule"], "registry-broken-fallback");
  EXPECT_EQ(findings[0]["object"], "TalosConfigTemplate capi/workers");
}

TEST(LintMirrors, MalformedTomlAndYamlExitTwoWithFileAndLine) {
  for (const auto& [path, where] : std::vector<std::pair<std::string, std::string>>{
           {"containerd/malformed", "malformed/hosts.d/docker.io/hosts.toml:4:1: invalid TOML"},
           {"crio/malformed", "malformed/registries.conf:3:"},
           {"talos/malformed.yaml", "malformed.yaml: invalid YAML at line 7"},
           {"k3s/malformed", "malformed/registries.yaml: invalid YAML at line"}}) {
    auto r = lint({fixture(path)});
    EXPECT_EQ(r.exitCode, 2) << path << "\n" << r.out << r.err;
    EXPECT_TRUE(has(r.err, where)) << path << "\n" << r.err;
  }
}

TEST(LintMirrors, ATreeOfEveryFormatIsWalked) {
  // The directory walk picks up hosts.toml and registries.conf besides *.yaml.
  auto r = lint({"-o", "json", fixture("containerd/upstream-override"), fixture("crio/blocked")});
  ASSERT_EQ(r.exitCode, 1) << r.err;
  json findings = json::parse(r.out);
  ASSERT_EQ(findings.size(), 2u) << r.out;
  EXPECT_EQ(findings[0]["object"], "containerd hosts.toml");
  EXPECT_EQ(findings[1]["object"], "CRI-O registries.conf");
}

}  // namespace
}  // namespace stateguard::testing
