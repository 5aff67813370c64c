#include "webhook/http_server.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <exception>
#include <memory>
#include <string_view>
#include <unordered_map>

#include "core/log.h"

namespace stateguard {

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 16 * 1024;
/// Responses are batched (pipelining) until this much output is waiting.
constexpr size_t kOutputBatch = 64 * 1024;
/// After a response that closes the connection, unread input is drained this long (so the
/// client reads the answer instead of a reset), up to HttpLimits::maxDrainBytes.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr int kMaxEvents = 128;
/// Buffers larger than this are given back once they are no longer needed.
constexpr size_t kKeepCapacity = 64 * 1024;
/// At a descriptor (or kernel memory) limit a worker stops accepting this long: the listener is
/// level-triggered and would otherwise wake it again at once, forever.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(200);
/// Connections accepted and closed at once per back-off, through the spare descriptor.
constexpr int kShedBatch = 64;
/// Accept failures are logged at most this often (with a count of the ones in between).
constexpr auto kAcceptLogInterval = std::chrono::seconds(5);

/// Out of descriptors or kernel memory: waiting (connections close, timeouts fire) helps.
bool resourceLimit(int err) {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/// Errors accept(2) reports for one pending connection (see its man page): try the next one.
bool perConnectionError(int err) {
  return err == EINTR || err == ECONNABORTED || err == EPROTO || err == ENETDOWN ||
         err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH ||
         err == EOPNOTSUPP || err == ENETUNREACH || err == EPERM;
}

int openSpare() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

enum class Phase {
  kHandshake,  // TLS handshake in progress
  kHeaders,    // waiting for (the rest of) a request line and headers
  kBody,       // reading a body of known length
  kDrain,      // reading and dropping an oversized body before answering 413
  kClosing,    // writing the last response
  kLinger,     // last response written: dropping input until EOF, a limit or a deadline
};

enum class Wait { kNone, kIdle, kRequest, kWrite };

/// What the server knows about one request while it is being read.
struct Pending {
  HttpRequest request;
  size_t bodyLength = 0;
  size_t drainLeft = 0;
  bool keepAlive = true;
  bool http10 = false;
};

/// One client connection.
struct Conn {
  int fd = -1;
  SSL* ssl = nullptr;
  Phase phase = Phase::kHandshake;
  Wait wait = Wait::kNone;
  SteadyClock::time_point deadline;
  std::string in;       // received, not yet consumed
  size_t scanned = 0;   // bytes of `in` searched for the end of the headers so far
  std::string out;      // to send
  size_t outPos = 0;    // bytes of `out` sent
  size_t lingered = 0;  // bytes dropped while lingering
  size_t charged = 0;   // bytes counted against HttpLimits::maxBufferedBytes
  Pending pending;
  bool peerPresented = false, peerVerified = false;
  std::string peerName, peerError;
};

/// The common name of a certificate's subject ("" when it has none).
std::string commonName(X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  const int at = subject == nullptr ? -1 : X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (at < 0) return "";
  unsigned char* utf8 = nullptr;
  const int n =
      ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)));
  if (n < 0) return "";
  std::string name(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return name;
}

}  // namespace

