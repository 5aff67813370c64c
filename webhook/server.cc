#include "webhook/server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <chrono>
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
  server->certs_->install(server->ctx_);
  server->routes();
  WebhookServer* self = server.get();
  HttpLimits limits;
  limits.maxBodyBytes = kMaxReviewBytes;
  limits.maxDrainBytes = kDrainBytes;
  server->http_ = std::make_unique<HttpServer>(
      server->ctx_, [self](const HttpRequest& req, HttpResponse& res) { self->route(req, res); },
      [self](int code, const std::string& message, HttpResponse& res) {
        self->refuse(code, message, res);
      },
      options.threads, limits);
  return server;
}

WebhookServer::~WebhookServer() {
  stop();
  http_.reset();
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

size_t ServerOptions::defaultThreads() {
  return std::max<size_t>(std::thread::hardware_concurrency(), 1);
}

std::pair<int, std::string> rejectedReview(size_t bodySize, const std::string& decodeError) {
  const int code = bodySize > kMaxReviewBytes ? 413 : 400;
  return {code, statusBody(code, code == 413 ? "RequestEntityTooLarge" : "BadRequest",
                           "stateguard could not read the AdmissionReview: " + decodeError)};
}

std::pair<int, std::string> WebhookServer::handleReview(const std::string& body) {
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
  deps_.audit->writeLine(auditLine(request.value(), decision, nowRfc3339()));
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
         auto [code, out] = handleReview(req.body);
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
                         auto [code, out] = deps_.mutateCsi(req.body);
                         setText(res, code, std::move(out), "application/json");
                       }});
  }
}

void WebhookServer::route(const HttpRequest& req, HttpResponse& res) {
  // HEAD is GET without the body (the HTTP layer drops it).
  const std::string& method = req.method == "HEAD" ? std::string("GET") : req.method;
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

Result<int> WebhookServer::bind() { return http_->listen(options_.host, options_.port); }

void WebhookServer::run() { http_->run(); }

void WebhookServer::stop() {
  if (http_) http_->stop();
}

}  // namespace stateguard
