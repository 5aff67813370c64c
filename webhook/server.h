#pragma once
// The HTTPS admission server: POST /validate, /healthz, /readyz, /metrics.

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/audit.h"
#include "core/cluster_state.h"
#include "core/events.h"
#include "core/metrics.h"
#include "core/policy.h"
#include "core/tls.h"
#include "webhook/engine.h"
#include "webhook/http_server.h"

namespace stateguard {

/// Where and how the server listens.
struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8443;  ///< 0 picks a free port
  /// A second port for GET /metrics (and the probes), so that a NetworkPolicy can open it to
  /// the monitoring namespace only; -1: /metrics is served on the main port.
  std::string metricsHost = "127.0.0.1";
  int metricsPort = -1;
  std::string tlsCert;
  std::string tlsKey;
  /// Worker threads (each an epoll loop serving any number of connections).
  size_t threads = defaultThreads();
  /// Open connections, and request bytes held across them (see HttpLimits).
  size_t maxConnections = HttpLimits{}.maxConnections;
  size_t maxBufferedBytes = HttpLimits{}.maxBufferedBytes;
  /// PEM CA bundle: when set, POST /validate is answered only for callers presenting a client
  /// certificate it verifies (the apiserver, through its AdmissionConfiguration kubeConfigFile).
  /// Probes and /metrics need none.
  std::string clientCa;
  /// With clientCa: the certificate's common name must be one of these (empty: any).
  std::vector<std::string> clientNames;
  /// How often the certificate files are checked for rotation.
  std::chrono::milliseconds certPollInterval{1000};
  /// The CPUs this process may use: those it may run on, within the container's CPU quota
  /// (cgroup v2 cpu.max or v1 cpu.cfs_quota_us, rounded up); at least 1.
  static size_t defaultThreads();
};

/// The CPU count a cgroup quota allows, rounded up: `cpuMax` is cgroup v2's cpu.max
/// ("QUOTA PERIOD" or "max PERIOD"). 0 when there is no quota or the text is not understood.
size_t cpusFromCpuMax(const std::string& cpuMax);

/// Parts the server reads; all outlive it.
struct ServerDeps {
  const Engine* engine = nullptr;
  std::shared_ptr<const ClusterState> state;
  PolicyStore* policy = nullptr;
  AuditLog* audit = nullptr;
  Metrics* metrics = nullptr;
  EventRecorder* events = nullptr;  ///< optional: Kubernetes Events for denials (live sources)
  /// Optional: why the server is not ready beyond state->ready() ("" when it is), e.g. a watch
  /// cache that has not heard from the apiserver for too long.
  std::function<std::string()> unready;
  /// Optional: serves POST /mutate-csi (the CSI guard injection, webhook/csi_inject.h): the
  /// AdmissionReview body in, {HTTP status, answer} out.
  std::function<std::pair<int, std::string>(const std::string&)> mutateCsi;
};

/// Serves AdmissionReviews over TLS 1.2+; thread-safe.
class WebhookServer {
 public:
  static Result<std::unique_ptr<WebhookServer>> create(const ServerOptions& options,
                                                       ServerDeps deps);
  ~WebhookServer();

  /// Binds; returns the port (useful with port 0).
  Result<int> bind();
  /// The metrics port bound (after bind(); -1 without one).
  int metricsPort() const { return boundMetricsPort_; }
  /// Serves until stop(); returns when stopped.
  void run();
  void stop();
  CertificateReloader& certificates() { return *certs_; }
  /// Decisions confirmed against live state, and the API reads that took.
  uint64_t liveConfirmations() const { return liveConfirmations_.load(); }
  uint64_t liveReads() const { return liveReads_.load(); }
  /// Connections closed unserved because the process was out of descriptors.
  uint64_t connectionsShed() const { return http_ ? http_->connectionsShed() : 0; }
  HttpStats httpStats() const { return http_ ? http_->stats() : HttpStats{}; }

  /// The response for one AdmissionReview body: 200 with a review, or rejectedReview()'s 4xx.
  std::pair<int, std::string> handleReview(const std::string& body,
                                           const AuditCaller* caller = nullptr);

 private:
  WebhookServer(const ServerOptions& options, ServerDeps deps)
      : options_(options), deps_(std::move(deps)) {}
  /// One entry of the routing table.
  struct Route {
    std::string path;
    std::string method;
    std::function<void(const HttpRequest&, HttpResponse&)> handler;
  };
  void routes();
  /// Why a caller may not send reviews ("" when it may).
  std::string callerRefusal(const HttpRequest& req) const;
  void route(const HttpRequest& req, HttpResponse& res, bool metricsPort);
  /// The Status answer to a request the HTTP layer refused.
  void refuse(int code, const std::string& message, HttpResponse& res);

  ServerOptions options_;
  ServerDeps deps_;
  std::unique_ptr<CertificateReloader> certs_;
  std::vector<Route> routes_;
  SSL_CTX* ctx_ = nullptr;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<HttpServer> metricsHttp_;  ///< with options.metricsPort >= 0
  int boundMetricsPort_ = -1;
  std::atomic<uint64_t> liveConfirmations_{0};
  std::atomic<uint64_t> liveReads_{0};
};

/// The answer to a body decodeReview() refused: 413 when it is over the size limit, else 400,
/// with a Status naming what is wrong.
std::pair<int, std::string> rejectedReview(size_t bodySize, const std::string& decodeError);

/// A Kubernetes-style Status body for HTTP errors.
std::string statusBody(int code, const std::string& reason, const std::string& message);

}  // namespace stateguard