const char* httpReason(int code) {
  switch (code) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

/// One worker thread's epoll loop and its connections.
struct HttpServer::Worker {
  HttpServer& server;
  int listener;
  int epoll = -1;
  std::unordered_map<int, std::unique_ptr<Conn>> conns;
  char buffer[kReadChunk];
  /// Held in reserve: closed to accept-and-close connections when out of descriptors.
  int spare = -1;
  bool acceptPaused = false;
  SteadyClock::time_point acceptResume;

  Worker(HttpServer& s, int l) : server(s), listener(l) {}
  ~Worker() {
    for (auto& [fd, c] : conns) {
      recharge(*c, 0);
      release(*c);
      server.connections_.fetch_sub(1, std::memory_order_relaxed);
    }
    conns.clear();
    if (epoll >= 0) ::close(epoll);
    if (spare >= 0) ::close(spare);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  static void release(Conn& c) {
    if (c.ssl != nullptr) SSL_free(c.ssl);
    c.ssl = nullptr;
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
  }

  void close(int fd) {
    auto it = conns.find(fd);
    if (it == conns.end()) return;
    ::epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nullptr);
    recharge(*it->second, 0);
    release(*it->second);
    conns.erase(it);
    server.connections_.fetch_sub(1, std::memory_order_relaxed);
  }

  /// Sets what a connection counts against the buffered-bytes budget (never refused).
  void recharge(Conn& c, size_t bytes) {
    if (bytes >= c.charged) {
      server.buffered_.fetch_add(bytes - c.charged, std::memory_order_relaxed);
    } else {
      server.buffered_.fetch_sub(c.charged - bytes, std::memory_order_relaxed);
    }
    c.charged = bytes;
  }

  /// What a connection holds now: its input buffer and the body of a request being handled.
  static size_t holding(const Conn& c) {
    return c.in.capacity() + c.pending.request.body.capacity();
  }

  /// Asks to hold `bytes` for a connection; false (nothing charged) when the budget is spent.
  bool admit(Conn& c, size_t bytes) {
    if (bytes <= c.charged) return true;
    const size_t budget = limits().maxBufferedBytes;
    const size_t extra = bytes - c.charged;
    const size_t before = server.buffered_.fetch_add(extra, std::memory_order_relaxed);
    if (budget > 0 && before + extra > budget) {
      server.buffered_.fetch_sub(extra, std::memory_order_relaxed);
      return false;
    }
    c.charged = bytes;
    return true;
  }

  /// Refuses the request being read: the server already holds its budget of request bytes.
  void shed(Conn& c) {
    server.requestsShed_.fetch_add(1, std::memory_order_relaxed);
    server.noteLimit("the " + std::to_string(limits().maxBufferedBytes) +
                     "-byte budget for request bytes held across connections is spent "
                     "(--max-buffered-bytes); requests past it are answered 503 with Retry-After");
    fail(c, 503,
         "the server holds its limit of unread request bytes (" +
             std::to_string(limits().maxBufferedBytes) + "); retry in a second",
         /*retryAfter=*/true);
  }

  const HttpLimits& limits() const { return server.limits_; }

  void loop() {
    epoll = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll < 0) {
      log::error(std::string("epoll_create1 failed: ") + std::strerror(errno));
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listener;
    ::epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &ev);
    ev.data.fd = server.stopFd_;
    ::epoll_ctl(epoll, EPOLL_CTL_ADD, server.stopFd_, &ev);
    spare = openSpare();

    epoll_event events[kMaxEvents];
    auto nextSweep = SteadyClock::now() + std::chrono::seconds(1);
    while (!server.stopping_.load(std::memory_order_relaxed)) {
      int timeoutMs = 1000;
      if (acceptPaused) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(acceptResume -
                                                                          SteadyClock::now());
        timeoutMs = static_cast<int>(std::clamp<long long>(left.count() + 1, 1, 1000));
      }
      int n = ::epoll_wait(epoll, events, kMaxEvents, timeoutMs);
      if (n < 0 && errno != EINTR) {
        log::error(std::string("epoll_wait failed: ") + std::strerror(errno));
        return;
      }
      for (int i = 0; i < n; ++i) {
        int fd = events[i].data.fd;
        if (fd == server.stopFd_) return;
        if (fd == listener) {
          accept();
          continue;
        }
        auto it = conns.find(fd);
        if (it == conns.end()) continue;
        try {
          drive(*it->second);
        } catch (const std::exception& e) {  // e.g. bad_alloc: lose this connection only
          log::error(std::string("internal error on a connection, closing it: ") + e.what());
          close(fd);
        }
      }
      auto now = SteadyClock::now();
      if (acceptPaused && now >= acceptResume) resumeAccepting();
      if (now >= nextSweep) {
        nextSweep = now + std::chrono::seconds(1);
        std::vector<int> expired;
        for (auto& [fd, c] : conns) {
          if (c->deadline <= now) expired.push_back(fd);
        }
        for (int fd : expired) close(fd);
      }
    }
  }

  /// Takes the listener out of the epoll set for kAcceptBackoff.
  void pauseAccepting() {
    if (acceptPaused) return;
    ::epoll_ctl(epoll, EPOLL_CTL_DEL, listener, nullptr);
    acceptPaused = true;
    acceptResume = SteadyClock::now() + kAcceptBackoff;
  }

  void resumeAccepting() {
    acceptPaused = false;
    if (spare < 0) spare = openSpare();
    epoll_event ev{};
    ev.events = EPOLLIN;  // level-triggered: a backlog that waited wakes the loop at once
    ev.data.fd = listener;
    ::epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &ev);
  }

  /// accept(2) failed with `err` (not EAGAIN): never retried in a busy loop.
  void acceptFailed(int err) {
    size_t shed = 0;
    if ((err == EMFILE || err == ENFILE) && spare >= 0) {
      // The spare descriptor makes room to take waiting connections off the backlog and close
      // them, so their clients learn at once instead of timing out in the queue.
      ::close(spare);
      spare = -1;
      for (int i = 0; i < kShedBatch; ++i) {
        int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) break;
        ::close(fd);
        ++shed;
      }
      spare = openSpare();  // may fail if another thread took the slot: retried on resume
    }
    server.noteAcceptFailure(err, shed);
    pauseAccepting();
  }

  void accept() {
    while (true) {
      int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) return;
        if (perConnectionError(err)) continue;
        acceptFailed(err);
        return;
      }
      const size_t most = limits().maxConnections;
      if (most > 0 && server.connections_.load(std::memory_order_relaxed) >= most) {
        // Closed before the TLS handshake: the client learns at once, and the memory stays
        // what `most` connections can hold.
        ::close(fd);
        server.connectionsRefused_.fetch_add(1, std::memory_order_relaxed);
        server.noteLimit("the limit of " + std::to_string(most) +
                         " open connections is reached (--max-connections); new connections "
                         "are closed at once");
        continue;
      }
      server.connections_.fetch_add(1, std::memory_order_relaxed);
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_unique<Conn>();
      c->fd = fd;
      c->ssl = SSL_new(server.ctx_);
      if (c->ssl == nullptr || SSL_set_fd(c->ssl, fd) != 1) {
        ERR_clear_error();
        release(*c);
        server.connections_.fetch_sub(1, std::memory_order_relaxed);
        continue;
      }
      SSL_set_accept_state(c->ssl);
      // RELEASE_BUFFERS: an idle connection gives back OpenSSL's read and write buffers
      // (about 34 KiB each), so thousands of keep-alive connections stay cheap.
      SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                               SSL_MODE_RELEASE_BUFFERS);
      c->deadline = SteadyClock::now() + limits().requestTimeout;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.fd = fd;
      if (::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev) != 0) {
        release(*c);
        server.connections_.fetch_sub(1, std::memory_order_relaxed);
        continue;
      }
      Conn& ref = *c;
      conns.emplace(fd, std::move(c));
      drive(ref);
    }
  }

  /// Runs a connection as far as it goes without blocking. May close (and free) it.
  void drive(Conn& c) {
    const int fd = c.fd;
    if (!step(c)) {
      close(fd);
      return;
    }
    recharge(c, holding(c));
    updateDeadline(c);
  }

  void updateDeadline(Conn& c) {
    Wait wait;
    if (c.phase == Phase::kHandshake || c.phase == Phase::kLinger) return;
    if (c.outPos < c.out.size()) {
      wait = Wait::kWrite;
    } else if (c.phase == Phase::kHeaders && c.in.empty()) {
      wait = Wait::kIdle;
    } else {
      wait = Wait::kRequest;
    }
    // Deadlines run from when the wait began (a write deadline restarts when output moves).
    if (wait == c.wait) return;
    c.wait = wait;
    c.deadline =
        SteadyClock::now() + (wait == Wait::kIdle ? limits().idleTimeout : limits().requestTimeout);
  }

  /// Returns false when the connection must be closed now.
  bool step(Conn& c) {
    if (c.phase == Phase::kHandshake) {
      ERR_clear_error();
      int r = SSL_accept(c.ssl);
      if (r != 1) {
        int err = SSL_get_error(c.ssl, r);
        ERR_clear_error();
        return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE;
      }
      c.phase = Phase::kHeaders;
      if (X509* cert = SSL_get0_peer_certificate(c.ssl); cert != nullptr) {
        c.peerPresented = true;
        c.peerName = commonName(cert);
        const long verify = SSL_get_verify_result(c.ssl);
        c.peerVerified = verify == X509_V_OK;
        if (!c.peerVerified) c.peerError = X509_verify_cert_error_string(verify);
      }
    }
    if (c.phase == Phase::kLinger) return linger(c);
    while (true) {
      if (!flush(c)) return false;
      if (c.outPos < c.out.size()) return true;  // wait for EPOLLOUT
      if (c.phase == Phase::kClosing) return startLinger(c);
      bool progressed = false;
      while (c.phase != Phase::kClosing && c.out.size() < kOutputBatch && process(c)) {
        progressed = true;
      }
      if (progressed) continue;
      ERR_clear_error();
      int n = SSL_read(c.ssl, buffer, static_cast<int>(sizeof buffer));
      if (n > 0) {
        if (c.phase != Phase::kDrain && !admit(c, c.in.size() + static_cast<size_t>(n))) {
          shed(c);
          continue;
        }
        consume(c, buffer, static_cast<size_t>(n));
        continue;
      }
      int err = SSL_get_error(c.ssl, n);
      ERR_clear_error();
      // WANT_WRITE while reading (a TLS 1.3 key update): the EPOLLOUT edge brings us back.
      return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE;
    }
  }

  void consume(Conn& c, const char* data, size_t n) {
    if (c.phase == Phase::kDrain) {
      size_t take = std::min(n, c.pending.drainLeft);
      c.pending.drainLeft -= take;
      data += take;
      n -= take;
    }
    c.in.append(data, n);
  }

  /// Writes pending output; false on a fatal error.
  bool flush(Conn& c) {
    while (c.outPos < c.out.size()) {
      ERR_clear_error();
      size_t left = std::min(c.out.size() - c.outPos, static_cast<size_t>(INT_MAX));
      int n = SSL_write(c.ssl, c.out.data() + c.outPos, static_cast<int>(left));
      if (n > 0) {
        c.outPos += static_cast<size_t>(n);
        c.wait = Wait::kNone;  // output moved: a stalled-write deadline starts again
        continue;
      }
      int err = SSL_get_error(c.ssl, n);
      ERR_clear_error();
      return err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ;
    }
    c.out.clear();
    c.outPos = 0;
    if (c.out.capacity() > kKeepCapacity) std::string().swap(c.out);
    return true;
  }

  bool startLinger(Conn& c) {
    ERR_clear_error();
    SSL_shutdown(c.ssl);  // close_notify; never waits for the peer's
    ERR_clear_error();
    ::shutdown(c.fd, SHUT_WR);
    c.phase = Phase::kLinger;
    c.deadline = SteadyClock::now() + kLingerTime;
    return linger(c);
  }

  bool linger(Conn& c) {
    while (true) {
      ssize_t n = ::recv(c.fd, buffer, sizeof buffer, 0);
      if (n > 0) {
        c.lingered += static_cast<size_t>(n);
        if (c.lingered > limits().maxDrainBytes) return false;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
  }

  /// Answers with an error and closes the connection after it.
  void fail(Conn& c, int code, const std::string& message, bool retryAfter = false) {
    HttpResponse res;
    res.status = code;
    try {
      server.onError_(code, message, res);
    } catch (const std::exception& e) {
      log::error(std::string("internal error while answering an HTTP error: ") + e.what());
      res.body = message;
    }
    res.close = true;
    if (retryAfter) res.headers.emplace_back("Retry-After", "1");
    serialize(c, res, /*head=*/false, /*http10=*/false);
    c.phase = Phase::kClosing;
    std::string().swap(c.in);
    c.pending = Pending{};
  }

  void serialize(Conn& c, const HttpResponse& res, bool head, bool http10) {
    std::string& o = c.out;
    o.reserve(o.size() + 160 + res.body.size());
    o += "HTTP/1.1 ";
    o += std::to_string(res.status);
    o += ' ';
    o += httpReason(res.status);
    o += "\r\nContent-Type: ";
    o += res.contentType;
    o += "\r\nContent-Length: ";
    o += std::to_string(res.body.size());
    o += "\r\n";
    for (const auto& [name, value] : res.headers) {
      o += name;
      o += ": ";
      o += value;
      o += "\r\n";
    }
    if (res.close) {
      o += "Connection: close\r\n";
    } else if (http10) {
      o += "Connection: keep-alive\r\n";
    }
    o += "\r\n";
    if (!head) o += res.body;
  }

  /// Moves one step through the buffered input; false when more input is needed.
  bool process(Conn& c) {
    switch (c.phase) {
      case Phase::kHeaders:
        return readHead(c);
      case Phase::kBody: {
        if (c.in.size() < c.pending.bodyLength) return false;
        if (c.in.size() == c.pending.bodyLength) {
          c.pending.request.body.swap(c.in);  // the usual case: no copy of a large body
          c.in.clear();
        } else {
          c.pending.request.body.assign(c.in, 0, c.pending.bodyLength);
          c.in.erase(0, c.pending.bodyLength);
        }
        dispatch(c);
        return true;
      }
      case Phase::kDrain: {
        size_t take = std::min(c.in.size(), c.pending.drainLeft);
        c.in.erase(0, take);
        c.pending.drainLeft -= take;
        if (c.pending.drainLeft > 0) return false;
        fail(c, 413,
             "the body is over the " + std::to_string(limits().maxBodyBytes) + "-byte limit");
        return true;
      }
      default:
        return false;
    }
  }

  bool readHead(Conn& c) {
    // Empty lines before a request line are allowed (RFC 9112 2.2).
    size_t lead = 0;
    while (lead < c.in.size() && (c.in[lead] == '\r' || c.in[lead] == '\n')) ++lead;
    if (lead > 0) {
      c.in.erase(0, lead);
      c.scanned = 0;
    }
    if (c.in.empty()) return false;
    HeadSpan span;
    if (!findHeadEnd(c.in, c.scanned, span)) {
      c.scanned = headScanResume(c.in.size());
      if (c.in.size() > limits().maxHeaderBytes) {
        fail(c, 431,
             "the request line and headers are over the " +
                 std::to_string(limits().maxHeaderBytes) + "-byte limit");
        return true;
      }
      return false;
    }
    c.scanned = 0;
    if (span.headBytes > limits().maxHeaderBytes) {
      fail(c, 431,
           "the request line and headers are over the " + std::to_string(limits().maxHeaderBytes) +
               "-byte limit");
      return true;
    }
    c.pending = Pending{};
    int code = 400;
    std::string error;
    if (!parseRequestHead(std::string_view(c.in).substr(0, span.headBytes), c.pending.request,
                          c.pending.keepAlive, c.pending.http10, code, error)) {
      fail(c, code, error);
      return true;
    }
    c.in.erase(0, span.bodyStart);
    return startBody(c);
  }

  /// Decides how the body is read once the headers are in. Always makes progress.
  bool startBody(Conn& c) {
    Pending& p = c.pending;
    const BodyFraming framing = bodyFraming(p.request, limits());
    if (framing.code != 0) {
      fail(c, framing.code, framing.error);
      return true;
    }
    if (framing.drain) {
      p.drainLeft = framing.length;
      c.phase = Phase::kDrain;
      return true;
    }
    p.bodyLength = framing.length;
    if (p.bodyLength > c.in.size()) {
      // The whole declared body is charged now: a client that sends all but its last byte holds
      // no more than it was granted, and a request the budget cannot take is refused before any
      // of its body is read.
      if (!admit(c, p.bodyLength)) {
        shed(c);
        return true;
      }
      c.in.reserve(p.bodyLength);
    }
    if (p.bodyLength > c.in.size() && lowerCase(p.request.header("expect")) == "100-continue") {
      c.out += "HTTP/1.1 100 Continue\r\n\r\n";
    }
    c.phase = Phase::kBody;
    return true;
  }

  void dispatch(Conn& c) {
    Pending& p = c.pending;
    p.request.peerPresented = c.peerPresented;
    p.request.peerVerified = c.peerVerified;
    p.request.peerName = c.peerName;
    p.request.peerError = c.peerError;
    HttpResponse res;
    try {
      server.handler_(p.request, res);
    } catch (const std::exception& e) {
      fail(c, 500, std::string("internal error while handling a request: ") + e.what());
      log::error(std::string("internal error while handling a request: ") + e.what());
      return;
    } catch (...) {
      log::error("internal error while handling a request: unknown exception");
      fail(c, 500, "internal error while handling a request");
      return;
    }
    if (!p.keepAlive) res.close = true;
    serialize(c, res, p.request.method == "HEAD", p.http10);
    if (res.close) {
      c.phase = Phase::kClosing;
      c.in.clear();
    } else {
      c.phase = Phase::kHeaders;
      c.wait = Wait::kNone;  // the next request's clock starts now
    }
    c.pending = Pending{};
    // An idle keep-alive connection must not keep a multi-megabyte buffer of its last body.
    if (c.in.capacity() > kKeepCapacity) std::string(c.in).swap(c.in);
  }
};

HttpServer::HttpServer(SSL_CTX* ctx, Handler handler, ErrorHandler onError, size_t threads,
                       HttpLimits limits)
    : ctx_(ctx),
      handler_(std::move(handler)),
      onError_(std::move(onError)),
      threads_(std::max<size_t>(threads, 1)),
      limits_(limits) {
  stopFd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

HttpServer::~HttpServer() {
  stop();
  for (int fd : listeners_) ::close(fd);
  if (stopFd_ >= 0) ::close(stopFd_);
}

Result<int> HttpServer::listen(const std::string& host, int port) {
  if (stopFd_ < 0) return makeError(std::string("eventfd failed: ") + std::strerror(errno));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string where = host + ":" + std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0) {
    return makeError("cannot resolve " + host + ": " + gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, &::freeaddrinfo);
  int bound = port;
  // Every worker gets its own socket on the same port (SO_REUSEPORT): the kernel spreads new
  // connections over them, and no lock or hand-off sits between accept and the worker.
  for (size_t i = 0; i < threads_; ++i) {
    int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return makeError(std::string("socket failed: ") + std::strerror(errno));
    listeners_.push_back(fd);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    sockaddr_storage addr{};
    std::memcpy(&addr, found->ai_addr, found->ai_addrlen);
    if (i > 0) {  // the port the first socket got (port 0 = the kernel's pick)
      if (addr.ss_family == AF_INET6) {
        reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port = htons(static_cast<uint16_t>(bound));
      } else {
        reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(static_cast<uint16_t>(bound));
      }
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), found->ai_addrlen) != 0 ||
        ::listen(fd, 1024) != 0) {
      std::string reason = std::strerror(errno);
      for (int l : listeners_) ::close(l);
      listeners_.clear();
      return makeError("cannot listen on " + where + ": " + reason +
                       " (in use, or not an address of this machine?)");
    }
    if (i == 0) {
      sockaddr_storage got{};
      socklen_t len = sizeof got;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&got), &len);
      bound = ntohs(got.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
    }
  }
  return bound;
}

