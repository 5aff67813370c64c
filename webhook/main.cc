// stateguard-webhook: validating admission webhook that refuses API changes which destroy
// persistent data. main() only parses flags, builds the parts and runs them.

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>
#include <tuple>

#include "core/flags.h"
#include "core/kube_client.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/watch_cache.h"
#include "webhook/background_scan.h"
#include "webhook/csi_monitor.h"
#include "webhook/registry.h"
#include "webhook/server.h"

using namespace stateguard;

namespace {

constexpr const char* kUsage = R"(usage: stateguard-webhook --tls-cert FILE --tls-key FILE
           (--cluster-state FILE | --kubeconfig FILE | --in-cluster)
           [--listen HOST:PORT] [--policy FILE] [--audit-log FILE|-] [--audit-mode MODE]
           [--audit-flush-ms N]
           [--threads N] [--max-cache-silence SECONDS] [--max-connections N]
           [--metrics-listen HOST:PORT]
           [--max-buffered-bytes BYTES] [--client-ca FILE [--client-cert-names CN,...]]
           [--csi-guard FILE] [--no-scan] [--scan-interval DURATION]
           [--scan-after-change DURATION] [--scan-lease NAMESPACE/NAME]
           [--available-for DURATION]
       stateguard-webhook --version

  --listen HOST:PORT     address to serve HTTPS on (default 127.0.0.1:8443; port 0 = any free port)
  --metrics-listen H:P   serve GET /metrics (and /healthz, /readyz) on this second HTTPS address
                         instead of the main one, so a NetworkPolicy can open it to monitoring
                         only
  --tls-cert, --tls-key  PEM serving certificate (chain) and key; reloaded when the files change;
                         an expired or not yet valid certificate is refused (at start-up too)
  --policy FILE          policy YAML (default: the built-in policy); reloaded when it changes
  --audit-log FILE|-     where decisions are written as JSON lines (default: - = stdout); a
                         file renamed or deleted by a log rotation is opened again at its path
                         (within a second, or at once on SIGHUP)
  --audit-mode MODE      batch (default): lines are written in the background, a decision
                         never waits; blocking: a decision waits (up to 2 s) for its line;
                         blocking-strict: as blocking, and what cannot be recorded is refused.
                         Lost lines are counted (stateguard_audit_lines_dropped_total) and logged
  --audit-flush-ms N     batch mode: lines are written at most N ms after a decision (default
                         5; a crash loses at most that much). 0 without --audit-mode = blocking
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
  --no-scan              do not run the background scan. Otherwise it judges every cached object
                         as if created now, plus stale backups, quarantined volumes, orphans
                         and StatefulSet retention (what `stateguardctl scan` prints), once
                         the cache syncs, after changes and every --scan-interval; the findings
                         go to /metrics (stateguard_scan_findings) and, with a live source, to
                         PolicyReports written by one replica at a time
  --scan-interval D      full background scan at least this often (default 10m)
  --scan-after-change D  a change in the cluster is scanned within this long (default 15s)
  --scan-lease NS/NAME   the Lease the replicas elect the scanning one on (default: the Pod's
                         namespace from POD_NAMESPACE or its service account, else
                         stateguard-system; name stateguard-scan). The replica is POD_NAME
  --available-for D      scan: report PersistentVolumes Available for longer (default 24h)
  --threads N            worker threads (default: the CPUs the container may use, from its
                         cgroup CPU quota); each runs an event loop serving many connections
  --client-ca FILE       PEM CA: POST /validate answers only callers whose client certificate
                         it verifies (the apiserver, via its AdmissionConfiguration
                         kubeConfigFile); others get 403. Probes and /metrics need none.
                         Audit lines say whether the caller was verified
  --client-cert-names L  with --client-ca: the certificate's CN must be one of these
                         (comma-separated)
  --max-connections N    open connections at most (default 1024); past it new connections are
                         closed at once (0 = no limit)
  --max-buffered-bytes B request bytes held across all connections at most (default 32Mi; a
                         suffix Ki or Mi may be given); a request past it is answered 503 with
                         Retry-After (0 = no limit)
)";

