#include "csi-sidecar/h2_front.h"

#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "core/log.h"
#include "csi-sidecar/guarded_methods.h"

namespace stateguard::csi {

namespace {

using Clock = std::chrono::steady_clock;
using Headers = std::vector<std::pair<std::string, std::string>>;

/// While streams wait for a driver that is away, how often a connect is tried: unix connects
/// cost microseconds, and issue 14 asks for recovery within about a second.
constexpr auto kReconnectEvery = std::chrono::milliseconds(50);
/// Bytes gathered from one session before they are written: one write per poll round, but not
/// more than this held in user space per socket.
constexpr size_t kOutHighWater = 256 * 1024;

constexpr int kUnavailable = 14;

/// How long a PING's acknowledgement may wait for other bytes going the same way. gRPC clients
/// and servers send a PING with nearly every message (BDP probing); acknowledged at once, each
/// costs a write of its own and wakes the peer, twice per forwarded call. Held back, the ack
/// rides with the answer (a relay's peer sees the same: the far end's ack comes with its answer).
constexpr auto kPingAckDelay = std::chrono::milliseconds(1);
/// More held acks than this are sent at once (a client flooding PINGs gets them answered).
constexpr size_t kMaxHeldPingAcks = 8;

bool fillAddress(const std::string& path, sockaddr_un& addr) {
  addr = sockaddr_un{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return true;
}

/// A non-blocking connection to a unix socket, or -1 with errno set. A unix connect either
/// completes at once or fails (EAGAIN: the listener's backlog is full), so nothing can hang.
int connectUnix(const std::string& path) {
  sockaddr_un addr;
  if (!fillAddress(path, addr)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

/// gRPC's grpc-timeout ("<up to 8 digits><H|M|S|m|u|n>"); nullopt when absent or malformed.
std::optional<std::chrono::nanoseconds> parseGrpcTimeout(std::string_view v) {
  if (v.size() < 2 || v.size() > 9) return std::nullopt;
  long long n = 0;
  for (char c : v.substr(0, v.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  switch (v.back()) {
    case 'H':
      return std::chrono::hours(n);
    case 'M':
      return std::chrono::minutes(n);
    case 'S':
      return std::chrono::seconds(n);
    case 'm':
      return std::chrono::milliseconds(n);
    case 'u':
      return std::chrono::microseconds(n);
    case 'n':
      return std::chrono::nanoseconds(n);
    default:
      return std::nullopt;
  }
}

/// grpc-message is percent-encoded (gRPC over HTTP/2: bytes outside 0x20-0x7E, and '%').
std::string percentEncode(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e || c == '%') {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

/// The gRPC code a client reports for a stream reset with `error` (gRPC over HTTP/2, "Errors").
int codeOfReset(uint32_t error) {
  switch (error) {
    case NGHTTP2_REFUSED_STREAM:
      return kUnavailable;
    case NGHTTP2_CANCEL:
      return 1;  // Cancelled
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return 8;  // ResourceExhausted
    case NGHTTP2_INADEQUATE_SECURITY:
      return 7;  // PermissionDenied
    default:
      return 13;  // Internal
  }
}

std::vector<nghttp2_nv> toNv(const Headers& headers) {
  std::vector<nghttp2_nv> nv;
  nv.reserve(headers.size());
  for (const auto& [name, value] : headers) {
    nv.push_back(nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                            reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())),
                            name.size(), value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  return nv;
}

/// Bytes one side sent for the other, held until flow control lets them go on. Never more than
/// the receiving session's window: that is what the sender was allowed.
struct Pipe {
  std::deque<std::string> chunks;
  size_t offset = 0;  ///< into chunks.front()
  size_t bytes = 0;
  bool ended = false;  ///< the sender ended its side (END_STREAM)
  std::optional<Headers> trailers;

  void append(const uint8_t* data, size_t len) {
    chunks.emplace_back(reinterpret_cast<const char*>(data), len);
    bytes += len;
  }
  size_t take(uint8_t* out, size_t len) {
    size_t done = 0;
    while (done < len && !chunks.empty()) {
      std::string& c = chunks.front();
      size_t n = std::min(len - done, c.size() - offset);
      std::memcpy(out + done, c.data() + offset, n);
      done += n;
      offset += n;
      if (offset == c.size()) {
        chunks.pop_front();
        offset = 0;
      }
    }
    bytes -= done;
    return done;
  }
  /// Drops what is held; returns how many bytes that was.
  size_t clear() {
    size_t n = bytes;
    chunks.clear();
    offset = 0;
    bytes = 0;
    return n;
  }
};

/// PING acknowledgements held back (kPingAckDelay) for one session.
struct PingAcks {
  std::vector<std::array<uint8_t, 8>> opaque;
  Clock::time_point since;

  void hold(const uint8_t* data) {
    if (opaque.empty()) since = Clock::now();
    opaque.emplace_back();
    std::memcpy(opaque.back().data(), data, 8);
  }
  /// Submits them when the session has other frames to send, or they waited long enough. False
  /// when the peer floods: nghttp2 already holds max_outbound_ack unsent acks because the peer
  /// does not read them (what nghttp2 reports from mem_recv when it acks by itself).
  bool submitIfDue(nghttp2_session* session, bool force) {
    if (opaque.empty()) return true;
    if (!force && !nghttp2_session_want_write(session) && opaque.size() < kMaxHeldPingAcks &&
        Clock::now() - since < kPingAckDelay) {
      return true;
    }
    bool flooded = false;
    for (const auto& o : opaque) {
      flooded = nghttp2_submit_ping(session, NGHTTP2_FLAG_ACK, o.data()) == NGHTTP2_ERR_FLOODED ||
                flooded;
    }
    opaque.clear();
    return !flooded;
  }
  /// Milliseconds until they are due (for poll), or -1 when none are held.
  int dueInMs() const {
    if (opaque.empty()) return -1;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(since + kPingAckDelay - Clock::now());
    return static_cast<int>(std::max<long long>(0, left.count()));
  }
};

struct Backend;

/// One call: a kubelet stream and, once routed, its stream on the driver or proxy connection.
struct Stream {
  int32_t frontId = 0;
  Backend* backend = nullptr;
  int32_t backId = -1;  ///< -1 until submitted to the backend
  Headers request;
  size_t headerBytes = 0;
  std::string path;
  std::optional<Clock::time_point> deadline;
  Clock::time_point started;
  Pipe up;    ///< kubelet -> backend
  Pipe down;  ///< backend -> kubelet
  Headers response;
  bool guarded = false;
  bool waiting = false;    ///< for the driver to come back, within the caller's deadline
  bool responded = false;  ///< response HEADERS submitted to kubelet
  bool discardUp = false;  ///< the request can no longer go anywhere: consume and drop
  bool frontClosed = false;
  bool backClosed = false;
  bool observed = false;
  int grpcStatus = -1;
};

class Connection;

/// A client connection from the front to the driver or to the proxy.
struct Backend {
  Connection* conn = nullptr;
  bool guard = false;
  int fd = -1;
  nghttp2_session* session = nullptr;
  std::string out;
  size_t outOffset = 0;
  bool blocked = false;  ///< the last write hit EAGAIN: wait for POLLOUT
  PingAcks acks;
  size_t streams = 0;  ///< streams routed here and not yet closed on this side
};

/// One kubelet connection and its backends, all driven by one thread.
class Connection {
 public:
  Connection(H2Front* front, int fd) : front_(front), fd_(fd) {}
  ~Connection();
  void run();

  // nghttp2 callbacks, front (server) side.
  int onFrontBeginHeaders(const nghttp2_frame* frame);
  int onFrontHeader(const nghttp2_frame* frame, std::string_view name, std::string_view value);
  int onFrontFrameRecv(const nghttp2_frame* frame);
  int onFrontData(int32_t id, const uint8_t* data, size_t len);
  int onFrontFrameSend(const nghttp2_frame* frame);
  int onFrontStreamClose(int32_t id, uint32_t error);
  ssize_t readDown(Stream* s, uint8_t* buf, size_t len, uint32_t* flags);

  // nghttp2 callbacks, backend (client) side.
  int onBackHeader(Backend* b, const nghttp2_frame* frame, std::string_view name,
                   std::string_view value);
  int onBackFrameRecv(Backend* b, const nghttp2_frame* frame);
  int onBackData(Backend* b, int32_t id, const uint8_t* data, size_t len);
  int onBackStreamClose(Backend* b, int32_t id, uint32_t error);
  ssize_t readUp(Backend* b, Stream* s, uint8_t* buf, size_t len, uint32_t* flags);

 private:
  bool setupFront();
  Backend* backendFor(bool guard, std::string* why);
  void dropBackend(Backend* b, const std::string& why);
  void route(Stream* s);
  bool submitUpstream(Stream* s, Backend* b);
  void retryWaiting();
  void answerUnavailable(Stream* s, const std::string& message);
  void observe(Stream* s, int code);
  void discardUp(Stream* s);
  void reap();
  bool flush(nghttp2_session* session, int fd, std::string& out, size_t& offset, bool& blocked,
             PingAcks& acks, bool* fatal);
  bool readFrom(nghttp2_session* session, int fd);
  std::string driverUnavailable(const std::string& why) const;

  H2Front* front_;
  int fd_;
  nghttp2_session* session_ = nullptr;
  std::string out_;
  size_t outOffset_ = 0;
  bool blocked_ = false;
  PingAcks acks_;
  std::map<int32_t, std::unique_ptr<Stream>> streams_;
  std::vector<std::unique_ptr<Backend>> backends_;  ///< current and retiring (after GOAWAY)
  Backend* driver_ = nullptr;                       ///< the one new streams go to
  Backend* guard_ = nullptr;
  bool draining_ = false;
  std::string lastDriverError_;
};

Connection* connOf(void* user) { return static_cast<Connection*>(user); }
Backend* backOf(void* user) { return static_cast<Backend*>(user); }

// ---- front session callbacks --------------------------------------------------------------------

int frontBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  return connOf(user)->onFrontBeginHeaders(frame);
}
int frontHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                const uint8_t* value, size_t valuelen, uint8_t, void* user) {
  return connOf(user)->onFrontHeader(
      frame, std::string_view(reinterpret_cast<const char*>(name), namelen),
      std::string_view(reinterpret_cast<const char*>(value), valuelen));
}
int frontFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  return connOf(user)->onFrontFrameRecv(frame);
}
int frontData(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) {
  return connOf(user)->onFrontData(id, data, len);
}
int frontFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  return connOf(user)->onFrontFrameSend(frame);
}
int frontStreamClose(nghttp2_session*, int32_t id, uint32_t error, void* user) {
  return connOf(user)->onFrontStreamClose(id, error);
}
ssize_t frontReadDown(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                      nghttp2_data_source* source, void* user) {
  return connOf(user)->readDown(static_cast<Stream*>(source->ptr), buf, len, flags);
}

// ---- backend session callbacks ------------------------------------------------------------------

int backHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
               const uint8_t* value, size_t valuelen, uint8_t, void* user) {
  Backend* b = backOf(user);
  return b->conn->onBackHeader(b, frame,
                               std::string_view(reinterpret_cast<const char*>(name), namelen),
                               std::string_view(reinterpret_cast<const char*>(value), valuelen));
}
int backFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  Backend* b = backOf(user);
  return b->conn->onBackFrameRecv(b, frame);
}
int backData(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) {
  Backend* b = backOf(user);
  return b->conn->onBackData(b, id, data, len);
}
int backStreamClose(nghttp2_session*, int32_t id, uint32_t error, void* user) {
  Backend* b = backOf(user);
  return b->conn->onBackStreamClose(b, id, error);
}
ssize_t backReadUp(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                   nghttp2_data_source* source, void* user) {
  Backend* b = backOf(user);
  return b->conn->readUp(b, static_cast<Stream*>(source->ptr), buf, len, flags);
}

/// Callbacks and options shared by every session of the process (nghttp2 copies them).
struct SessionSetup {
  nghttp2_session_callbacks* front = nullptr;
  nghttp2_session_callbacks* back = nullptr;
  nghttp2_option* option = nullptr;
  SessionSetup() {
    nghttp2_session_callbacks_new(&front);
    nghttp2_session_callbacks_set_on_begin_headers_callback(front, frontBeginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(front, frontHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(front, frontFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(front, frontData);
    nghttp2_session_callbacks_set_on_frame_send_callback(front, frontFrameSend);
    nghttp2_session_callbacks_set_on_stream_close_callback(front, frontStreamClose);
    nghttp2_session_callbacks_new(&back);
    nghttp2_session_callbacks_set_on_header_callback(back, backHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(back, backFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(back, backData);
    nghttp2_session_callbacks_set_on_stream_close_callback(back, backStreamClose);
    nghttp2_option_new(&option);
    // Window updates follow what the other side took: the bound on memory (see h2_front.h).
    nghttp2_option_set_no_auto_window_update(option, 1);
    // A relay is no stricter than the ends: gRPC sends grpc-message with spaces left as they
    // are, and a driver's message ending in one ("...output: ") must come back, not become a
    // PROTOCOL_ERROR (RFC 9113 forbids such values; gRPC implementations accept them).
    nghttp2_option_set_no_rfc9113_leading_and_trailing_ws_validation(option, 1);
    // PING acks wait for company (kPingAckDelay).
    nghttp2_option_set_no_auto_ping_ack(option, 1);
  }
  ~SessionSetup() {
    nghttp2_session_callbacks_del(front);
    nghttp2_session_callbacks_del(back);
    nghttp2_option_del(option);
  }
};

const SessionSetup& sessionSetup() {
  static const SessionSetup setup;
  return setup;
}

// ---- the connection -----------------------------------------------------------------------------

Connection::~Connection() {
  // Backend sessions first: their callbacks may still name streams.
  for (auto& b : backends_) {
    nghttp2_session_del(b->session);
    ::close(b->fd);
  }
  backends_.clear();
  if (session_) nghttp2_session_del(session_);
  ::close(fd_);
}

bool Connection::setupFront() {
  if (nghttp2_session_server_new2(&session_, sessionSetup().front, this, sessionSetup().option) !=
      0) {
    return false;
  }
  const FrontOptions& o = front_->options();
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o.maxConcurrentStreams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(o.windowBytes)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(o.maxHeaderBytes)},
  };
  if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings)) != 0) {
    return false;
  }
  return nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, o.windowBytes) == 0;
}

Backend* Connection::backendFor(bool guard, std::string* why) {
  Backend*& current = guard ? guard_ : driver_;
  if (current && nghttp2_session_check_request_allowed(current->session)) return current;
  // Gone, or it sent GOAWAY: the old one (if any) finishes its streams, new ones get a new one.
  current = nullptr;
  const FrontOptions& o = front_->options();
  const std::string& path = guard ? o.guardPath : o.driverPath;
  int fd = connectUnix(path);
  if (fd < 0) {
    *why = std::string("connect: ") + std::strerror(errno);
    return nullptr;
  }
  auto b = std::make_unique<Backend>();
  b->conn = this;
  b->guard = guard;
  b->fd = fd;
  if (nghttp2_session_client_new2(&b->session, sessionSetup().back, b.get(),
                                  sessionSetup().option) != 0) {
    ::close(fd);
    *why = "out of memory";
    return nullptr;
  }
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(o.windowBytes)},
  };
  nghttp2_submit_settings(b->session, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(b->session, NGHTTP2_FLAG_NONE, 0, o.windowBytes);
  current = b.get();
  backends_.push_back(std::move(b));
  return current;
}

