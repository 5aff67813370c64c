// The registry mirror model: each parser (Talos, hosts.toml, registries.yaml, registries.conf)
// builds the same model from its format, errors carry file and line, and the checks judge the
// seed, its fix, and the Spegel/Dragonfly set-ups.

#include <gtest/gtest.h>

#include "core/json_yaml.h"
#include "registry/checks.h"
#include "registry/kube.h"
#include "registry/mirrors.h"
#include "tests/support/process.h"

namespace stateguard::registry {
namespace {

std::string fixture(const std::string& name) {
  auto text = readFile(testing::sourcePath("tests/fixtures/registry/" + name));
  EXPECT_TRUE(text.ok()) << name;
  return text.ok() ? text.value() : std::string();
}

std::vector<Mirror> parse(const std::string& name, const std::string& registry = "") {
  auto r = parseMirrorText(fixture(name), name, kindFromName(name), registry);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error());
  return r.ok() ? r.value() : std::vector<Mirror>{};
}

const Mirror& mirrorFor(const std::vector<Mirror>& ms, const std::string& registry) {
  for (const auto& m : ms)
    if (m.registry == registry) return m;
  static const Mirror kNone;
  ADD_FAILURE() << "no mirror for " << registry;
  return kNone;
}

TEST(RegistryModel, TalosLegacyAppliesOneOverridePathToEveryEndpoint) {
  const auto ms = parse("talos/seed-controlplane.yaml");
  ASSERT_EQ(ms.size(), 2u);
  const Mirror& d = mirrorFor(ms, "docker.io");
  EXPECT_EQ(d.format, Format::Talos);
  EXPECT_TRUE(d.upstreamLast);
  ASSERT_EQ(d.endpoints.size(), 2u);
  EXPECT_EQ(d.endpoints[0].host, "harbor.example.internal");
  EXPECT_EQ(d.endpoints[0].path, "/v2/proxy-docker.io");
  EXPECT_TRUE(d.endpoints[0].overridePath);
  EXPECT_EQ(d.endpoints[1].host, "registry-1.docker.io");
  EXPECT_TRUE(d.endpoints[1].overridePath) << "one overridePath per mirror, for every endpoint";
}

TEST(RegistryModel, TalosSkipFallbackMakesTheLastEndpointTheServer) {
  const auto ms = parse("talos/no-fallback-worker.yaml");
  const Mirror& all = mirrorFor(ms, "*");
  EXPECT_FALSE(all.upstreamLast);
  EXPECT_EQ(all.noFallbackBecause, "skipFallback: true");
  ASSERT_EQ(all.endpoints.size(), 1u);
  EXPECT_TRUE(all.endpoints[0].isServer);
}

TEST(RegistryModel, RegistryMirrorConfigReplacesTheLegacyEntryAndHasPerEndpointOverridePath) {
  const auto ms = parse("talos/registry-mirror-config.yaml");
  ASSERT_EQ(ms.size(), 1u);
  EXPECT_EQ(ms[0].where, "RegistryMirrorConfig docker.io");
  ASSERT_EQ(ms[0].endpoints.size(), 2u);
  EXPECT_TRUE(ms[0].endpoints[0].overridePath);
  EXPECT_FALSE(ms[0].endpoints[1].overridePath);
  EXPECT_TRUE(checkBrokenFallback(ms).empty());
}

TEST(RegistryModel, HostsTomlKeepsFileOrderCapabilitiesAndServer) {
  const auto ms = parse("containerd/dragonfly/hosts.d/docker.io/hosts.toml", "docker.io");
  ASSERT_EQ(ms.size(), 1u);
  const Mirror& m = ms[0];
  EXPECT_EQ(m.registry, "docker.io");
  EXPECT_FALSE(m.upstreamLast);
  ASSERT_EQ(m.endpoints.size(), 2u);
  EXPECT_EQ(m.endpoints[0].host, "127.0.0.1:65001");
  EXPECT_EQ(m.endpoints[0].line, 4u);
  EXPECT_TRUE(m.endpoints[1].isServer);
  EXPECT_EQ(m.endpoints[1].host, "docker.io");

  auto order = parseHostsToml(
      "[host.\"https://z.example\"]\n[host.\"https://a.example\"]\n  capabilities = [\"pull\"]\n",
      "hosts.toml", "ghcr.io");
  ASSERT_TRUE(order.ok()) << order.error();
  ASSERT_EQ(order->front().endpoints.size(), 2u);
  EXPECT_EQ(order->front().endpoints[0].host, "z.example") << "containerd tries file order";
  EXPECT_FALSE(order->front().endpoints[1].resolve);
  EXPECT_TRUE(order->front().upstreamLast);
}

TEST(RegistryModel, K3sPathsOtherThanV2ImplyOverridePath) {
  const auto ms = parse("k3s/upstream-path/registries.yaml");
  ASSERT_EQ(ms.size(), 1u);
  ASSERT_EQ(ms[0].endpoints.size(), 2u);
  EXPECT_FALSE(ms[0].endpoints[0].overridePath);
  EXPECT_TRUE(ms[0].endpoints[1].overridePath);
  auto v2 = parseK3sRegistries("mirrors:\n  docker.io:\n    endpoint: [\"https://m.example/v2\"]\n",
                               "r.yaml", true);
  ASSERT_TRUE(v2.ok());
  EXPECT_FALSE(v2->front().endpoints[0].overridePath);
  EXPECT_FALSE(v2->front().upstreamLast);
}

TEST(RegistryModel, CrioMirrorsThenPrimaryUnlessBlocked) {
  const auto ok = parse("crio/ok/registries.conf");
  ASSERT_EQ(ok.size(), 1u);
  ASSERT_EQ(ok[0].endpoints.size(), 2u);
  EXPECT_EQ(ok[0].endpoints[0].host, "127.0.0.1:5001");
  EXPECT_TRUE(ok[0].endpoints[1].isServer);
  const auto blocked = parse("crio/blocked/registries.conf");
  ASSERT_EQ(blocked[0].endpoints.size(), 1u);
  EXPECT_EQ(blocked[0].noFallbackBecause, "blocked = true");
  auto digest = parseCrioConf(
      "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\nblocked = true\n"
      "mirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"127.0.0.1:5001\"\n",
      "r.conf");
  ASSERT_TRUE(digest.ok());
  EXPECT_FALSE(digest->front().endpoints[0].resolve);
  const auto f = checkBrokenFallback(digest.value());
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NE(f[0].message.find("no endpoint may resolve a tag"), std::string::npos);
}

TEST(RegistryModel, MalformedInputNamesFileAndLine) {
  auto t = parseMirrorText(fixture("containerd/malformed/hosts.d/docker.io/hosts.toml"),
                           "hosts.d/docker.io/hosts.toml", FileKind::HostsToml, "docker.io");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().rfind("hosts.d/docker.io/hosts.toml:4:", 0), 0u) << t.error();
  EXPECT_NE(t.error().find("invalid TOML"), std::string::npos) << t.error();

