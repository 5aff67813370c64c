// stateguard-csi: CSI node sidecar that refuses to let a driver format a volume that holds data.
// main() only parses flags, builds the parts and runs them.

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>

#include "core/audit.h"
#include "core/flags.h"
#include "core/kube_client.h"
#include "core/log.h"
#include "core/watch_cache.h"
#include "csi-sidecar/guard.h"
#include "csi-sidecar/h2_front.h"
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
           [--max-receive-message-size BYTES] [--driver-probe-interval DURATION]
           [--forwarding h2|grpc]
       stateguard-csi --version

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
  --max-receive-message-size B   largest request accepted from kubelet, in bytes (default
                                 4194304, gRPC's own default; larger ones get RESOURCE_EXHAUSTED)
  --driver-probe-interval D      how often the driver's Probe is asked; /readyz follows it
                                 (default 5s; "500ms", "2s", "1m")
  --forwarding h2|grpc           how calls the guard does not judge reach the driver: h2 (default)
                                 relays them frame by frame; grpc runs every call through the
                                 grpc++ proxy (slower; the way before the front)
  --v N                          accepted for compatibility with other CSI sidecars
)";

int fail(const std::string& message) {
  std::cerr << "stateguard-csi: " << message << "\n";
  return 2;
}

/// "500ms", "5s", "1m" -> milliseconds; nullopt when malformed or not positive.
std::optional<std::chrono::milliseconds> parseDuration(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 9) return std::nullopt;
  const long long n = std::stoll(text.substr(0, digits));
  const std::string unit = text.substr(digits);
  long long ms = 0;
  if (unit == "ms") {
    ms = n;
  } else if (unit == "s") {
    ms = n * 1000;
  } else if (unit == "m") {
    ms = n * 60000;
  } else {
    return std::nullopt;
  }
  if (ms <= 0) return std::nullopt;
  return std::chrono::milliseconds(ms);
}