void HttpServer::noteAcceptFailure(int err, size_t shed) {
  connectionsShed_.fetch_add(shed, std::memory_order_relaxed);
  std::lock_guard lock(acceptLogMu_);
  ++acceptFailuresUnlogged_;
  shedUnlogged_ += shed;
  const auto now = SteadyClock::now();
  if (acceptLogged_ && now - acceptLoggedAt_ < kAcceptLogInterval) return;
  std::string message = std::string("accept failed: ") + std::strerror(err);
  if (resourceLimit(err)) {
    rlimit nofile{};
    ::getrlimit(RLIMIT_NOFILE, &nofile);
    message += err == EMFILE ? " (at the open-file limit, " + std::to_string(nofile.rlim_cur) + ")"
                             : " (at a system limit)";
  }
  message += "; " + std::to_string(acceptFailuresUnlogged_) + " failure(s) and " +
             std::to_string(shedUnlogged_) +
             " connection(s) closed unserved since the last report; accepting pauses " +
             std::to_string(kAcceptBackoff.count()) +
             " ms after each failure (logged at most every " +
             std::to_string(kAcceptLogInterval.count()) + " s)";
  log::error(message);
  acceptLogged_ = true;
  acceptLoggedAt_ = now;
  acceptFailuresUnlogged_ = 0;
  shedUnlogged_ = 0;
}