/// A count, with an optional Ki/Mi/Gi suffix when `sizes`; -1 when malformed.
long long parseCount(std::string text, bool sizes) {
  long long unit = 1;
  for (const auto& [suffix, size] :
       {std::pair{"Ki", 1LL << 10}, std::pair{"Mi", 1LL << 20}, std::pair{"Gi", 1LL << 30}}) {
    if (sizes && text.size() > 2 && text.compare(text.size() - 2, 2, suffix) == 0) {
      unit = size;
      text.resize(text.size() - 2);
      break;
    }
  }
  if (text.empty() || text.size() > 12 || text.find_first_not_of("0123456789") != std::string::npos)
    return -1;
  return std::stoll(text) * unit;
}

/// This replica's name: POD_NAME (the Downward API), else the host name.
std::string podName() {
  if (const char* pod = std::getenv("POD_NAME"); pod != nullptr && *pod != '\0') return pod;
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) == 0) return host;
  return "stateguard-webhook";
}

/// The namespace the Pod runs in: POD_NAMESPACE, else its service account's, else the one the
/// manifests install into.
std::string podNamespace() {
  if (const char* ns = std::getenv("POD_NAMESPACE"); ns != nullptr && *ns != '\0') return ns;
  std::ifstream in("/var/run/secrets/kubernetes.io/serviceaccount/namespace");
  std::string ns;
  if (in && std::getline(in, ns) && !ns.empty()) return ns;
  return "stateguard-system";
}