/// "unix:///abs/path" -> "/abs/path"; "" when it is not that form.
std::string unixPath(const std::string& address) {
  const std::string prefix = "unix://";
  if (address.rfind(prefix, 0) != 0) return "";
  std::string path = address.substr(prefix.size());
  return !path.empty() && path[0] == '/' ? path : "";
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
       "kubeconfig", "node-name", "driver-name", "http-endpoint", "audit-log", "v",
       "max-receive-message-size", "driver-probe-interval", "forwarding"},
      {"in-cluster", "help", "version"});
  if (!flags.ok()) return fail(flags.error() + "\n" + kUsage);
  const Flags& f = flags.value();
  if (f.has("help")) {
    std::cout << kUsage;
    return 0;
  }
  if (f.has("version")) {
    std::cout << "stateguard-csi " << STATEGUARD_VERSION << "\n";
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
  ProxyOptions proxyOptions;
  if (f.has("max-receive-message-size")) {
    const std::string v = f.get("max-receive-message-size");
    char* end = nullptr;
    errno = 0;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || n < 4096 || n > (1LL << 30)) {
      return fail("--max-receive-message-size " + v +
                  ": expected a number of bytes from 4096 to 1073741824 (default 4194304)");
    }
    proxyOptions.maxReceiveMessageBytes = static_cast<int>(n);
  }
  std::chrono::milliseconds probeInterval(5000);
  if (f.has("driver-probe-interval")) {
    auto d = parseDuration(f.get("driver-probe-interval"));
    if (!d) {
      return fail("--driver-probe-interval " + f.get("driver-probe-interval") +
                  ": expected a positive duration such as 500ms, 5s or 1m");
    }
    probeInterval = *d;
  }

  const std::string forwarding = f.get("forwarding", "h2");
  if (forwarding != "h2" && forwarding != "grpc") {
    return fail("--forwarding " + forwarding + ": expected h2 or grpc");
  }
  const bool useFront = forwarding == "h2";
  const std::string listenPath = unixPath(f.get("csi-address"));
  const std::string driverPath = unixPath(f.get("driver-address"));
  if (useFront && (listenPath.empty() || driverPath.empty())) {
    return fail("--csi-address and --driver-address: expected unix:///absolute/path");
  }
  // Guarded calls reach the grpc++ proxy through this socket, beside kubelet's; 0600, removed at
  // exit.
  const std::string guardPath = listenPath + ".guard";

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
  metrics.setBuildInfo(STATEGUARD_VERSION);
  metrics.setLedger(&ledger);
  Guard guard(GuardConfig{tmpl.value(), ledger.dir(), node, ProbeOptions{}}, pvLedger,
              audit.value().get(), &metrics);
  if (f.has("driver-name")) {
    guard.setDriverName(f.get("driver-name"));
    metrics.setGuardInfo(f.get("driver-name"), node);
  }

  CsiProxy proxy(f.get("driver-address"), &guard, &metrics, proxyOptions);
  std::unique_ptr<H2Front> front;
  if (useFront) {
    if (Status s = proxy.start("unix://" + guardPath); !s) return fail(s.error());
    // Anyone who could connect here could only ask for what the guard judges, but still: only
    // this process (and root) may.
    if (::chmod(guardPath.c_str(), 0600) != 0) return fail("chmod " + guardPath);
    FrontOptions frontOptions;
    frontOptions.driverPath = driverPath;
    frontOptions.guardPath = guardPath;
    frontOptions.driverName = [&guard] { return guard.driverName(); };
    front = std::make_unique<H2Front>(frontOptions, &metrics);
    if (Status s = front->start(listenPath); !s) return fail(s.error());
  } else if (Status s = proxy.start(f.get("csi-address")); !s) {
    return fail(s.error());
  }

  // Readiness follows the driver: the monitor below asks its Probe every probeInterval.
  std::mutex driverMu;
  std::string driverProblem = "the CSI driver has not answered Probe yet";
  SidecarHttp http(&metrics, [&] {
    if (!proxy.driverKnown())
      return std::string("the CSI driver has not answered GetPluginInfo yet");
    {
      std::lock_guard lock(driverMu);
      if (!driverProblem.empty()) return driverProblem;
    }
    if (cache && !cache->ready()) return std::string("the PersistentVolume cache has not synced");
    return std::string();
  });
  if (Status s = http.start(f.get("http-endpoint", "127.0.0.1:9810")); !s) return fail(s.error());

  log::info("stateguard-csi: serving " + f.get("csi-address") + " in front of " +
            f.get("driver-address") + " on node " + node +
            "; /healthz, /readyz and /metrics on port " + std::to_string(http.port()));

  std::atomic<bool> stopping{false};
  std::thread learner([&] {
    const auto timeout =
        std::min<std::chrono::milliseconds>(probeInterval, std::chrono::seconds(2));
    bool known = false;
    std::string last = "unset";
    while (!stopping) {
      // Until the driver's name is known, every second at least.
      const auto next =
          std::chrono::steady_clock::now() +
          (known ? probeInterval
                 : std::min<std::chrono::milliseconds>(probeInterval, std::chrono::seconds(1)));
      if (!known && proxy.learnDriver(std::chrono::seconds(2))) {
        known = true;
        log::info("stateguard-csi: driver is " + guard.driverName());
        metrics.setGuardInfo(guard.driverName(), node);
      }
      std::string problem = proxy.probeDriver(timeout);
      if (problem != last) {
        if (problem.empty()) {
          log::info("stateguard-csi: the driver answers Probe: ready");
        } else {
          log::warn("stateguard-csi: not ready: " + problem);
        }
        last = problem;
      }
      {
        std::lock_guard lock(driverMu);
        driverProblem = problem;
      }
      while (!stopping && std::chrono::steady_clock::now() < next) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  });
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    log::info(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
              ", shutting down");
    stopping = true;
    // The front first: its calls in flight (guarded ones too, through the proxy) get 5 s; then
    // the proxy has nothing left to wait for.
    if (front) front->shutdown();
    proxy.shutdown();
  });
  proxy.wait();
  stopping = true;
  learner.join();
  http.stop();
  if (cache) cache->stop();
  if (front) ::unlink(guardPath.c_str());
  waiter.detach();
  return 0;
}
