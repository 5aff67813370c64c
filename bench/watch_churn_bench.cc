// watch-churn-bench: the watch cache under Pod churn. The project's test API server holds PODS
// Pods (bench/generated_cluster.h) plus examples/cluster-state.yaml; the real
// stateguard-webhook (--kubeconfig, a child process) and an in-process WatchCache both list and
// watch it. Then, in phases:
//   quiet  (QUIET s)   no changes;
//   churn  (SECONDS s) RATE Pod events per second through the server's watch: about 82%
//                      MODIFIED (a label and the phase change), 9% DELETED each followed by an
//                      ADDED Pod (the Pod count stays put), applied in 10 ms batches;
//   quiet  (QUIET s)   no changes again.
// Every 5 s it prints the webhook's RSS (VmRSS of the child) and the in-process store's packed
// bytes. In every phase one thread judges examples/reviews/delete-bound-pv.json against the
// in-process cache 1,000 times a second the way review-path-bench does (decode, judge, audit
// line, encode; no HTTP or TLS), timing each review; it prints p50/p99/max per phase.
//
//   watch-churn-bench [PODS [RATE [SECONDS [QUIET]]]]     (default 100000 1000 60 15)

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/generated_cluster.h"
#include "bench/proc_stats.h"
#include "core/cluster_state.h"
#include "core/policy.h"
#include "core/watch_cache.h"
#include "tests/support/process.h"
#include "tests/support/test_apiserver.h"
#include "tests/support/tls_material.h"
#include "tests/support/webhook_process.h"
#include "webhook/admission.h"
#include "webhook/engine.h"
#include "webhook/registry.h"

using namespace stateguard;
using namespace stateguard::testing;
using stateguard::bench::rssKiB;
using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

double seconds(Steady::duration d) { return std::chrono::duration<double>(d).count(); }

/// Per-review latencies of one phase, in microseconds.
struct Latencies {
  std::vector<double> us;
  double pct(double p) {
    if (us.empty()) return 0;
    std::sort(us.begin(), us.end());
    return us[std::min(us.size() - 1, static_cast<size_t>(p * static_cast<double>(us.size())))];
  }
};

}  // namespace

