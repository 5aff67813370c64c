#pragma once
// A small event-driven HTTP/1.1-over-TLS server: a few worker threads, each with its own epoll
// and its own SO_REUSEPORT listening socket, non-blocking OpenSSL, a hand-written and strictly
// bounded request parser, keep-alive and pipelining, and handlers run inline on the worker.

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/result.h"
#include "webhook/http_parser.h"

namespace stateguard {

/// The answer a handler fills in; sent as one buffer (headers and body in one SSL_write).
struct HttpResponse {
  int status = 200;
  std::string contentType = "text/plain";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  ///< extra headers
  bool close = false;                                        ///< close the connection after it
};

/// What the HTTP layer has refused or holds, for metrics.
struct HttpStats {
  uint64_t connections = 0;         ///< open now
  uint64_t connectionsRefused = 0;  ///< closed at once: maxConnections reached
  uint64_t connectionsShed = 0;     ///< closed at once: out of descriptors
  uint64_t bufferedBytes = 0;       ///< request bytes held now
  uint64_t requestsShed = 0;        ///< answered 503: maxBufferedBytes reached
};

/// Event-driven HTTPS/1.1 server: N epoll workers, each accepting on its own SO_REUSEPORT socket.
class HttpServer {
 public:
  using Handler = std::function<void(const HttpRequest&, HttpResponse&)>;
  /// Fills in the answer to a request refused by the HTTP layer (400, 411, 413, 431, 500).
  using ErrorHandler = std::function<void(int code, const std::string& message, HttpResponse&)>;

  /// `ctx` stays owned by the caller and must outlive the server.
  HttpServer(SSL_CTX* ctx, Handler handler, ErrorHandler onError, size_t threads,
             HttpLimits limits = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Creates the listening sockets (one per worker); port 0 picks a free port. Returns the port.
  Result<int> listen(const std::string& host, int port);
  /// Serves on the worker threads until stop(); returns once they have all ended.
  void run();
  /// Stops accepting, closes every connection and makes run() return. Thread-safe, idempotent.
  void stop();
  /// Connections accepted and closed at once because the process was out of descriptors.
  uint64_t connectionsShed() const { return connectionsShed_.load(std::memory_order_relaxed); }
  HttpStats stats() const;

 private:
  struct Worker;
  void serve(size_t index);
  /// Counts an accept failure and logs it, at most once per interval for all workers.
  void noteAcceptFailure(int err, size_t shed);
  /// Logs a limit being reached (connections or buffered bytes), at most once per interval.
  void noteLimit(const std::string& what);

  SSL_CTX* ctx_;
  Handler handler_;
  ErrorHandler onError_;
  size_t threads_;
  HttpLimits limits_;
  std::vector<int> listeners_;
  int stopFd_ = -1;  // eventfd: readable once stop() was called
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> connectionsShed_{0};
  std::atomic<uint64_t> connections_{0}, connectionsRefused_{0}, requestsShed_{0};
  std::atomic<uint64_t> buffered_{0};
  std::mutex limitLogMu_;
  std::chrono::steady_clock::time_point limitLoggedAt_;
  bool limitLogged_ = false;
  uint64_t limitUnlogged_ = 0;
  std::mutex acceptLogMu_;
  bool acceptLogged_ = false;
  std::chrono::steady_clock::time_point acceptLoggedAt_;
  uint64_t acceptFailuresUnlogged_ = 0, shedUnlogged_ = 0;
};

/// Standard reason phrase for a status code ("OK", "Not Found", ...).
const char* httpReason(int code);

}  // namespace stateguard