int fail(const std::string& message) {
  std::cerr << "stateguard-webhook: " << message << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  auto flags = parseFlags(argc, argv, 1,
                          {"listen",
                           "tls-cert",
                           "tls-key",
                           "policy",
                           "audit-log",
                           "audit-mode",
                           "audit-flush-ms",
                           "cluster-state",
                           "kubeconfig",
                           "threads",
                           "policy-poll-ms",
                           "cert-poll-ms",
                           "max-cache-silence",
                           "max-connections",
                           "max-buffered-bytes",
                           "client-ca",
                           "client-cert-names",
                           "metrics-listen",
                           "csi-guard",
                           "scan-interval",
                           "scan-after-change",
                           "scan-lease",
                           "available-for"},
                          {"in-cluster", "no-events", "no-scan", "help", "version"});
  if (!flags.ok()) return fail(flags.error() + "\n" + kUsage);
  const Flags& f = flags.value();
  if (f.has("help")) {
    std::cout << kUsage;
    return 0;
  }
  if (f.has("version")) {
    std::cout << "stateguard-webhook " << STATEGUARD_VERSION << "\n";
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
  const long long maxConnections = parseCount(f.get("max-connections", "1024"), false);
  if (maxConnections < 0)
    return fail("--max-connections must be a number (0 = no limit), got \"" +
                f.get("max-connections") + "\"");
  options.maxConnections = static_cast<size_t>(maxConnections);
  const long long maxBuffered = parseCount(f.get("max-buffered-bytes", "32Mi"), true);
  if (maxBuffered < 0)
    return fail("--max-buffered-bytes must be a byte count such as 33554432 or 32Mi, got \"" +
                f.get("max-buffered-bytes") + "\"");
  if (maxBuffered > 0 && maxBuffered < 4 * 1024 * 1024)
    return fail("--max-buffered-bytes " + f.get("max-buffered-bytes") +
                " is below 4Mi: one AdmissionReview may be 3 MiB, and the apiserver would be "
                "refused it");
  options.maxBufferedBytes = static_cast<size_t>(maxBuffered);
  if (f.has("metrics-listen")) {
    const std::string m = f.get("metrics-listen");
    const auto at = m.rfind(':');
    const std::string portText = at == std::string::npos ? "" : m.substr(at + 1);
    if (at == std::string::npos || portText.empty() || portText.size() > 5 ||
        portText.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(portText) > 65535)
      return fail("--metrics-listen must be HOST:PORT, got \"" + m + "\"");
    options.metricsHost = m.substr(0, at);
    if (options.metricsHost.size() > 2 && options.metricsHost.front() == '[')
      options.metricsHost = options.metricsHost.substr(1, options.metricsHost.size() - 2);
    options.metricsPort = std::stoi(portText);
  }
  options.clientCa = f.get("client-ca", "");
  if (f.has("client-cert-names")) {
    if (options.clientCa.empty()) return fail("--client-cert-names needs --client-ca");
    std::string list = f.get("client-cert-names");
    for (size_t start = 0; start <= list.size();) {
      size_t comma = list.find(',', start);
      if (comma == std::string::npos) comma = list.size();
      if (comma > start) options.clientNames.push_back(list.substr(start, comma - start));
      start = comma + 1;
    }
    if (options.clientNames.empty()) return fail("--client-cert-names names no one");
  }
  options.tlsCert = f.get("tls-cert");
  options.tlsKey = f.get("tls-key");

  BackgroundScanOptions scanOptions;
  for (auto [flag, fallback, target] :
       {std::tuple{"scan-interval", "10m", &scanOptions.interval},
        std::tuple{"scan-after-change", "15s", &scanOptions.afterChange},
        std::tuple{"available-for", "24h", &scanOptions.scan.availableFor}}) {
    const std::string text = f.get(flag, fallback);
    const auto d = parseDuration(text);
    if (!d || d->count() <= 0)
      return fail(std::string("--") + flag +
                  " must be a duration like 90s, 30m, 12h or 7d, got \"" + text + "\"");
    *target = *d;
  }
  scanOptions.scan.availableText = f.get("available-for", "24h");
  const std::string instance = podName();
  LeaseOptions lease{podNamespace(), "stateguard-scan", instance};
  if (f.has("scan-lease")) {
    const std::string l = f.get("scan-lease");
    const auto slash = l.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == l.size() ||
        l.find('/', slash + 1) != std::string::npos)
      return fail("--scan-lease must be NAMESPACE/NAME, got \"" + l + "\"");
    lease.ns = l.substr(0, slash);
    lease.name = l.substr(slash + 1);
  }

  // A peer closing a TLS connection mid-write must not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  // Block termination signals in every thread; a dedicated thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);  // reopen the audit log (logrotate)
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
  AuditOptions auditOptions;
  auditOptions.flushInterval = std::chrono::milliseconds(std::stol(flushText));
  auditOptions.mode = auditOptions.flushInterval.count() == 0 && !f.has("audit-mode")
                          ? AuditMode::kBlocking
                          : AuditMode::kBatch;
  if (f.has("audit-mode") && !parseAuditMode(f.get("audit-mode"), auditOptions.mode))
    return fail("--audit-mode must be batch, blocking or blocking-strict, got \"" +
                f.get("audit-mode") + "\"");
  auto audit = AuditLog::open(f.get("audit-log", "-"), auditOptions);
  if (!audit.ok()) return fail(audit.error());
  AuditLog* auditLog = audit.value().get();

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
  KubeClientPtr scanClient;
  if (f.has("cluster-state")) {
    // A state file also holds the configuration the background scan judges (it is listed
    // from the API server otherwise; the cache does not watch it).
    std::vector<ResourceKind> kinds = cacheOptions.kinds;
    if (!f.has("no-scan"))
      kinds.insert(kinds.end(), scan::configurationKinds().begin(),
                   scan::configurationKinds().end());
    auto loaded = loadClusterStateFile(f.get("cluster-state"), kinds);
    if (!loaded.ok()) return fail(loaded.error());
    state = loaded.value();
  } else {
    auto config = f.has("kubeconfig") ? loadKubeconfig(f.get("kubeconfig")) : loadInClusterConfig();
    if (!config.ok()) return fail(config.error());
    if (!f.has("no-events")) {
      auto eventClient = KubeClient::create(config.value());
      if (!eventClient.ok()) return fail(eventClient.error());
      EventRecorderOptions eventOptions;
      eventOptions.instance = instance;
      events = std::make_unique<EventRecorder>(eventClient.value(), eventOptions);
    }
    if (!f.has("no-scan")) {
      auto client = KubeClient::create(config.value());
      if (!client.ok()) return fail(client.error());
      scanClient = client.value();
    }
    auto started = startWatchCache(std::move(config).value(), cacheOptions);
    if (!started.ok()) return fail(started.error());
    cache = started.value();
    state = cache;
  }

  Metrics metrics;
  metrics.addSection([] {
    return std::string(
               "# HELP stateguard_build_info 1, labelled with the running version.\n"
               "# TYPE stateguard_build_info gauge\n"
               "stateguard_build_info{version=\"") +
           STATEGUARD_VERSION + "\",component=\"stateguard-webhook\"} 1\n";
  });
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
  ServerDeps deps;
  deps.engine = &engine;
  deps.state = state;
  deps.policy = policy.get();
  deps.audit = audit.value().get();
  deps.metrics = &metrics;
  deps.events = events.get();
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
  std::unique_ptr<BackgroundScan> backgroundScan;
  if (!f.has("no-scan")) {
    if (cache) {
      scanOptions.etcdSnapshotsServed = [cache] {
        return !cache->stats("ETCDSnapshotFile").absent;
      };
    }
    backgroundScan = std::make_unique<BackgroundScan>(
        state, [policyPtr] { return policyPtr->current(); }, scanClient,
        scanClient ? std::optional<LeaseOptions>(lease) : std::nullopt, scanOptions);
    metrics.addSection([s = backgroundScan.get()] { return s->renderMetrics(); });
  }
  auto server = WebhookServer::create(options, std::move(deps));
  if (!server.ok()) return fail(server.error());
  auto port = server.value()->bind();
  if (!port.ok()) return fail(port.error());
  log::info("stateguard-webhook listening on https://" + options.host + ":" +
            std::to_string(port.value()) + " (policy: " + policy->current()->source + "; " +
            std::to_string(options.threads) + " worker thread(s), at most " +
            std::to_string(options.maxConnections) + " connections and " +
            std::to_string(options.maxBufferedBytes >> 20) + " MiB of request bytes)");
  if (server.value()->metricsPort() >= 0) {
    log::info("metrics on https://" + options.metricsHost + ":" +
              std::to_string(server.value()->metricsPort()) + "/metrics");
  }

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
  metrics.addGauge("stateguard_http_connections", "Open HTTPS connections.",
                   [srv] { return static_cast<double>(srv->httpStats().connections); });
  metrics.addCounter("stateguard_http_connections_refused_total",
                     "Connections closed at once because --max-connections were open.",
                     [srv] { return srv->httpStats().connectionsRefused; });
  metrics.addGauge("stateguard_http_buffered_bytes",
                   "Request bytes held across connections (budget: --max-buffered-bytes).",
                   [srv] { return static_cast<double>(srv->httpStats().bufferedBytes); });
  metrics.addCounter("stateguard_http_requests_shed_total",
                     "Requests answered 503 because --max-buffered-bytes were held.",
                     [srv] { return srv->httpStats().requestsShed; });
  metrics.addCounter("stateguard_audit_lines_total", "Audit lines written.",
                     [auditLog] { return auditLog->stats().linesWritten; });
  metrics.addCounter("stateguard_audit_write_failures_total",
                     "Audit log writes that failed (disk full, I/O error, closed stdout).",
                     [auditLog] { return auditLog->stats().writeFailures; });
  metrics.addCounter("stateguard_audit_lines_dropped_total",
                     "Decisions whose audit line was lost: a failed write or a full queue.",
                     [auditLog] { return auditLog->stats().linesDropped; });
  metrics.addCounter("stateguard_audit_wait_timeouts_total",
                     "Blocking modes: decisions that stopped waiting for their audit line.",
                     [auditLog] { return auditLog->stats().waitTimeouts; });
  metrics.addCounter("stateguard_audit_reopens_total",
                     "Audit log file opened again after a rename, delete or SIGHUP.",
                     [auditLog] { return auditLog->stats().reopens; });
  metrics.addGauge("stateguard_audit_queue_bytes", "Audit line bytes waiting to be written.",
                   [auditLog] { return static_cast<double>(auditLog->stats().queuedBytes); });
  std::thread waiter([&signals, srv, auditLog] {
    while (true) {
      int sig = 0;
      if (sigwait(&signals, &sig) != 0) continue;
      if (sig == SIGHUP) {
        auditLog->reopen();
        continue;
      }
      log::info(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                ", shutting down");
      srv->stop();
      return;
    }
  });
  waiter.detach();
  srv->run();
  if (backgroundScan) backgroundScan->stop();  // gives the Lease up for the next replica
  if (cache) cache->stop();
  return 0;
}