void HttpServer::noteLimit(const std::string& what) {
  std::lock_guard lock(limitLogMu_);
  ++limitUnlogged_;
  const auto now = SteadyClock::now();
  if (limitLogged_ && now - limitLoggedAt_ < kAcceptLogInterval) return;
  log::error(what + " (" + std::to_string(limitUnlogged_) +
             " time(s) since the last report; logged at most every " +
             std::to_string(kAcceptLogInterval.count()) + " s)");
  limitLogged_ = true;
  limitLoggedAt_ = now;
  limitUnlogged_ = 0;
}

HttpStats HttpServer::stats() const {
  HttpStats s;
  s.connections = connections_.load(std::memory_order_relaxed);
  s.connectionsRefused = connectionsRefused_.load(std::memory_order_relaxed);
  s.connectionsShed = connectionsShed_.load(std::memory_order_relaxed);
  s.bufferedBytes = buffered_.load(std::memory_order_relaxed);
  s.requestsShed = requestsShed_.load(std::memory_order_relaxed);
  return s;
}

void HttpServer::serve(size_t index) {
  try {
    Worker worker(*this, listeners_[index]);
    worker.loop();
  } catch (const std::exception& e) {
    log::error(std::string("internal error: HTTP worker stopped: ") + e.what());
  } catch (...) {
    log::error("internal error: HTTP worker stopped");
  }
}

void HttpServer::run() {
  if (listeners_.empty() || stopping_.load()) return;
  std::vector<std::thread> workers;
  workers.reserve(listeners_.size());
  for (size_t i = 0; i < listeners_.size(); ++i) workers.emplace_back([this, i] { serve(i); });
  for (auto& t : workers) t.join();
}

void HttpServer::stop() {
  if (stopping_.exchange(true)) return;
  if (stopFd_ >= 0) {
    uint64_t one = 1;
    ssize_t ignored = ::write(stopFd_, &one, sizeof one);
    (void)ignored;
  }
}

}  // namespace stateguard