std::string Connection::driverUnavailable(const std::string& why) const {
  return "stateguard: the CSI driver at unix://" + front_->options().driverPath +
         " is not reachable (" + why + ")";
}

void Connection::dropBackend(Backend* b, const std::string& why) {
  const std::string message = b->guard ? "stateguard: the guard at unix://" +
                                             front_->options().guardPath +
                                             " closed the connection (" + why + ")"
                                       : driverUnavailable(why);
  for (auto& [id, s] : streams_) {
    if (s->backend != b) continue;
    s->backend = nullptr;
    s->backClosed = true;
    discardUp(s.get());
    if (s->frontClosed) continue;
    if (!s->responded) {
      answerUnavailable(s.get(), message);
    } else if (!s->down.ended) {
      // Headers went out already: end with trailers saying what happened.
      s->down.trailers = Headers{{"grpc-status", std::to_string(kUnavailable)},
                                 {"grpc-message", percentEncode(message)}};
      s->down.ended = true;
      if (!s->guarded) observe(s.get(), kUnavailable);
      nghttp2_session_resume_data(session_, s->frontId);
    }
  }
  if (driver_ == b) driver_ = nullptr;
  if (guard_ == b) guard_ = nullptr;
  nghttp2_session_del(b->session);
  ::close(b->fd);
  std::erase_if(backends_, [b](const std::unique_ptr<Backend>& p) { return p.get() == b; });
}

