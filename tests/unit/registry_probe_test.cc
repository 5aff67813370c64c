// The live probe against registries the test starts on 127.0.0.1: a healthy one (/v2/ 200,
// manifests with Docker-Content-Digest), one asking for a token (401), a path that 404s, an
// upstream endpoint whose path loses the manifests, a closed port, and a registry too slow for
// the time budget.

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <thread>

#include "registry/mirrors.h"
#include "registry/probe.h"

namespace stateguard::registry {
namespace {

/// A registry on 127.0.0.1 (port 0): /v2/ answers `rootStatus`, manifests of library/busybox
/// exist at /v2/..., everything else is 404; `/slow/` sleeps first.
class LoopbackRegistry {
 public:
  explicit LoopbackRegistry(int rootStatus) {
    server_.Get("/v2/", [rootStatus](const httplib::Request&, httplib::Response& res) {
      res.status = rootStatus;
      if (rootStatus == 401)
        res.set_header("WWW-Authenticate", "Bearer realm=\"http://127.0.0.1/token\"");
    });
    server_.Get(R"(/v2/library/busybox/manifests/latest)",
                [](const httplib::Request&, httplib::Response& res) {
                  res.set_header("Docker-Content-Digest", "sha256:0123");
                  res.set_content("{}", "application/vnd.oci.image.index.v1+json");
                });
    server_.Get(R"(/slow/.*)", [](const httplib::Request&, httplib::Response& res) {
      std::this_thread::sleep_for(std::chrono::seconds(3));
      res.status = 200;
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~LoopbackRegistry() {
    server_.stop();
    thread_.join();
  }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

std::vector<Mirror> hosts(const std::string& toml, const std::string& registry) {
  auto r = parseHostsToml(toml, "hosts.toml", registry);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error());
  return r.ok() ? r.value() : std::vector<Mirror>{};
}

ProbeOptions fast() {
  ProbeOptions o;
  o.budget = std::chrono::milliseconds(2500);
  o.perRequest = std::chrono::milliseconds(1000);
  return o;
}

TEST(RegistryProbe, HealthyAndTokenAskingRegistriesPass) {
  LoopbackRegistry ok(200);
  LoopbackRegistry auth(401);
  const auto ms = hosts(
      "[host.\"http://" + ok.host() + "\"]\n[host.\"http://" + auth.host() + "\"]\n", "docker.io");
  EXPECT_TRUE(probeMirrors(ms, fast()).empty());
}

TEST(RegistryProbe, AWrongPathIsReported) {
  LoopbackRegistry reg(200);
  const auto ms =
      hosts("[host.\"http://" + reg.host() + "/harbor\"]\n  override_path = true\n", "docker.io");
  const auto f = probeMirrors(ms, fast());
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NE(f[0].message.find("answered HTTP 404 to GET http://" + reg.host() + "/harbor/"),
            std::string::npos)
      << f[0].message;
}

TEST(RegistryProbe, AnUpstreamEndpointThatLosesManifestsIsReported) {
  // The registry the mirror is for is the loopback registry itself: listed again with
  // override_path on "/v2", /v2/ answers but the manifest lookup goes to /v2/library/... — found.
  LoopbackRegistry up(200);
  const auto good =
      hosts("[host.\"http://" + up.host() + "/v2\"]\n  override_path = true\n", up.host());
  EXPECT_TRUE(probeMirrors(good, fast()).empty());
  // Without override_path the runtime asks /v2/v2/...: /v2/v2/ is not the API root.
  const auto bad = hosts("[host.\"http://" + up.host() + "/v2\"]\n", up.host());
  const auto f = probeMirrors(bad, fast());
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NE(f[0].message.find("/v2/v2/"), std::string::npos) << f[0].message;

  // Talos seed-style: the upstream with override_path and no path: GET / is 404 already.
  ProbeOptions o = fast();
  o.image = "library/busybox";
  const auto seed =
      hosts("[host.\"http://" + up.host() + "\"]\n  override_path = true\n", up.host());
  ASSERT_EQ(probeMirrors(seed, o).size(), 1u);
}

TEST(RegistryProbe, AManifestMissingUpstreamIs404) {
  LoopbackRegistry up(200);
  ProbeOptions o = fast();
  o.image = "library/does-not-exist";
  const auto ms = hosts("[host.\"http://" + up.host() + "\"]\n", up.host());
  const auto f = probeMirrors(ms, o);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NE(f[0].message.find("answers 404 for http://" + up.host() +
                              "/v2/library/does-not-exist/manifests/latest"),
            std::string::npos)
      << f[0].message;
}

TEST(RegistryProbe, AClosedPortIsReported) {
  const auto ms = hosts("[host.\"http://127.0.0.1:1\"]\n", "docker.io");
  const auto f = probeMirrors(ms, fast());
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NE(f[0].message.find("answered nothing"), std::string::npos) << f[0].message;
}

TEST(RegistryProbe, TheBudgetBoundsTheWholeProbe) {
  LoopbackRegistry reg(200);
  std::string toml;
  for (int i = 0; i < 5; ++i)
    toml += "[host.\"http://" + reg.host() + "/slow/" + std::to_string(i) +
            "\"]\n  override_path = true\n";
  ProbeOptions o;
  o.budget = std::chrono::milliseconds(800);
  o.perRequest = std::chrono::milliseconds(500);
  const auto start = std::chrono::steady_clock::now();
  const auto f = probeMirrors(hosts(toml, "docker.io"), o);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::milliseconds(1500));
  EXPECT_GE(f.size(), 1u) << "the first slow endpoint times out and is reported";
}

}  // namespace
}  // namespace stateguard::registry
