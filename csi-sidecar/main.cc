// stateguard-csi: CSI node sidecar that refuses to let a driver format a volume that holds data.
// main() only parses flags, builds the parts and runs them.

#include <pthread.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "core/audit.h"
#include "core/flags.h"
#include "core/kube_client.h"
#include "core/log.h"
#include "core/watch_cache.h"
#include "csi-sidecar/guard.h"
#include "csi-sidecar/proxy.h"
#include "csi-sidecar/sidecar_http.h"

using namespace stateguard;
using namespace stateguard::csi;

namespace {

constexpr const char* kUsage =
    R"(usage: stateguard-csi --csi-address unix:///PATH --driver-address unix:///PATH
           --ledger-dir DIR --device-path-template TEMPLATE
           [--device-root DIR]... [--kubeconfig FILE | --in-cluster] [--node-name NAME]
           [--driver-name NAME] [--http-endpoint HOST:PORT] [--audit-log FILE|-]

  --csi-address unix:///PATH     socket this sidecar serves; point node-driver-registrar's
                                 --kubelet-registration-path at it
  --driver-address unix:///PATH  the real CSI driver's socket
  --ledger-dir DIR               node-local ledger of filesystem identities (created if missing)
  --device-path-template T       where a volume's device appears: {volume_id},
                                 {publish_context.KEY}, {volume_context.KEY}
                                 (Longhorn: /dev/longhorn/{volume_id};
                                  EBS: {publish_context.devicePath})
  --device-root DIR              a resolved device path must lie under one of these
                                 (repeatable; default /dev)
  --kubeconfig FILE              keep the ledger on PersistentVolumes too (annotation
                                 stateguard.io/volume-ledger), via this kubeconfig
  --in-cluster                   the same with the pod's service account
  --node-name NAME               this node (default: $NODE_NAME, else the host name)
  --driver-name NAME             the driver's name (default: asked with GetPluginInfo)
  --http-endpoint HOST:PORT      /healthz, /readyz and /metrics (default 127.0.0.1:9810;
                                 port 0 = any free port)
  --audit-log FILE|-             one JSON line per decision (default: - = stdout)
  --v N                          accepted for compatibility with other CSI sidecars
)";

int fail(const std::string& message) {
  std::cerr << "stateguard-csi: " << message << "\n";
  return 2;
}

std::string hostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  auto flags = parseFlags(
      argc, argv, 1,
      {"csi-address", "driver-address", "ledger-dir", "device-path-template", "device-root",
       "kubeconfig", "node-name", "driver-name", "http-endpoint", "audit-log", "v"},
      {"in-cluster", "help"});
  if (!flags.ok()) return fail(flags.error() + "\n" + kUsage);
  const Flags& f = flags.value();
  if (f.has("help")) {
    std::cout << kUsage;
    return 0;
  }
  if (!f.positional.empty()) {
    return fail("unexpected argument " + f.positional.front() + "\n" + kUsage);
  }
  for (const char* required :
       {"csi-address", "driver-address", "ledger-dir", "device-path-template"}) {
    if (!f.has(required)) return fail(std::string("--") + required + " is required\n" + kUsage);
  }
  if (f.has("kubeconfig") && f.has("in-cluster")) {
    return fail("--kubeconfig and --in-cluster exclude each other");
  }
  auto tmpl = DeviceTemplate::parse(f.get("device-path-template"), f.all("device-root"));
  if (!tmpl) return fail(tmpl.error());

  std::signal(SIGPIPE, SIG_IGN);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Ledger ledger(f.get("ledger-dir"));
  if (Status s = ledger.ensureDir(); !s) return fail(s.error());
  auto audit = AuditLog::open(f.get("audit-log", "-"));
  if (!audit) return fail(audit.error());

  std::string node = f.get("node-name");
  if (node.empty() && std::getenv("NODE_NAME")) node = std::getenv("NODE_NAME");
  if (node.empty()) node = hostName();

  WatchCachePtr cache;
  std::shared_ptr<PvLedger> pvLedger;
  if (f.has("kubeconfig") || f.has("in-cluster")) {
    auto config = f.has("kubeconfig") ? loadKubeconfig(f.get("kubeconfig")) : loadInClusterConfig();
    if (!config) return fail(config.error());
    WatchCacheOptions options;
    options.kinds.clear();
    for (const ResourceKind& k : watchedKinds()) {
      if (std::string(k.kind) == "PersistentVolume") options.kinds.push_back(k);
    }
    auto started = startWatchCache(config.value(), options);
    if (!started) return fail(started.error());
    cache = started.value();
    pvLedger = std::make_shared<PvLedger>(cache->client(), cache, f.get("driver-name"));
  }

  SidecarMetrics metrics;
  Guard guard(GuardConfig{tmpl.value(), ledger.dir(), node, ProbeOptions{}}, pvLedger,
              audit.value().get(), &metrics);
  if (f.has("driver-name")) {
    guard.setDriverName(f.get("driver-name"));
    metrics.setGuardInfo(f.get("driver-name"), node);
  }

  CsiProxy proxy(f.get("driver-address"), &guard, &metrics);
  if (Status s = proxy.start(f.get("csi-address")); !s) return fail(s.error());

  SidecarHttp http(&metrics, [&proxy, &cache] {
    if (!proxy.driverKnown())
      return std::string("the CSI driver has not answered GetPluginInfo yet");
    if (cache && !cache->ready()) return std::string("the PersistentVolume cache has not synced");
    return std::string();
  });
  if (Status s = http.start(f.get("http-endpoint", "127.0.0.1:9810")); !s) return fail(s.error());

  log::info("stateguard-csi: serving " + f.get("csi-address") + " in front of " +
            f.get("driver-address") + " on node " + node +
            "; /healthz, /readyz and /metrics on port " + std::to_string(http.port()));

  std::atomic<bool> stopping{false};
  std::thread learner([&] {
    while (!stopping && !proxy.learnDriver(std::chrono::seconds(2))) {
      for (int i = 0; i < 10 && !stopping; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    if (stopping) return;
    log::info("stateguard-csi: driver is " + guard.driverName());
    metrics.setGuardInfo(guard.driverName(), node);
  });
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    log::info(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
              ", shutting down");
    stopping = true;
    proxy.shutdown();
  });
  proxy.wait();
  stopping = true;
  learner.join();
  http.stop();
  if (cache) cache->stop();
  waiter.detach();
  return 0;
}