void Connection::observe(Stream* s, int code) {
  if (s->observed || s->guarded) return;  // the proxy counts guarded calls itself
  s->observed = true;
  if (SidecarMetrics* m = front_->metrics()) {
    const FrontOptions& o = front_->options();
    m->observe(o.driverName ? o.driverName() : "", s->path, code,
               std::chrono::duration<double>(Clock::now() - s->started).count());
  }
}

void Connection::discardUp(Stream* s) {
  s->discardUp = true;
  if (size_t n = s->up.clear()) nghttp2_session_consume(session_, s->frontId, n);
}

void Connection::answerUnavailable(Stream* s, const std::string& message) {
  // A trailers-only answer: what a gRPC server sends when a call fails before any message.
  Headers h = {{":status", "200"},
               {"content-type", "application/grpc"},
               {"grpc-status", std::to_string(kUnavailable)},
               {"grpc-message", percentEncode(message)}};
  auto nv = toNv(h);
  s->responded = true;
  s->down.ended = true;
  s->waiting = false;
  discardUp(s);
  observe(s, kUnavailable);
  nghttp2_submit_response(session_, s->frontId, nv.data(), nv.size(), nullptr);
}

bool Connection::submitUpstream(Stream* s, Backend* b) {
  auto nv = toNv(s->request);
  nghttp2_data_provider provider{};
  provider.source.ptr = s;
  provider.read_callback = backReadUp;
  const bool body = !(s->up.ended && s->up.bytes == 0 && !s->up.trailers);
  int32_t id = nghttp2_submit_request(b->session, nullptr, nv.data(), nv.size(),
                                      body ? &provider : nullptr, s);
  if (id < 0) return false;
  Headers().swap(s->request);  // nghttp2 copied them
  s->backend = b;
  s->backId = id;
  s->waiting = false;
  ++b->streams;
  return true;
}

