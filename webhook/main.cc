// stateguard-webhook: validating admission webhook that refuses API changes which destroy
// persistent data. main() only parses flags, builds the parts and runs them.

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "core/flags.h"
#include "core/kube_client.h"
#include "core/log.h"
#include "core/watch_cache.h"
#include "webhook/csi_monitor.h"
#include "webhook/registry.h"
#include "webhook/server.h"

using namespace stateguard;

namespace {

constexpr const char* kUsage = R"(usage: stateguard-webhook --tls-cert FILE --tls-key FILE
           (--cluster-state FILE | --kubeconfig FILE | --in-cluster)
           [--listen HOST:PORT] [--policy FILE] [--audit-log FILE|-] [--audit-flush-ms N]
           [--threads N] [--max-cache-silence SECONDS] [--csi-guard FILE]

  --listen HOST:PORT     address to serve HTTPS on (default 127.0.0.1:8443; port 0 = any free port)
  --tls-cert, --tls-key  PEM serving certificate (chain) and key; reloaded when the files change;
                         an expired or not yet valid certificate is refused (at start-up too)
  --policy FILE          policy YAML (default: the built-in policy); reloaded when it changes
  --audit-log FILE|-     where decisions are written as JSON lines (default: - = stdout)
  --audit-flush-ms N     write audit lines in batches, at most N ms after a decision (default
                         5; a crash loses at most that much); 0 = each line before the answer
  --cluster-state FILE   cluster state from a file (kubectl get -o json List, or YAML documents)
  --kubeconfig FILE      list+watch the cluster named by this kubeconfig
  --in-cluster           list+watch using the pod's service account
  --no-events            with a live source: do not post Kubernetes Events for denials
  --max-cache-silence S  with a live source: /readyz answers 503 once some watched kind has not
                         heard from the apiserver (list, event, bookmark, watch end) for S
                         seconds (default 600; 0 = never)
  --csi-guard FILE       serve POST /mutate-csi, adding stateguard-csi to the CSI node DaemonSets
                         FILE names, and report those running without it (metric
                         stateguard_csi_unguarded, Events); reloaded when it changes
  --threads N            worker threads (default: the number of CPUs); each runs an event
                         loop serving any number of connections
)";

