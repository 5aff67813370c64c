#include "webhook/server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <chrono>

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
}  // namespace

Result<std::unique_ptr<WebhookServer>> WebhookServer::create(const ServerOptions& options,
                                                             ServerDeps deps) {
  std::unique_ptr<WebhookServer> server(new WebhookServer(options, std::move(deps)));
  auto certs =
      CertificateReloader::create(options.tlsCert, options.tlsKey, options.certPollInterval);
  if (!certs.ok()) return makeError(certs.error());
  server->certs_ = std::move(certs).value();
  CertificateReloader* reloader = server->certs_.get();
  server->http_ = std::make_unique<httplib::SSLServer>([reloader](SSL_CTX& ctx) {
    reloader->install(&ctx);
    return true;
  });
  if (!server->http_->is_valid()) return makeError("cannot set up TLS: " + opensslError());
  server->routes();
  return server;
}

WebhookServer::~WebhookServer() { stop(); }

std::pair<int, std::string> WebhookServer::handleReview(const std::string& body) {
  auto started = std::chrono::steady_clock::now();
  auto request = decodeReview(body);
  if (!request.ok()) {
    int code = body.size() > kMaxReviewBytes ? 413 : 400;
    deps_.metrics->countRejected(code);
    return {code, statusBody(code, code == 413 ? "RequestEntityTooLarge" : "BadRequest",
                             "stateguard could not read the AdmissionReview: " + request.error())};
  }
  PolicyPtr policy = deps_.policy->current();
  Decision decision = deps_.engine->review(request.value(), *deps_.state, *policy, Clock::now());
  deps_.audit->write(auditRecord(request.value(), decision));
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
  auto& http = *http_;
  const size_t threads = options_.threads;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_keep_alive_max_count(100000);
  // An idle keep-alive connection holds a worker thread (cpp-httplib 0.11): release it soon.
  http.set_keep_alive_timeout(5);
  http.set_read_timeout(10);
  http.set_write_timeout(10);
  http.set_tcp_nodelay(true);
  // Bodies up to kDrainBytes are read (and dropped past kMaxReviewBytes) so an oversized review
  // gets a clear 413; larger announced lengths are refused before reading (pre-routing below).
  http.set_payload_max_length(kDrainBytes);

  // The body is read through a content reader so a chunked or unannounced body larger than the
  // limit is cut off as soon as it passes it, instead of being buffered whole.
  http.Post("/validate", [this](const httplib::Request& req, httplib::Response& res,
                                const httplib::ContentReader& reader) {
    std::string body;
    bool tooLarge = false;
    size_t seen = 0;
    reader([&](const char* data, size_t length) {
      seen += length;
      if (body.size() + length > kMaxReviewBytes) tooLarge = true;
      if (!tooLarge) body.append(data, length);
      // Over the limit the rest is read and dropped (so the client gets its answer), up to
      // kDrainBytes; past that the connection is cut.
      return seen <= kDrainBytes;
    });
    if (tooLarge) {
      deps_.metrics->countRejected(413);
      res.status = 413;
      res.set_header("Connection", "close");
      res.set_content(
          statusBody(413, "RequestEntityTooLarge",
                     "stateguard could not read the AdmissionReview: the body is over the " +
                         std::to_string(kMaxReviewBytes) + "-byte limit"),
          "application/json");
      return;
    }
    (void)req;
    auto [code, out] = handleReview(body);
    res.status = code;
    res.set_content(out, "application/json");
  });
  auto wrongMethod = [](const httplib::Request& req, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "POST");
    res.set_content(statusBody(405, "MethodNotAllowed",
                               req.method + " " + req.path +
                                   " is not supported; send POST with an AdmissionReview"),
                    "application/json");
  };
  http.Get("/validate", wrongMethod);
  http.Put("/validate", wrongMethod);
  http.Delete("/validate", wrongMethod);
  http.Patch("/validate", wrongMethod);

  http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  http.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    if (deps_.state->ready()) {
      res.set_content("ok\n", "text/plain");
    } else {
      res.status = 503;
      res.set_content("cluster state not synced yet\n", "text/plain");
    }
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(deps_.metrics->render(), "text/plain; version=0.0.4");
  });

  // Before any body is read: a POST must announce its length (or be chunked, which the content
  // reader cuts off at the limit), and an announced length over the limit is refused at once.
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (req.method != "POST") return httplib::Server::HandlerResponse::Unhandled;
    const bool chunked =
        req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos;
    const std::string length = req.get_header_value("Content-Length");
    int code = 0;
    std::string message;
    if (length.empty() && !chunked) {
      code = 411;
      message = "POST needs a Content-Length (or chunked transfer encoding)";
    } else if (!length.empty() &&
               (length.size() > 18 || length.find_first_not_of("0123456789") != std::string::npos ||
                std::stoull(length) > kDrainBytes)) {
      code = 413;
      message = "stateguard could not read the AdmissionReview: Content-Length " + length +
                " is over the " + std::to_string(kMaxReviewBytes) + "-byte limit";
    }
    if (code == 0) return httplib::Server::HandlerResponse::Unhandled;
    deps_.metrics->countRejected(code);
    res.status = code;
    // The unread body must not be read as the next request: cpp-httplib 0.11 would buffer a
    // "request line" without a newline without bound. Ending the read side of this connection
    // lets the answer go out and then closes the connection.
    if (int fd = currentTlsConnectionFd(); fd >= 0) ::shutdown(fd, SHUT_RD);
    res.set_header("Connection", "close");
    res.set_content(
        statusBody(code, code == 411 ? "LengthRequired" : "RequestEntityTooLarge", message),
        "application/json");
    return httplib::Server::HandlerResponse::Handled;
  });

  http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413) {
      deps_.metrics->countRejected(413);
      res.set_content(statusBody(413, "RequestEntityTooLarge",
                                 "AdmissionReview body is over the " +
                                     std::to_string(kMaxReviewBytes) + "-byte limit"),
                      "application/json");
    } else if (res.status == 404) {
      res.set_content(
          statusBody(404, "NotFound",
                     req.method + " " + req.path +
                         " is not served; use POST /validate, GET /healthz, /readyz, /metrics"),
          "application/json");
    } else {
      res.set_content(
          statusBody(res.status, "Error", "request failed with HTTP " + std::to_string(res.status)),
          "application/json");
    }
  });
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        log::error("internal error while handling a request: " + what);
        res.status = 500;
        res.set_content(statusBody(500, "InternalError", "stateguard internal error: " + what),
                        "application/json");
      });
}

Result<int> WebhookServer::bind() {
  int port = options_.port;
  if (port == 0) {
    port = http_->bind_to_any_port(options_.host);
    if (port < 0) return makeError("cannot bind " + options_.host + ":0");
  } else if (!http_->bind_to_port(options_.host, port)) {
    return makeError("cannot listen on " + options_.host + ":" + std::to_string(port) +
                     " (in use, or not an address of this machine?)");
  }
  return port;
}

void WebhookServer::run() { http_->listen_after_bind(); }

void WebhookServer::stop() {
  if (http_ && http_->is_running()) http_->stop();
}

}  // namespace stateguard