void Connection::route(Stream* s) {
  s->guarded = isGuardedMethod(s->path);
  std::string why;
  Backend* b = backendFor(s->guarded, &why);
  if (!b) {
    if (s->guarded) {
      return answerUnavailable(s, "stateguard: the guard at unix://" + front_->options().guardPath +
                                      " is not reachable (" + why + ")");
    }
    lastDriverError_ = why;
    // Like gRPC's wait-for-ready: a call with a deadline waits for the driver within it (a
    // restarting driver is back in a second or two); one without fails at once.
    if (s->deadline && Clock::now() < *s->deadline && !draining_) {
      s->waiting = true;
      return;
    }
    return answerUnavailable(s, driverUnavailable(why));
  }
  if (!submitUpstream(s, b)) answerUnavailable(s, driverUnavailable("cannot start a stream"));
}

void Connection::retryWaiting() {
  bool any = false;
  for (auto& [id, s] : streams_) any = any || (s->waiting && !s->frontClosed);
  if (!any) return;
  std::string why;
  Backend* b = backendFor(false, &why);
  if (!b) lastDriverError_ = why;
  const auto now = Clock::now();
  for (auto& [id, s] : streams_) {
    if (!s->waiting || s->frontClosed) continue;
    if (b) {
      if (!submitUpstream(s.get(), b)) {
        answerUnavailable(s.get(), driverUnavailable("cannot start a stream"));
      }
    } else if (now >= *s->deadline || draining_) {
      answerUnavailable(s.get(), driverUnavailable(lastDriverError_));
    }
  }
}