int fail(const std::string& message) {
  std::cerr << "stateguard-webhook: " << message << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  auto flags = parseFlags(
      argc, argv, 1,
      {"listen", "tls-cert", "tls-key", "policy", "audit-log", "audit-flush-ms", "cluster-state",
       "kubeconfig", "threads", "policy-poll-ms", "cert-poll-ms", "max-cache-silence", "csi-guard"},
      {"in-cluster", "no-events", "help"});
  if (!flags.ok()) return fail(flags.error() + "\n" + kUsage);
  const Flags& f = flags.value();
  if (f.has("help")) {
    std::cout << kUsage;
    return 0;
  }
  if (!f.positional.empty())
    return fail("unexpected argument " + f.positional.front() + "\n" + kUsage);
  if (!f.has("tls-cert") || !f.has("tls-key"))
    return fail("--tls-cert and --tls-key are required (HTTPS only)");
  int sources = f.has("cluster-state") + f.has("kubeconfig") + f.has("in-cluster");
  if (sources != 1) return fail("give exactly one of --cluster-state, --kubeconfig, --in-cluster");

  ServerOptions options;
  const std::string listen = f.get("listen", "127.0.0.1:8443");
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return fail("--listen must be HOST:PORT, got " + listen);
  options.host = listen.substr(0, colon);
  if (options.host.size() > 2 && options.host.front() == '[')
    options.host = options.host.substr(1, options.host.size() - 2);
  try {
    options.port = std::stoi(listen.substr(colon + 1));
    if (f.has("threads")) options.threads = static_cast<size_t>(std::stoul(f.get("threads")));
    options.certPollInterval = std::chrono::milliseconds(std::stoi(f.get("cert-poll-ms", "1000")));
  } catch (const std::exception&) {
    return fail("--listen port, --threads and --cert-poll-ms must be numbers");
  }
  if (options.port < 0 || options.port > 65535 || options.threads == 0)
    return fail("port or --threads out of range");
  const std::string silenceText = f.get("max-cache-silence", "600");
  if (silenceText.empty() || silenceText.size() > 7 ||
      silenceText.find_first_not_of("0123456789") != std::string::npos)
    return fail("--max-cache-silence must be a number of seconds (0 = never), got \"" +
                silenceText + "\"");
  const std::chrono::seconds maxSilence(std::stol(silenceText));
  options.tlsCert = f.get("tls-cert");
  options.tlsKey = f.get("tls-key");

  // A peer closing a TLS connection mid-write must not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  // Block termination signals in every thread; a dedicated thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<PolicyStore> policy;
  if (f.has("policy")) {
    int pollMs = 1000;
    try {
      pollMs = std::stoi(f.get("policy-poll-ms", "1000"));
    } catch (const std::exception&) {
      return fail("--policy-poll-ms must be a number");
    }
    auto loaded =
        PolicyStore::fromFile(f.get("policy"), ruleDefaults(), std::chrono::milliseconds(pollMs));
    if (!loaded.ok()) return fail(loaded.error());
    policy = std::move(loaded).value();
  } else {
    policy = std::make_unique<PolicyStore>(
        std::make_shared<const Policy>(defaultPolicy(ruleDefaults())));
  }

  const std::string flushText = f.get("audit-flush-ms", "5");
  if (flushText.empty() || flushText.size() > 5 ||
      flushText.find_first_not_of("0123456789") != std::string::npos)
    return fail("--audit-flush-ms must be a number of milliseconds (0 to 99999), got \"" +
                flushText + "\"");
  auto audit =
      AuditLog::open(f.get("audit-log", "-"), std::chrono::milliseconds(std::stol(flushText)));
  if (!audit.ok()) return fail(audit.error());

  // The CSI guard (optional): its file, and DaemonSets in the cache for the unguarded check.
  std::unique_ptr<CsiGuardStore> csiGuard;
  WatchCacheOptions cacheOptions;
  if (f.has("csi-guard")) {
    auto loaded = CsiGuardStore::fromFile(f.get("csi-guard"));
    if (!loaded.ok()) return fail(loaded.error());
    csiGuard = std::move(loaded).value();
    cacheOptions.kinds.push_back(daemonSetKind());
  }

  std::shared_ptr<const ClusterState> state;
  std::shared_ptr<WatchCache> cache;
  std::unique_ptr<EventRecorder> events;
  if (f.has("cluster-state")) {
    auto loaded = loadClusterStateFile(f.get("cluster-state"), cacheOptions.kinds);
    if (!loaded.ok()) return fail(loaded.error());
    state = loaded.value();
  } else {
    auto config = f.has("kubeconfig") ? loadKubeconfig(f.get("kubeconfig")) : loadInClusterConfig();
    if (!config.ok()) return fail(config.error());
    if (!f.has("no-events")) {
      auto eventClient = KubeClient::create(config.value());
      if (!eventClient.ok()) return fail(eventClient.error());
      EventRecorderOptions eventOptions;
      const char* pod = std::getenv("POD_NAME");
      char host[256] = {0};
      if (pod == nullptr && gethostname(host, sizeof host - 1) == 0) pod = host;
      eventOptions.instance = pod == nullptr ? "" : pod;
      events = std::make_unique<EventRecorder>(eventClient.value(), eventOptions);
    }
    auto started = startWatchCache(std::move(config).value(), cacheOptions);
    if (!started.ok()) return fail(started.error());
    cache = started.value();
    state = cache;
  }

  Metrics metrics;
  metrics.addGauge("stateguard_cluster_state_ready",
                   "1 once the cluster state is loaded or synced.",
                   [state] { return state->ready() ? 1.0 : 0.0; });
  PolicyStore* policyPtr = policy.get();
  metrics.addCounter("stateguard_policy_reloads_total", "Policy file reloads that succeeded.",
                     [policyPtr] { return policyPtr->reloads(); });
  metrics.addCounter("stateguard_policy_reload_failures_total",
                     "Policy file changes rejected as invalid.",
                     [policyPtr] { return policyPtr->reloadFailures(); });
  if (events) {
    EventRecorder* rec = events.get();
    metrics.addCounter("stateguard_events_posted_total", "Kubernetes Events posted for denials.",
                       [rec] { return rec->posted(); });
    metrics.addCounter("stateguard_events_suppressed_total",
                       "Events not posted: rate limit or full queue.",
                       [rec] { return rec->suppressed(); });
  }
  if (cache) {
    auto total = [cache](uint64_t WatchStats::*field) {
      return [cache, field] {
        uint64_t n = 0;
        for (const auto& [kind, s] : cache->allStats()) n += s.*field;
        return n;
      };
    };
    metrics.addCounter("stateguard_watch_relists_total", "Re-lists after 410 Gone, all kinds.",
                       total(&WatchStats::relistsAfterGone));
    metrics.addCounter("stateguard_watch_restarts_total",
                       "Watches resumed after a drop, all kinds.",
                       total(&WatchStats::watchRestarts));
    metrics.addGauge("stateguard_cache_silence_seconds",
                     "Seconds since the quietest watched kind last heard from the apiserver.",
                     [cache] { return std::chrono::duration<double>(cache->silence()).count(); });
  }

  Engine engine(allRules());
  ServerDeps deps{&engine, state, policy.get(), audit.value().get(), &metrics, events.get(), {}};
  if (cache && maxSilence.count() > 0) {
    deps.unready = [cache, maxSilence]() -> std::string {
      const auto quiet = std::chrono::duration_cast<std::chrono::seconds>(cache->silence());
      if (quiet <= maxSilence) return "";
      return "cluster state stale: no word from the apiserver for " +
             std::to_string(quiet.count()) + " s (--max-cache-silence " +
             std::to_string(maxSilence.count()) + ")";
    };
  }
  std::unique_ptr<CsiInjector> csiInjector;
  std::unique_ptr<CsiGuardMonitor> csiMonitor;
  if (csiGuard) {
    CsiGuardStore* store = csiGuard.get();
    csiInjector = std::make_unique<CsiInjector>(store);
    csiMonitor = std::make_unique<CsiGuardMonitor>(
        state, [store] { return store->current(); }, events.get());
    metrics.addSection([m = csiMonitor.get()] { return m->renderMetrics(); });
    metrics.addSection([i = csiInjector.get()] { return i->renderMetrics(); });
    deps.mutateCsi = [i = csiInjector.get()](const std::string& body) { return i->handle(body); };
  }
  auto server = WebhookServer::create(options, std::move(deps));
  if (!server.ok()) return fail(server.error());
  auto port = server.value()->bind();
  if (!port.ok()) return fail(port.error());
  log::info("stateguard-webhook listening on https://" + options.host + ":" +
            std::to_string(port.value()) + " (policy: " + policy->current()->source + ")");

  WebhookServer* srv = server.value().get();
  metrics.addCounter("stateguard_live_confirmations_total",
                     "Allowances that destroy data, confirmed against the apiserver first.",
                     [srv] { return srv->liveConfirmations(); });
  metrics.addCounter("stateguard_live_reads_total",
                     "API reads made to confirm allowances (GETs and list pages).",
                     [srv] { return srv->liveReads(); });
  metrics.addCounter("stateguard_tls_certificate_reloads_total",
                     "Serving certificate reloads after the files changed.",
                     [srv] { return srv->certificates().reloads(); });
  metrics.addCounter("stateguard_tls_certificate_reload_failures_total",
                     "Changed serving certificate files refused: unreadable, mismatched, expired "
                     "or not yet valid (the current pair stays).",
                     [srv] { return srv->certificates().failures(); });
  metrics.addGauge("stateguard_tls_certificate_expiry_seconds",
                   "Unix time at which the serving certificate in use expires (its notAfter).",
                   [srv] { return static_cast<double>(srv->certificates().notAfter()); });
  metrics.addCounter("stateguard_http_connections_shed_total",
                     "Connections closed unserved because the process was out of descriptors.",
                     [srv] { return srv->connectionsShed(); });
  std::thread waiter([&signals, srv] {
    int sig = 0;
    sigwait(&signals, &sig);
    log::info(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
              ", shutting down");
    srv->stop();
  });
  waiter.detach();
  srv->run();
  if (cache) cache->stop();
  return 0;
}