int main(int argc, char** argv) {
  const int pods = argc > 1 ? std::stoi(argv[1]) : 100000;
  const int rate = argc > 2 ? std::stoi(argv[2]) : 1000;
  const int churnSeconds = argc > 3 ? std::stoi(argv[3]) : 60;
  const int quietSeconds = argc > 4 ? std::stoi(argv[4]) : 15;
  const std::string dir = makeTempDir("sg-churn-bench");
  auto tls = makeTlsMaterial(dir + "/api");
  if (!tls.ok()) {
    std::fprintf(stderr, "watch-churn-bench: %s\n", tls.error().c_str());
    return 2;
  }
  TestApiServerOptions options;
  options.historyLimit = 20000;  // bounded: the server's memory stays put too
  TestApiServer api(tls.value(), options);
  if (!api.start().ok() || !writeKubeconfig(dir + "/kubeconfig", api.kubeConfig()).ok()) {
    std::fprintf(stderr, "watch-churn-bench: the test API server did not start\n");
    return 2;
  }
  // The example state (the PV and claim the review deletes), then the generated Pods.
  auto example = loadClusterStateFile(sourcePath("examples/cluster-state.yaml"));
  auto body = readFile(sourcePath("examples/reviews/delete-bound-pv.json"));
  if (!example.ok() || !body.ok()) {
    std::fprintf(stderr, "watch-churn-bench: cannot read the examples\n");
    return 2;
  }
  for (const auto& rk : watchedKinds()) {
    for (const ObjectPtr& o : example.value()->list(rk.storeKey())) api.add(rk.storeKey(), *o);
  }
  for (int i = 0; i < pods; ++i) api.add("Pod", bench::pod(i, 0, pods));

  DevCerts certs = makeDevCerts(dir + "/certs");
  WebhookProcess webhook(dir, certs, {"--kubeconfig", dir + "/kubeconfig"});
  WatchCacheOptions cacheOptions;
  WatchCache cache(KubeClient::create(api.kubeConfig()).value(), cacheOptions);
  cache.start();
  const auto t0 = Steady::now();
  bool webhookReady = false;
  while (webhook.started() && webhook.process().running() && Steady::now() - t0 < 5min) {
    webhookReady = webhook.get("/readyz").first == 200;
    if (webhookReady && cache.ready()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (!webhookReady || !cache.ready()) {
    std::fprintf(stderr, "watch-churn-bench: not ready after 5 minutes\n");
    return 1;
  }
  std::printf("watch-churn-bench: %d Pods, both caches ready after %.1f s; %d events/s for %d s\n",
              pods, seconds(Steady::now() - t0), rate, churnSeconds);

  Engine engine(allRules());
  const Policy policy = defaultPolicy(ruleDefaults());
  std::atomic<bool> churning{false};
  std::atomic<uint64_t> applied{0};

  // The churn: batches every 10 ms, each event picked 80/10/10; Pods added get new numbers.
  std::atomic<bool> churnStop{false};
  std::thread churner([&] {
    std::minstd_rand rng(42);
    std::vector<int> live(static_cast<size_t>(pods));
    for (int i = 0; i < pods; ++i) live[static_cast<size_t>(i)] = i;
    int nextPod = pods;
    uint64_t version = 0;
    auto slot = Steady::now();
    double owed = 0;
    while (!churnStop.load()) {
      slot += std::chrono::milliseconds(10);
      std::this_thread::sleep_until(slot);
      if (!churning.load()) continue;
      owed += rate / 100.0;
      for (; owed >= 1; owed -= 1) {
        const auto pick = rng() % 100;
        const size_t at = rng() % live.size();
        if (pick < 10) {  // DELETED, and the Pod it makes room for ADDED
          json gone = bench::pod(live[at], 0, pods);
          api.remove("Pod", gone["metadata"]["namespace"].get<std::string>(),
                     gone["metadata"]["name"].get<std::string>());
          live[at] = nextPod++;
          api.add("Pod", bench::pod(live[at], 0, pods));
          ++applied;
          owed -= 1;
        } else {  // MODIFIED
          json p = bench::pod(live[at], 0, pods);
          p["metadata"]["labels"]["revision"] = std::to_string(++version);
          p["status"]["phase"] = version % 2 == 0 ? "Running" : "Succeeded";
          api.modify("Pod", std::move(p));
        }
        ++applied;
      }
    }
  });

  auto phase = [&](const char* name, int secs, bool churn) {
    churning.store(churn);
    Latencies lat;
    const uint64_t before = applied.load();
    const uint64_t eventsBefore = cache.stats("Pod").events;
    const auto start = Steady::now();
    auto nextReport = start + std::chrono::seconds(5);
    auto slot = start;
    size_t denied = 0;
    while (Steady::now() - start < std::chrono::seconds(secs)) {
      slot += std::chrono::milliseconds(1);  // 1,000 reviews a second
      std::this_thread::sleep_until(slot);
      const auto a = Steady::now();
      auto request = decodeReview(body.value());
      Decision d = engine.review(request.value(), cache, policy, Clock::now());
      std::string line = auditLine(request.value(), d, nowRfc3339());
      std::string out = encodeReviewResponse(request->uid, d.response);
      lat.us.push_back(std::chrono::duration<double, std::micro>(Steady::now() - a).count());
      if (!d.response.allowed) ++denied;
      if (Steady::now() >= nextReport) {
        nextReport += std::chrono::seconds(5);
        std::printf(
            "  %-6s t=%5.1f s  events applied %7llu  webhook RSS %6.1f MiB  store %6.1f MiB\n",
            name, seconds(Steady::now() - start),
            static_cast<unsigned long long>(applied.load() - before),
            static_cast<double>(rssKiB(webhook.process().pid())) / 1024.0,
            static_cast<double>(cache.store()->packedBytes()) / (1024.0 * 1024.0));
        std::fflush(stdout);
      }
    }
    churning.store(false);
    const size_t n = lat.us.size();
    std::printf(
        "| %s | %llu events (%.0f/s), %llu seen by the cache | %zu reviews (%zu denied) | p50 %.1f "
        "µs | p99 %.1f µs | max %.1f µs | webhook RSS %.1f MiB |\n",
        name, static_cast<unsigned long long>(applied.load() - before),
        static_cast<double>(applied.load() - before) / secs,
        static_cast<unsigned long long>(cache.stats("Pod").events - eventsBefore), n, denied,
        lat.pct(0.50), lat.pct(0.99), lat.pct(1.0),
        static_cast<double>(rssKiB(webhook.process().pid())) / 1024.0);
    std::fflush(stdout);
  };
  phase("quiet", quietSeconds, false);
  phase("churn", churnSeconds, true);
  phase("quiet", quietSeconds, false);
  churnStop.store(true);
  churner.join();
  std::printf("Pods in the in-process cache at the end: %zu\n", cache.store()->size("Pod"));
  cache.stop();
  removeTree(dir);
  return 0;
}