int Connection::onFrontBeginHeaders(const nghttp2_frame* frame) {
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto s = std::make_unique<Stream>();
  s->frontId = frame->hd.stream_id;
  s->started = Clock::now();
  nghttp2_session_set_stream_user_data(session_, s->frontId, s.get());
  streams_[s->frontId] = std::move(s);
  return 0;
}

int Connection::onFrontHeader(const nghttp2_frame* frame, std::string_view name,
                              std::string_view value) {
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(session_, frame->hd.stream_id));
  if (!s || frame->hd.type != NGHTTP2_HEADERS) return 0;
  s->headerBytes += name.size() + value.size() + 32;  // RFC 9113's accounting per field
  if (s->headerBytes > front_->options().maxHeaderBytes) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // nghttp2 resets the stream
  }
  if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    if (name == ":path") s->path = value;
    if (name == "grpc-timeout") {
      if (auto t = parseGrpcTimeout(value)) {
        s->deadline = s->started + std::chrono::duration_cast<Clock::duration>(*t);
      }
    }
    s->request.emplace_back(name, value);
  } else {
    if (!s->up.trailers) s->up.trailers.emplace();
    s->up.trailers->emplace_back(name, value);
  }
  return 0;
}

int Connection::onFrontFrameRecv(const nghttp2_frame* frame) {
  if (frame->hd.type == NGHTTP2_PING && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
    acks_.hold(frame->ping.opaque_data);
    return 0;
  }
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(session_, frame->hd.stream_id));
  if (!s) return 0;
  const bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  if (end) s->up.ended = true;
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    route(s);
    return 0;
  }
  if (end && s->backend && s->backId > 0)
    nghttp2_session_resume_data(s->backend->session, s->backId);
  return 0;
}

int Connection::onFrontData(int32_t id, const uint8_t* data, size_t len) {
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session_, id));
  if (!s || s->discardUp) {
    nghttp2_session_consume(session_, id, len);
    return 0;
  }
  s->up.append(data, len);
  if (s->backend && s->backId > 0) nghttp2_session_resume_data(s->backend->session, s->backId);
  return 0;
}

