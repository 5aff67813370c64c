// stateguardctl orphans through the real binary: unclaimed PVs, unused claims, backend volumes no
// PV references (plain CLI lists and Longhorn objects), a provisioner on its own storage, and the
// same from a live cluster (--kubeconfig against the test API server).

#include <gtest/gtest.h>

#include "core/json_yaml.h"
#include "tests/support/process.h"
#include "tests/support/test_apiserver.h"
#include "tests/support/tls_material.h"

namespace stateguard::testing {
namespace {

std::string fixture(const std::string& name) {
  return sourcePath("tests/fixtures/orphans/" + name);
}

CommandResult orphans(std::vector<std::string> args) {
  args.insert(args.begin(), "orphans");
  return runCommand(binaryPath("stateguardctl"), args);
}

std::set<std::string> strings(const json& list, const char* key = nullptr) {
  std::set<std::string> out;
  for (const auto& item : list)
    out.insert(key ? item[key].get<std::string>() : item.get<std::string>());
  return out;
}

TEST(OrphansCli, FindsWhatServesNobodyAndTheProvisionerOnItsOwnStorage) {
  auto r = orphans({"--cluster-state", fixture("state.yaml"), "--backend-volumes",
                    fixture("heketi-volumes.txt"), "-o", "json"});
  ASSERT_EQ(r.exitCode, 1) << r.err;
  json out = json::parse(r.out);
  EXPECT_EQ(strings(out["persistentVolumesWithoutClaim"], "name"),
            (std::set<std::string>{"pvc-old-released", "pv-available-old"}));
  EXPECT_EQ(strings(out["claimsWithoutPod"], "claim"), (std::set<std::string>{"apps/forgotten"}));
  EXPECT_EQ(strings(out["backendVolumesWithoutPV"]),
            (std::set<std::string>{"vol_orphan_a", "vol_orphan_b"}));
  ASSERT_EQ(out["provisionersOnOwnStorage"].size(), 1u);
  EXPECT_EQ(out["provisionersOnOwnStorage"][0]["pod"], "glusterfs/heketi-storage-1-x7k2p");
  EXPECT_EQ(out["provisionersOnOwnStorage"][0]["claim"], "glusterfs/heketi-db-storage");

  auto table = orphans({"--cluster-state", fixture("state.yaml"), "--backend-volumes",
                        fixture("heketi-volumes.txt")});
  EXPECT_NE(table.out.find("Backend volumes no PersistentVolume references: 2 of 6"),
            std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find("the provisioner that could repair it cannot start"), std::string::npos);
}

TEST(OrphansCli, AvailableThresholdAndLonghornVolumes) {
  auto r = orphans({"--cluster-state", fixture("state.yaml"), "--available-for", "100000d", "-o",
                    "json", "--backend-volumes", fixture("longhorn-volumes.yaml")});
  json out = json::parse(r.out);
  EXPECT_EQ(strings(out["persistentVolumesWithoutClaim"], "name"),
            (std::set<std::string>{"pvc-old-released"}))
      << "an Available PV younger than the threshold is not an orphan yet";
  EXPECT_EQ(strings(out["backendVolumesWithoutPV"]),
            (std::set<std::string>{"pvc-live", "pvc-gone"}));
}

TEST(OrphansCli, CleanStateExitsZero) {
  const std::string dir = makeTempDir("sg-orphans");
  writeText(dir + "/state.yaml",
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: "
            "a}\nspec: {volumeName: pv1}\n"
            "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n"
            "spec: {volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]}\n");
  auto r = orphans({"--cluster-state", dir + "/state.yaml"});
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
  removeTree(dir);
}

TEST(OrphansCli, FromALiveClusterThroughKubeconfig) {
  const std::string dir = makeTempDir("sg-orphans-live");
  auto tls = makeTlsMaterial(dir + "/tls");
  ASSERT_TRUE(tls.ok()) << tls.error();
  TestApiServer api(tls.value());
  ASSERT_TRUE(api.start().ok());
  auto objects = parseObjects(readText(fixture("state.yaml")), "state.yaml");
  ASSERT_TRUE(objects.ok());
  for (const auto& so : objects.value()) api.add(so.object["kind"].get<std::string>(), so.object);
  ASSERT_TRUE(writeKubeconfig(dir + "/kubeconfig", api.kubeConfig()).ok());
  auto r = orphans({"--kubeconfig", dir + "/kubeconfig", "-o", "json"});
  ASSERT_EQ(r.exitCode, 1) << r.err;
  json out = json::parse(r.out);
  EXPECT_EQ(strings(out["claimsWithoutPod"], "claim"), (std::set<std::string>{"apps/forgotten"}));
  EXPECT_EQ(out["provisionersOnOwnStorage"].size(), 1u);
  removeTree(dir);
}

TEST(OrphansCli, BadInput) {
  auto none = orphans({});
  EXPECT_EQ(none.exitCode, 2);
  EXPECT_NE(none.err.find("exactly one of --cluster-state"), std::string::npos);
  auto missing = orphans({"--cluster-state", "/nonexistent.yaml"});
  EXPECT_EQ(missing.exitCode, 2);
  EXPECT_NE(missing.err.find("/nonexistent.yaml"), std::string::npos);
  auto wrongKind = orphans(
      {"--cluster-state", fixture("state.yaml"), "--backend-volumes", fixture("state.yaml")});
  EXPECT_EQ(wrongKind.exitCode, 2);
  EXPECT_NE(wrongKind.err.find("expected Longhorn Volume objects or a plain list"),
            std::string::npos)
      << wrongKind.err;
  auto badDuration = orphans({"--cluster-state", fixture("state.yaml"), "--available-for", "soon"});
  EXPECT_EQ(badDuration.exitCode, 2);
}

}  // namespace
}  // namespace stateguard::testing