  auto c = parseMirrorText(fixture("crio/malformed/registries.conf"), "registries.conf",
                           FileKind::CrioConf);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().rfind("registries.conf:3:", 0), 0u) << c.error();

  auto y = parseMirrorText(fixture("talos/malformed.yaml"), "malformed.yaml", FileKind::Talos);
  ASSERT_FALSE(y.ok());
  EXPECT_NE(y.error().find("malformed.yaml: invalid YAML at line"), std::string::npos) << y.error();
  auto k = parseMirrorText(fixture("k3s/malformed/registries.yaml"), "registries.yaml",
                           FileKind::K3sRegistries);
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.error().find("registries.yaml: invalid YAML at line"), std::string::npos)
      << k.error();
}

TEST(RegistryChecks, TheSeedIsBrokenAndItsFixIsNot) {
  const auto seed = parse("talos/seed-controlplane.yaml");
  const auto f = checkBrokenFallback(seed);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NE(f[0].message.find("remove the explicit upstream endpoint https://registry-1.docker.io"),
            std::string::npos)
      << f[0].message;
  EXPECT_LT(f[0].warning.size(), 120u);
  EXPECT_TRUE(checkBrokenFallback(parse("talos/fixed-controlplane.yaml")).empty());
  EXPECT_TRUE(checkNoFallback(parse("talos/fixed-controlplane.yaml"), CheckOptions{}).empty());
}