int Connection::onFrontFrameSend(const nghttp2_frame* frame) {
  if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(session_, frame->hd.stream_id));
  // The answer is complete while kubelet is still sending: as a gRPC server does, reset with
  // NO_ERROR so it stops (the request can no longer reach anyone).
  if (s && !s->up.ended) {
    discardUp(s);
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s->frontId, NGHTTP2_NO_ERROR);
  }
  return 0;
}

int Connection::onFrontStreamClose(int32_t id, uint32_t error) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return 0;
  Stream* s = it->second.get();
  s->frontClosed = true;
  discardUp(s);
  if (!s->observed && s->waiting) {
    // kubelet gave up waiting for the driver: its deadline passed, or it cancelled.
    observe(s, s->deadline && Clock::now() >= *s->deadline ? 4 : 1);
  } else if (!s->observed && s->backId > 0) {
    // Closed before the backend's answer ended: kubelet cancelled (gRPC's code: Cancelled).
    observe(s, error == NGHTTP2_NO_ERROR && s->grpcStatus >= 0 ? s->grpcStatus : 1);
  }
  s->waiting = false;
  if (s->backend && s->backId > 0) {
    // kubelet cancelled (or the answer is complete): tell the backend if its stream is open.
    if (!s->backClosed) {
      nghttp2_submit_rst_stream(s->backend->session, NGHTTP2_FLAG_NONE, s->backId, NGHTTP2_CANCEL);
    }
    // Held answer bytes are dropped and acknowledged; later ones are on arrival (onBackData).
    if (size_t n = s->down.clear()) nghttp2_session_consume(s->backend->session, s->backId, n);
  }
  return 0;
}

ssize_t Connection::readDown(Stream* s, uint8_t* buf, size_t len, uint32_t* flags) {
  size_t n = s->down.take(buf, len);
  if (n > 0 && s->backend && s->backId > 0)
    nghttp2_session_consume(s->backend->session, s->backId, n);
  if (s->down.bytes == 0 && s->down.ended) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->down.trailers) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      auto nv = toNv(*s->down.trailers);
      nghttp2_submit_trailer(session_, s->frontId, nv.data(), nv.size());
    }
    return static_cast<ssize_t>(n);
  }
  if (n == 0) return NGHTTP2_ERR_DEFERRED;
  return static_cast<ssize_t>(n);
}

int Connection::onBackHeader(Backend* b, const nghttp2_frame* frame, std::string_view name,
                             std::string_view value) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(b->session, frame->hd.stream_id));
  if (!s) return 0;
  if (name == "grpc-status") {
    int code = 0;
    for (char c : value) code = (c >= '0' && c <= '9' && code < 1000) ? code * 10 + (c - '0') : 2;
    s->grpcStatus = code;
  }
  if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
    s->response.emplace_back(name, value);
  } else {
    if (!s->down.trailers) s->down.trailers.emplace();
    s->down.trailers->emplace_back(name, value);
  }
  return 0;
}

int Connection::onBackFrameRecv(Backend* b, const nghttp2_frame* frame) {
  if (frame->hd.type == NGHTTP2_PING && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
    b->acks.hold(frame->ping.opaque_data);
    return 0;
  }
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(b->session, frame->hd.stream_id));
  if (!s || s->frontClosed) return 0;
  const bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  if (end) {
    s->down.ended = true;
    observe(s, s->grpcStatus < 0 ? 2 : s->grpcStatus);  // no grpc-status: Unknown
  }
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
    auto nv = toNv(s->response);
    s->responded = true;
    nghttp2_data_provider provider{};
    provider.source.ptr = s;
    provider.read_callback = frontReadDown;
    // Trailers-only (END_STREAM on the headers) has no body to read.
    nghttp2_submit_response(session_, s->frontId, nv.data(), nv.size(), end ? nullptr : &provider);
    Headers().swap(s->response);  // nghttp2 copied them
    return 0;
  }
  if (end && s->responded) nghttp2_session_resume_data(session_, s->frontId);
  return 0;
}

int Connection::onBackData(Backend* b, int32_t id, const uint8_t* data, size_t len) {
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(b->session, id));
  if (!s || s->frontClosed) {
    nghttp2_session_consume(b->session, id, len);
    return 0;
  }
  s->down.append(data, len);
  if (s->responded) nghttp2_session_resume_data(session_, s->frontId);
  return 0;
}

