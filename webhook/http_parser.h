#pragma once
// The HTTP/1.1 request parser of the webhook's server, apart from its sockets and TLS so that it
// can be fuzzed (tests/fuzz/http_parser_fuzz.cc): where a request's head ends, the request line
// and headers, and how its body is framed. Strict and bounded: anything unusual is refused with
// the status to answer and a message that says what is wrong.

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stateguard {

/// One parsed request, as handed to the handler.
struct HttpRequest {
  std::string method;  ///< GET, POST, PUT, DELETE, PATCH or HEAD
  std::string path;    ///< percent-decoded, without the query string
  std::string query;   ///< after '?', raw
  std::string body;    ///< at most HttpLimits::maxBodyBytes
  std::vector<std::pair<std::string, std::string>> headers;  ///< names lower-cased
  /// The TLS client certificate of the connection, when the server asks for one.
  bool peerPresented = false;  ///< the client sent a certificate
  bool peerVerified = false;   ///< ... and it verified against the server's client CA
  std::string peerName;        ///< its subject's common name
  std::string peerError;       ///< why it did not verify
  /// The value of a header (name in lower case), or "" if absent.
  std::string header(const std::string& lowerName) const;
};

/// Size and time bounds of the server.
struct HttpLimits {
  size_t maxHeaderBytes = 16 * 1024;                ///< request line + headers, else 431
  size_t maxBodyBytes = 3 * 1024 * 1024;            ///< larger bodies get 413
  size_t maxDrainBytes = 16 * 1024 * 1024;          ///< bodies up to this are read before the 413
  std::chrono::milliseconds idleTimeout{30000};     ///< keep-alive connection with no request
  std::chrono::milliseconds requestTimeout{10000};  ///< handshake, partial request, stalled write
  /// Open connections across all workers; past it a new connection is closed at once (0 = none).
  size_t maxConnections = 1024;
  /// Request bytes held across all connections (input buffers and bodies being read; a body's
  /// declared Content-Length is charged when its headers arrive). A request that would pass it
  /// is answered 503 with Retry-After and its connection closed (0 = no budget).
  size_t maxBufferedBytes = 32 * 1024 * 1024;
};

/// Where a request's line and headers end in the bytes received so far.
struct HeadSpan {
  size_t headBytes = 0;  ///< bytes of the request line and headers (the last '\n' included)
  size_t bodyStart = 0;  ///< first byte after the empty line
};

/// Looks for the empty line that ends a request's head in `in`, from `from` on (the bytes
/// before it were searched before: pass headScanResume() of the previous size). Accepts CRLF
/// and bare LF line ends.
bool findHeadEnd(std::string_view in, size_t from, HeadSpan& span);
/// Where the next search may start once `size` bytes were searched without finding the end.
inline size_t headScanResume(size_t size) { return size >= 2 ? size - 2 : 0; }

/// Parses a request line and headers (`head`, as findHeadEnd() delimits it) into `req`.
/// On failure returns false with the HTTP status to answer (400, 501, 505) and why.
bool parseRequestHead(std::string_view head, HttpRequest& req, bool& keepAlive, bool& http10,
                      int& code, std::string& error);

/// How a request's body is read.
struct BodyFraming {
  int code = 0;  ///< non-zero: refuse with this status (400, 411, 413) and `error`
  std::string error;
  size_t length = 0;   ///< bytes of body
  bool drain = false;  ///< over maxBodyBytes: read and drop `length` bytes, then answer 413
};
/// From Content-Length and Transfer-Encoding (chunked bodies are refused: the apiserver sends
/// a length).
BodyFraming bodyFraming(const HttpRequest& req, const HttpLimits& limits);

/// ASCII lower case.
std::string lowerCase(std::string_view s);

}  // namespace stateguard
