#include "webhook/server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/log.h"

namespace stateguard {

std::string statusBody(int code, const std::string& reason, const std::string& message) {
  json status = {{"kind", "Status"},   {"apiVersion", "v1"}, {"status", "Failure"},
                 {"message", message}, {"reason", reason},   {"code", code}};
  // Messages can quote bytes of a bad request: never let invalid UTF-8 turn an answer into a 500.
  return status.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {
/// Largest body read (and dropped) to answer 413 instead of cutting the connection.
constexpr size_t kDrainBytes = 16 * 1024 * 1024;

std::string opensslError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

const char* statusReason(int code) {
  switch (code) {
    case 400:
      return "BadRequest";
    case 404:
      return "NotFound";
    case 405:
      return "MethodNotAllowed";
    case 411:
      return "LengthRequired";
    case 413:
      return "RequestEntityTooLarge";
    case 431:
      return "RequestHeaderFieldsTooLarge";
    case 500:
      return "InternalError";
    case 501:
      return "NotImplemented";
    case 503:
      return "ServiceUnavailable";
    case 505:
      return "HTTPVersionNotSupported";
    default:
      return "Error";
  }
}

void setJson(HttpResponse& res, int code, const std::string& message) {
  res.status = code;
  res.contentType = "application/json";
  res.body = statusBody(code, statusReason(code), message);
}

void setText(HttpResponse& res, int code, std::string body, const char* type = "text/plain") {
  res.status = code;
  res.contentType = type;
  res.body = std::move(body);
}
}  // namespace

Result<std::unique_ptr<WebhookServer>> WebhookServer::create(const ServerOptions& options,
                                                             ServerDeps deps) {
  std::unique_ptr<WebhookServer> server(new WebhookServer(options, std::move(deps)));
  auto certs =
      CertificateReloader::create(options.tlsCert, options.tlsKey, options.certPollInterval);
  if (!certs.ok()) return makeError(certs.error());
  server->certs_ = std::move(certs).value();
  server->ctx_ = SSL_CTX_new(TLS_server_method());
  if (server->ctx_ == nullptr) return makeError("cannot set up TLS: " + opensslError());
  SSL_CTX_set_options(server->ctx_, SSL_OP_NO_RENEGOTIATION);
  if (!options.clientCa.empty()) {
    // Ask every client for a certificate but finish the handshake without one (probes and
    // Prometheus present none); /validate then refuses callers that are not verified.
    if (SSL_CTX_load_verify_locations(server->ctx_, options.clientCa.c_str(), nullptr) != 1) {
      return makeError("--client-ca " + options.clientCa +
                       ": cannot read a PEM CA certificate from it: " + opensslError());
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(options.clientCa.c_str());
    if (names != nullptr) SSL_CTX_set_client_CA_list(server->ctx_, names);
    SSL_CTX_set_verify(server->ctx_, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
  }
  server->certs_->install(server->ctx_);
  server->routes();
  WebhookServer* self = server.get();
  HttpLimits limits;
  limits.maxBodyBytes = kMaxReviewBytes;
  limits.maxDrainBytes = kDrainBytes;
  limits.maxConnections = options.maxConnections;
  limits.maxBufferedBytes = options.maxBufferedBytes;
  auto onError = [self](int code, const std::string& message, HttpResponse& res) {
    self->refuse(code, message, res);
  };
  server->http_ = std::make_unique<HttpServer>(
      server->ctx_,
      [self](const HttpRequest& req, HttpResponse& res) { self->route(req, res, false); }, onError,
      options.threads, limits);
  if (options.metricsPort >= 0) {
    // One worker and small bounds: scrapes and probes only.
    HttpLimits small;
    small.maxBodyBytes = 64 * 1024;
    small.maxDrainBytes = 1024 * 1024;
    small.maxConnections = 64;
    small.maxBufferedBytes = 4 * 1024 * 1024;
    server->metricsHttp_ = std::make_unique<HttpServer>(
        server->ctx_,
        [self](const HttpRequest& req, HttpResponse& res) { self->route(req, res, true); }, onError,
        1, small);
  }
  return server;
}

WebhookServer::~WebhookServer() {
  stop();
  http_.reset();
  metricsHttp_.reset();
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

size_t cpusFromCpuMax(const std::string& cpuMax) {
  std::istringstream in(cpuMax);
  std::string quota;
  long long period = 0;
  if (!(in >> quota >> period) || quota == "max" || period <= 0) return 0;
  if (quota.empty() || quota.find_first_not_of("0123456789") != std::string::npos ||
      quota.size() > 15)
    return 0;
  const long long q = std::stoll(quota);
  if (q <= 0) return 0;
  return static_cast<size_t>((q + period - 1) / period);
}

size_t ServerOptions::defaultThreads() {
  size_t cpus = std::max<size_t>(std::thread::hardware_concurrency(), 1);
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    cpus = std::min<size_t>(cpus, static_cast<size_t>(CPU_COUNT(&set)));
  auto readFile = [](const char* path) {
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text;
  };
  size_t quota = cpusFromCpuMax(readFile("/sys/fs/cgroup/cpu.max"));  // cgroup v2
  if (quota == 0) {                                                   // cgroup v1
    quota = cpusFromCpuMax(readFile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") + " " +
                           readFile("/sys/fs/cgroup/cpu/cpu.cfs_period_us"));
  }
  if (quota > 0) cpus = std::min(cpus, quota);
  return std::max<size_t>(cpus, 1);
}

std::pair<int, std::string> rejectedReview(size_t bodySize, const std::string& decodeError) {
  const int code = bodySize > kMaxReviewBytes ? 413 : 400;
  return {code, statusBody(code, code == 413 ? "RequestEntityTooLarge" : "BadRequest",
                           "stateguard could not read the AdmissionReview: " + decodeError)};
}

std::pair<int, std::string> WebhookServer::handleReview(const std::string& body,
                                                        const AuditCaller* caller) {
  auto started = std::chrono::steady_clock::now();
  auto request = decodeReview(body);
  if (!request.ok()) {
    auto answer = rejectedReview(body.size(), request.error());
    deps_.metrics->countRejected(answer.first);
    return answer;
  }
  PolicyPtr policy = deps_.policy->current();
  Decision decision = deps_.engine->review(request.value(), *deps_.state, *policy, Clock::now());
  if (decision.liveReads > 0) {
    liveConfirmations_.fetch_add(1, std::memory_order_relaxed);
    liveReads_.fetch_add(decision.liveReads, std::memory_order_relaxed);
  }
  const bool recorded =
      deps_.audit->writeLine(auditLine(request.value(), decision, nowRfc3339(), caller));
  if (!recorded && deps_.audit->mode() == AuditMode::kBlockingStrict && decision.response.allowed) {
    // Nothing is admitted that the audit trail does not hold.
    decision.response.allowed = false;
    decision.response.code = 503;
    decision.response.message =
        "stateguard would have allowed this, but could not record the decision in its audit log (" +
        deps_.audit->lastError() +
        "), and --audit-mode blocking-strict admits nothing unrecorded. Nothing was changed. Free "
        "space where the audit log is written (or fix its destination) and retry; the webhook's "
        "log and stateguard_audit_write_failures_total say more.";
    decision.verdicts.push_back({"audit-log", "deny", decision.response.message});
  }
  if (deps_.events != nullptr && !decision.response.allowed && !request->dryRun) {
    // Dry runs have no side effects; the recorder rate-limits and posts in the background.
    deps_.events->warn(request->current(), "StateguardDenied", decision.response.message);
  }
  if (decision.verdicts.empty()) {
    deps_.metrics->countDecision("", "allow", request->operation);
  } else {
    for (const auto& v : decision.verdicts)
      deps_.metrics->countDecision(v.rule, v.verdict, request->operation);
  }
  std::string out = encodeReviewResponse(request->uid, decision.response);
  deps_.metrics->observeLatency(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return {200, std::move(out)};
}

void WebhookServer::routes() {
  routes_ = {
      {"/validate", "POST",
       [this](const HttpRequest& req, HttpResponse& res) {
         if (std::string refusal = callerRefusal(req); !refusal.empty()) {
           deps_.metrics->countRejected(403);
           setJson(res, 403, refusal);
           return;
         }
         const AuditCaller caller{req.peerVerified, req.peerName};
         auto [code, out] = handleReview(req.body, &caller);
         setText(res, code, std::move(out), "application/json");
       }},
      {"/healthz", "GET", [](const HttpRequest&, HttpResponse& res) { setText(res, 200, "ok\n"); }},
      {"/readyz", "GET",
       [this](const HttpRequest&, HttpResponse& res) {
         if (!deps_.state->ready()) {
           setText(res, 503, "cluster state not synced yet\n");
           return;
         }
         std::string why = deps_.unready ? deps_.unready() : std::string();
         if (why.empty()) {
           setText(res, 200, "ok\n");
         } else {
           setText(res, 503, why + "\n");
         }
       }},
      {"/metrics", "GET",
       [this](const HttpRequest&, HttpResponse& res) {
         setText(res, 200, deps_.metrics->render(), "text/plain; version=0.0.4");
       }},
  };
  if (deps_.mutateCsi) {
    routes_.push_back({"/mutate-csi", "POST", [this](const HttpRequest& req, HttpResponse& res) {
                         if (std::string refusal = callerRefusal(req); !refusal.empty()) {
                           deps_.metrics->countRejected(403);
                           setJson(res, 403, refusal);
                           return;
                         }
                         auto [code, out] = deps_.mutateCsi(req.body);
                         setText(res, code, std::move(out), "application/json");
                       }});
  }
}

std::string WebhookServer::callerRefusal(const HttpRequest& req) const {
  if (options_.clientCa.empty()) return "";
  const std::string how =
      " stateguard takes AdmissionReviews only from a caller with a client certificate from the "
      "CA in --client-ca (the apiserver presents one through the kubeConfigFile of its "
      "AdmissionConfiguration; see docs/client-certificates.md). Nothing was judged.";
  if (!req.peerPresented) return "this connection presented no client certificate." + how;
  if (!req.peerVerified) {
    return "the client certificate (CN \"" + req.peerName + "\") did not verify: " + req.peerError +
           "." + how;
  }
  if (!options_.clientNames.empty() &&
      std::find(options_.clientNames.begin(), options_.clientNames.end(), req.peerName) ==
          options_.clientNames.end()) {
    std::string names;
    for (const auto& n : options_.clientNames) names += (names.empty() ? "" : ", ") + n;
    return "the client certificate's CN \"" + req.peerName +
           "\" is not one of --client-cert-names (" + names + "). Nothing was judged.";
  }
  return "";
}

void WebhookServer::route(const HttpRequest& req, HttpResponse& res, bool metricsPort) {
  // HEAD is GET without the body (the HTTP layer drops it).
  const std::string& method = req.method == "HEAD" ? std::string("GET") : req.method;
  if (metricsHttp_ && metricsPort != (req.path == "/metrics") && req.path != "/healthz" &&
      req.path != "/readyz") {
    // With a metrics port, /metrics is served there only and reviews on the main port only.
    setJson(res, 404,
            req.method + " " + req.path + " is not served on this port; " +
                (metricsPort ? std::string("this is the metrics port (GET /metrics, /healthz, "
                                           "/readyz); reviews go to the main port")
                             : "GET /metrics is served on the metrics port (--metrics-listen)"));
    return;
  }
  const Route* samePath = nullptr;
  for (const Route& r : routes_) {
    if (r.path != req.path) continue;
    if (r.method == method) {
      r.handler(req, res);
      return;
    }
    samePath = &r;
  }
  if (samePath != nullptr) {
    res.headers.emplace_back("Allow", samePath->method);
    setJson(res, 405,
            req.method + " " + req.path + " is not supported; " +
                (samePath->path == "/validate" ? std::string("send POST with an AdmissionReview")
                                               : "use " + samePath->method));
    return;
  }
  setJson(res, 404,
          req.method + " " + req.path +
              " is not served; use POST /validate, GET /healthz, /readyz, /metrics");
}

void WebhookServer::refuse(int code, const std::string& message, HttpResponse& res) {
  if (code >= 400 && code < 500) deps_.metrics->countRejected(code);
  setJson(res, code,
          code == 413   ? "stateguard could not read the AdmissionReview: " + message
          : code == 500 ? "stateguard " + message
                        : message);
}

Result<int> WebhookServer::bind() {
  if (metricsHttp_) {
    auto bound = metricsHttp_->listen(options_.metricsHost, options_.metricsPort);
    if (!bound.ok()) return makeError("metrics port: " + bound.error());
    boundMetricsPort_ = bound.value();
  }
  return http_->listen(options_.host, options_.port);
}

void WebhookServer::run() {
  std::thread metrics;
  if (metricsHttp_) metrics = std::thread([this] { metricsHttp_->run(); });
  http_->run();
  if (metricsHttp_) metricsHttp_->stop();
  if (metrics.joinable()) metrics.join();
}

void WebhookServer::stop() {
  if (http_) http_->stop();
  if (metricsHttp_) metricsHttp_->stop();
}

}  // namespace stateguard