int Connection::onBackStreamClose(Backend* b, int32_t id, uint32_t error) {
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(b->session, id));
  if (b->streams > 0) --b->streams;
  if (!s || s->backend != b) return 0;
  s->backClosed = true;
  discardUp(s);
  if (s->frontClosed || s->down.ended) return 0;
  // The backend reset the call before its answer was complete: so does the front, with the
  // same code, as a relay would (gRPC clients map the code: REFUSED_STREAM is UNAVAILABLE).
  const uint32_t code =
      error == NGHTTP2_NO_ERROR ? static_cast<uint32_t>(NGHTTP2_INTERNAL_ERROR) : error;
  observe(s, codeOfReset(code));
  if (size_t n = s->down.clear()) nghttp2_session_consume(b->session, id, n);
  s->down.ended = true;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s->frontId, code);
  return 0;
}

ssize_t Connection::readUp(Backend* b, Stream* s, uint8_t* buf, size_t len, uint32_t* flags) {
  size_t n = s->up.take(buf, len);
  if (n > 0) nghttp2_session_consume(session_, s->frontId, n);
  if (s->up.bytes == 0 && s->up.ended) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->up.trailers) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      auto nv = toNv(*s->up.trailers);
      nghttp2_submit_trailer(b->session, s->backId, nv.data(), nv.size());
    }
    return static_cast<ssize_t>(n);
  }
  if (n == 0) return s->discardUp ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : NGHTTP2_ERR_DEFERRED;
  return static_cast<ssize_t>(n);
}

void Connection::reap() {
  for (auto it = streams_.begin(); it != streams_.end();) {
    Stream* s = it->second.get();
    // The backend's session may still name the stream until it closed there.
    const bool backDone = s->backId < 0 || s->backClosed || s->backend == nullptr;
    if (s->frontClosed && backDone && !s->waiting) {
      it = streams_.erase(it);
    } else {
      ++it;
    }
  }
  // A backend that was replaced after GOAWAY goes once its last stream is done.
  for (size_t i = 0; i < backends_.size();) {
    Backend* b = backends_[i].get();
    if (b != driver_ && b != guard_ && b->streams == 0) {
      dropBackend(b, "retired");
    } else {
      ++i;
    }
  }
}

bool Connection::flush(nghttp2_session* session, int fd, std::string& out, size_t& offset,
                       bool& blocked, PingAcks& acks, bool* fatal) {
  bool wrote = false;
  if (!acks.submitIfDue(session, draining_)) {
    errno = ENOBUFS;
    *fatal = true;
    return wrote;
  }
  for (;;) {
    while (out.size() - offset < kOutHighWater) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session, &data);
      if (n < 0) {
        *fatal = true;
        return wrote;
      }
      if (n == 0) break;
      // Drop what was sent before appending: a socket that keeps taking part of the buffer
      // would otherwise let `out` grow by what it took, without bound.
      if (offset > 0) {
        out.erase(0, offset);
        offset = 0;
      }
      out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    if (offset == out.size()) {
      blocked = false;
      return wrote;
    }
    ssize_t w = ::send(fd, out.data() + offset, out.size() - offset, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        blocked = true;
        return wrote;
      }
      *fatal = true;
      return wrote;
    }
    wrote = true;
    offset += static_cast<size_t>(w);
    if (offset == out.size()) {
      out.clear();
      offset = 0;
    }
  }
}

/// Reads what is there and feeds it to the session; false when the peer is gone or broke the
/// protocol.
bool Connection::readFrom(nghttp2_session* session, int fd) {
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    if (n == 0) return false;
    if (nghttp2_session_mem_recv(session, buf, static_cast<size_t>(n)) < 0) return false;
    // A short read emptied the socket: no second recv just to hear EAGAIN.
    if (static_cast<size_t>(n) < sizeof buf) return true;
  }
}

