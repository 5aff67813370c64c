// cache-start-bench: how long stateguard-webhook --kubeconfig takes to be ready (/readyz 200,
// every watched kind listed) when the project's test API server holds PODS Pods and CLAIMS
// claims with their PVs, served in pages of 500 as a real apiserver does; and the webhook's RSS
// once ready. Objects look like a real apiserver's (managedFields, status, env, probes).
//
//   cache-start-bench [PODS] [CLAIMS]      (default 100000 20000)
//
// BASELINE_BIN=<another build's stateguard-webhook> starts that one too, against the same server,
// alternating with this build's; BENCH_ROUNDS=N repeats (default 1).

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/generated_cluster.h"
#include "bench/proc_stats.h"
#include "tests/support/process.h"
#include "tests/support/test_apiserver.h"
#include "tests/support/tls_material.h"
#include "tests/support/webhook_process.h"

using stateguard::json;
using namespace stateguard::testing;
using namespace stateguard::bench;

int main(int argc, char** argv) {
  const int pods = argc > 1 ? std::stoi(argv[1]) : 100000;
  const int claims = argc > 2 ? std::stoi(argv[2]) : 20000;
  const std::string dir = makeTempDir("sg-start-bench");
  auto tls = makeTlsMaterial(dir + "/api");
  if (!tls.ok()) {
    std::fprintf(stderr, "cache-start-bench: %s\n", tls.error().c_str());
    return 2;
  }
  TestApiServerOptions options;
  options.historyLimit = 16;  // no watch history is needed: every object is listed
  TestApiServer api(tls.value(), options);
  if (!api.start().ok() || !writeKubeconfig(dir + "/kubeconfig", api.kubeConfig()).ok()) {
    std::fprintf(stderr, "cache-start-bench: the test API server did not start\n");
    return 2;
  }
  for (int i = 0; i < pods; ++i) api.add("Pod", pod(i, claims, pods));
  for (int c = 0; c < claims; ++c) {
    const std::string ns = "team-" + std::to_string((c * stride(pods, claims)) % 50);
    const std::string pv = "pvc-" + std::to_string(c);
    api.add("PersistentVolumeClaim",
            {{"metadata",
              {{"name", "data-" + std::to_string(c)},
               {"namespace", ns},
               {"finalizers", {"kubernetes.io/pvc-protection"}},
               {"managedFields", managedFields()}}},
             {"spec", {{"volumeName", pv}, {"storageClassName", "longhorn"}}},
             {"status", {{"phase", "Bound"}}}});
    api.add("PersistentVolume",
            {{"metadata", {{"name", pv}, {"managedFields", managedFields()}}},
             {"spec",
              {{"claimRef", {{"name", "data-" + std::to_string(c)}, {"namespace", ns}}},
               {"csi", {{"driver", "driver.longhorn.io"}, {"volumeHandle", pv}}},
               {"persistentVolumeReclaimPolicy", "Delete"},
               {"storageClassName", "longhorn"}}},
             {"status", {{"phase", "Bound"}}}});
  }
  DevCerts certs = makeDevCerts(dir + "/certs");
  // Builds to compare, started alternately against the same server, ROUNDS times.
  std::vector<std::pair<std::string, std::string>> builds;  // label, binary ("" = this build)
  if (const char* base = std::getenv("BASELINE_BIN"); base != nullptr && *base != '\0')
    builds.emplace_back("baseline", base);
  builds.emplace_back("this build", "");
  const char* roundsEnv = std::getenv("BENCH_ROUNDS");
  const int rounds = roundsEnv != nullptr ? std::max(1, std::atoi(roundsEnv)) : 1;
  const int objects = pods + 2 * claims;
  bool allReady = true;
  std::printf(
      "| build | round | Pods | claims + PVs | list pages of Pods | ready after | webhook CPU | "
      "server CPU | RSS | RSS per object |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (int round = 1; round <= rounds; ++round) {
    for (const auto& [label, binary] : builds) {
      const size_t pagesBefore = api.listRequests("Pod");
      const auto started = std::chrono::steady_clock::now();
      const double serverCpuBefore = cpuSeconds("self");
      WebhookProcess webhook(dir, certs, {"--kubeconfig", dir + "/kubeconfig"}, {}, binary);
      double readySeconds = -1;
      double webhookCpu = -1;
      double serverCpu = -1;
      while (webhook.started() && webhook.process().running()) {
        if (webhook.get("/readyz").first == 200) {
          readySeconds =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
          webhookCpu = cpuSeconds(std::to_string(webhook.process().pid()));
          serverCpu = cpuSeconds("self") - serverCpuBefore;
          break;
        }
        if (std::chrono::steady_clock::now() - started > std::chrono::minutes(5)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      std::this_thread::sleep_for(std::chrono::seconds(3));  // jemalloc gives freed pages back
      const long rss = rssKiB(webhook.process().pid());
      allReady = allReady && readySeconds >= 0;
      std::printf(
          "| %s | %d | %d | %d | %zu | %s | %.1f s | %.1f s | %.0f MiB | %.2f KiB |\n",
          label.c_str(), round, pods, 2 * claims, api.listRequests("Pod") - pagesBefore,
          readySeconds < 0 ? "never (5 min)" : (std::to_string(readySeconds) + " s").c_str(),
          webhookCpu, serverCpu, static_cast<double>(rss) / 1024.0,
          objects > 0 ? static_cast<double>(rss) / objects : 0.0);
      std::fflush(stdout);
    }
  }
  removeTree(dir);
  return allReady ? 0 : 1;
}
