// cache-start-bench: how long stateguard-webhook --kubeconfig takes to be ready (/readyz 200,
// every watched kind listed) when the project's test API server holds PODS Pods and CLAIMS
// claims with their PVs, served in pages of 500 as a real apiserver does; and the webhook's RSS
// once ready. Objects look like a real apiserver's (managedFields, status, env, probes).
//
//   cache-start-bench [PODS] [CLAIMS]      (default 100000 20000)

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "tests/support/process.h"
#include "tests/support/test_apiserver.h"
#include "tests/support/tls_material.h"
#include "tests/support/webhook_process.h"

using stateguard::json;
using namespace stateguard::testing;

namespace {

json managedFields() {
  return json::array(
      {{{"manager", "kube-controller-manager"},
        {"operation", "Update"},
        {"apiVersion", "v1"},
        {"time", "2026-11-01T10:00:00Z"},
        {"fieldsType", "FieldsV1"},
        {"fieldsV1",
         {{"f:metadata", {{"f:labels", {{".", json::object()}, {"f:app", json::object()}}}}},
          {"f:spec",
           {{"f:containers", {{"k:{\"name\":\"app\"}", {{"f:image", json::object()}}}}}}}}}},
       {{"manager", "kubelet"},
        {"operation", "Update"},
        {"subresource", "status"},
        {"fieldsV1",
         {{"f:status", {{"f:conditions", json::object()}, {"f:podIP", json::object()}}}}}}});
}

/// Claim c is mounted by Pod c * stride (and lives in its namespace).
int stride(int pods, int claims) { return claims > 0 ? std::max(1, pods / claims) : 1; }

json pod(int i, int claims, int pods) {
  const std::string ns = "team-" + std::to_string(i % 50);
  const std::string app = "app-" + std::to_string(i % 500);
  json volumes = json::array();
  const int s = stride(pods, claims);
  if (i % s == 0 && i / s < claims)
    volumes.push_back(
        {{"name", "data"},
         {"persistentVolumeClaim", {{"claimName", "data-" + std::to_string(i / s)}}}});
  json token = {{"serviceAccountToken", {{"path", "token"}}}};
  volumes.push_back({{"name", "kube-api-access"},
                     {"projected", {{"defaultMode", 420}, {"sources", json::array({token})}}}});
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata",
           {{"name", app + "-7c9f8d6b5-" + std::to_string(i)},
            {"namespace", ns},
            {"uid", "pod-uid-" + std::to_string(i)},
            {"creationTimestamp", "2026-11-01T10:00:00Z"},
            {"labels", {{"app", app}, {"pod-template-hash", "7c9f8d6b5"}}},
            {"ownerReferences",
             {{{"apiVersion", "apps/v1"},
               {"kind", "ReplicaSet"},
               {"name", app + "-7c9f8d6b5"},
               {"uid", "rs-uid"},
               {"controller", true},
               {"blockOwnerDeletion", true}}}},
            {"managedFields", managedFields()}}},
          {"spec",
           {{"nodeName", "node-" + std::to_string(i % 100)},
            {"volumes", volumes},
            {"containers",
             {{{"name", "app"},
               {"image", "registry.example.com/team/app:1." + std::to_string(i % 30) + ".0"},
               {"env", {{{"name", "LOG_LEVEL"}, {"value", "info"}}}},
               {"resources", {{"requests", {{"cpu", "100m"}, {"memory", "128Mi"}}}}},
               {"readinessProbe", {{"httpGet", {{"path", "/ready"}, {"port", 8080}}}}}}}}}},
          {"status",
           {{"phase", "Running"},
            {"podIP", "10.244.0." + std::to_string(i % 250)},
            {"conditions", {{{"type", "Ready"}, {"status", "True"}}}},
            {"containerStatuses",
             {{{"name", "app"}, {"ready", true}, {"restartCount", 0}, {"started", true}}}}}}};
}

long rssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

}  // namespace

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
  const auto started = std::chrono::steady_clock::now();
  WebhookProcess webhook(dir, certs, {"--kubeconfig", dir + "/kubeconfig"});
  double readySeconds = -1;
  while (webhook.started() && webhook.process().running()) {
    if (webhook.get("/readyz").first == 200) {
      readySeconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      break;
    }
    if (std::chrono::steady_clock::now() - started > std::chrono::minutes(5)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));  // jemalloc gives freed pages back
  const long rss = rssKiB(webhook.process().pid());
  const int objects = pods + 2 * claims;
  std::printf(
      "| Pods | claims + PVs | list pages of Pods | ready after | RSS | RSS per object |\n");
  std::printf("|---|---|---|---|---|---|\n");
  std::printf("| %d | %d | %zu | %s | %.0f MiB | %.2f KiB |\n", pods, 2 * claims,
              api.listRequests("Pod"),
              readySeconds < 0 ? "never (5 min)" : (std::to_string(readySeconds) + " s").c_str(),
              rss / 1024.0, objects > 0 ? rss / static_cast<double>(objects) : 0.0);
  removeTree(dir);
  return readySeconds < 0 ? 1 : 0;
}