void Connection::run() {
  if (!setupFront()) return;
  std::vector<pollfd> fds;
  std::vector<Backend*> polled;
  std::optional<Clock::time_point> drainUntil;
  for (;;) {
    // Write what every session has to say; a session's callbacks may give another one more to
    // say (window updates, resumed data), so go round until no socket takes more.
    for (;;) {
      bool any = false;
      for (size_t i = 0; i < backends_.size();) {
        Backend* b = backends_[i].get();
        bool fatal = false;
        any = flush(b->session, b->fd, b->out, b->outOffset, b->blocked, b->acks, &fatal) || any;
        if (fatal) {
          dropBackend(b, std::string("write: ") + std::strerror(errno));
          continue;
        }
        ++i;
      }
      bool fatal = false;
      any = flush(session_, fd_, out_, outOffset_, blocked_, acks_, &fatal) || any;
      if (fatal) return;
      if (!any) break;
    }
    reap();
    if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_) &&
        outOffset_ == out_.size()) {
      return;  // both sides said goodbye
    }
    if (!drainUntil && front_->stopping()) {
      // Shutting down: no new streams; those in flight get options.drain.
      draining_ = true;
      drainUntil = Clock::now() + front_->options().drain;
      nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                            nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                            nullptr, 0);
      retryWaiting();
      continue;
    }
    if (drainUntil && Clock::now() >= *drainUntil) return;

    fds.clear();
    polled.clear();
    fds.push_back({fd_, static_cast<short>(POLLIN | (blocked_ ? POLLOUT : 0)), 0});
    for (auto& b : backends_) {
      fds.push_back({b->fd, static_cast<short>(POLLIN | (b->blocked ? POLLOUT : 0)), 0});
      polled.push_back(b.get());
    }
    if (!drainUntil) fds.push_back({front_->stopFd(), POLLIN, 0});
    int timeout = -1;
    bool waiting = false;
    for (auto& [id, s] : streams_) waiting = waiting || s->waiting;
    if (waiting) timeout = static_cast<int>(kReconnectEvery.count());
    auto sooner = [&timeout](int ms) {
      if (ms >= 0) timeout = timeout < 0 ? ms : std::min(timeout, ms);
    };
    sooner(acks_.dueInMs());
    for (auto& b : backends_) sooner(b->acks.dueInMs());
    if (drainUntil) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*drainUntil - Clock::now());
      timeout = timeout < 0 ? static_cast<int>(left.count() + 1)
                            : std::min(timeout, static_cast<int>(left.count() + 1));
    }
    int r = ::poll(fds.data(), fds.size(), timeout);
    if (r < 0 && errno != EINTR) return;
    if (r > 0) {
      for (size_t i = 0; i < polled.size(); ++i) {
        short ev = fds[i + 1].revents;
        if (!ev) continue;
        Backend* b = polled[i];
        if (ev & (POLLIN | POLLHUP | POLLERR)) {
          if (!readFrom(b->session, b->fd)) {
            dropBackend(b, "the connection closed");
            continue;
          }
        }
      }
      if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        if (!readFrom(session_, fd_)) return;
      }
    }
    retryWaiting();
  }
}

}  // namespace

// ---- the listener -------------------------------------------------------------------------------

H2Front::H2Front(FrontOptions options, SidecarMetrics* metrics)
    : options_(std::move(options)), metrics_(metrics) {}

void H2Front::serve(int fd) {
  Connection conn(this, fd);
  conn.run();
}

H2Front::~H2Front() {
  shutdown();
  if (listenFd_ >= 0) ::close(listenFd_);
  if (stopFd_ >= 0) ::close(stopFd_);
}

Status H2Front::start(const std::string& path) {
  sockaddr_un addr;
  if (!fillAddress(path, addr)) return makeError("socket path too long: " + path);
  stopFd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stopFd_ < 0) return makeError(std::string("eventfd: ") + std::strerror(errno));
  listenFd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listenFd_ < 0) return makeError(std::string("socket: ") + std::strerror(errno));
  ::unlink(path.c_str());  // a socket left by an earlier run would make bind fail
  if (::bind(listenFd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listenFd_, 128) != 0) {
    return makeError("cannot listen on unix://" + path + ": " + std::strerror(errno));
  }
  {
    std::lock_guard lock(mu_);
    started_ = true;
  }
  acceptor_ = std::thread([this] { acceptLoop(); });
  return Ok{};
}

void H2Front::acceptLoop() {
  bool warned = false;
  for (;;) {
    pollfd fds[2] = {{listenFd_, POLLIN, 0}, {stopFd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (stopping_) return;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    {
      std::lock_guard lock(mu_);
      if (connections_ >= options_.maxConnections) {
        if (!warned) {
          log::warn("stateguard-csi: more than " + std::to_string(options_.maxConnections) +
                    " client connections at once; closing the newest");
          warned = true;
        }
        ::close(fd);
        continue;
      }
      ++connections_;
    }
    std::thread([this, fd] {
      serve(fd);
      std::lock_guard lock(mu_);
      --connections_;
      cv_.notify_all();
    }).detach();
  }
}

void H2Front::shutdown() {
  {
    std::lock_guard lock(mu_);
    if (!started_ || stopped_) return;
    stopped_ = true;
  }
  stopping_ = true;
  uint64_t one = 1;
  (void)!::write(stopFd_, &one, sizeof one);
  acceptor_.join();
  // New clients are refused from here on instead of waiting in the backlog.
  ::close(listenFd_);
  listenFd_ = -1;
  // Connection threads end by themselves within options.drain (their poll wakes on stopFd_).
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return connections_ == 0; });
}

}  // namespace stateguard::csi