TEST(RegistryChecks, SpegelAndDragonflyPass) {
  const CheckOptions opts = optionsFromParams(json::object());
  for (const auto& [file, reg] : std::vector<std::pair<std::string, std::string>>{
           {"talos/spegel-worker.yaml", ""},
           {"k3s/spegel/registries.yaml", ""},
           {"containerd/spegel/hosts.d/docker.io/hosts.toml", "docker.io"},
           {"containerd/dragonfly/hosts.d/docker.io/hosts.toml", "docker.io"},
           {"crio/ok/registries.conf", ""}}) {
    const auto ms = parse(file, reg);
    EXPECT_FALSE(ms.empty()) << file;
    EXPECT_TRUE(checkNoFallback(ms, opts).empty()) << file;
    EXPECT_TRUE(checkBrokenFallback(ms).empty()) << file;
    EXPECT_TRUE(checkClusterDns(ms).empty()) << file;
  }
}

TEST(RegistryChecks, InClusterHosts) {
  const CheckOptions opts = optionsFromParams(json{{"inClusterHosts", {"*.corp.internal"}}});
  EXPECT_NE(inClusterReason("127.0.0.1:65001", opts), "");
  EXPECT_NE(inClusterReason("[::1]:5000", opts), "");
  EXPECT_NE(inClusterReason("10.96.0.10", opts), "");
  EXPECT_NE(inClusterReason("10.43.2.2:5000", opts), "");
  EXPECT_NE(inClusterReason("192.168.1.20:30002", opts), "");
  EXPECT_NE(inClusterReason("harbor.harbor.svc:443", opts), "");
  EXPECT_NE(inClusterReason("harbor.corp.internal", opts), "");
  EXPECT_EQ(inClusterReason("192.168.1.20:5000", opts), "");
  EXPECT_EQ(inClusterReason("registry.example.com", opts), "");
}

TEST(RegistryChecks, ImageRegistries) {
  EXPECT_EQ(imageRegistry("nginx"), "docker.io");
  EXPECT_EQ(imageRegistry("goharbor/harbor-core:v2.11.1"), "docker.io");
  EXPECT_EQ(imageRegistry("docker.io/library/busybox:1.36"), "docker.io");
  EXPECT_EQ(imageRegistry("index.docker.io/library/busybox"), "docker.io");
  EXPECT_EQ(imageRegistry("ghcr.io/spegel-org/spegel:v0.0.28"), "ghcr.io");
  EXPECT_EQ(imageRegistry("localhost:5000/x"), "localhost:5000");
  EXPECT_EQ(imageRegistry("localhost/x"), "localhost");
}

TEST(RegistryChecks, WorkingFallback) {
  const CheckOptions opts = optionsFromParams(json::object());
  EXPECT_FALSE(hasWorkingFallback(parse("talos/seed-controlplane.yaml")[0], opts))
      << "the seed's upstream endpoint 404s";
  EXPECT_TRUE(hasWorkingFallback(parse("talos/fixed-controlplane.yaml")[0], opts));
  EXPECT_FALSE(hasWorkingFallback(parse("talos/no-fallback-worker.yaml")[0], opts));
  EXPECT_TRUE(hasWorkingFallback(
      parse("containerd/dragonfly/hosts.d/docker.io/hosts.toml", "docker.io")[0], opts));
}

TEST(RegistryKube, UnrelatedConfigMapsAreNotParsed) {
  json cm = {{"apiVersion", "v1"},
             {"kind", "ConfigMap"},
             {"metadata", {{"name", "x"}, {"namespace", "y"}}},
             {"data", {{"nginx.conf", "[[registry]] not really"}, {"a", "mirrors:"}}}};
  const auto r = mirrorsOfObject(cm, "", kDefaultConfigLabel);
  EXPECT_FALSE(r.carriesConfig);
  EXPECT_TRUE(r.errors.empty());
  EXPECT_TRUE(r.mirrors.empty());
}

TEST(RegistryKube, Base64) {
  auto d = decodeBase64("aGVsbG8gd29ybGQ=");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value(), "hello world");
  EXPECT_FALSE(decodeBase64("not*base64").ok());
}

}  // namespace
}  // namespace stateguard::registry
