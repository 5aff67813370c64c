#pragma once
// Raw HTTP/2 bytes for tests and fuzz targets that play a broken or hostile peer of the CSI
// sidecar's front, where a real client library would refuse to send them. Header-only and free of
// gRPC and nghttp2, so the fuzz build can use it too.

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace stateguard::testing {

/// The client connection preface (RFC 9113 section 3.4), without the SETTINGS frame after it.
inline const std::string kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame: 24-bit length, type, flags, 31-bit stream id, payload.
inline std::string h2Frame(uint8_t type, uint8_t flags, uint32_t stream,
                           const std::string& payload) {
  std::string f;
  f += static_cast<char>(payload.size() >> 16);
  f += static_cast<char>(payload.size() >> 8);
  f += static_cast<char>(payload.size());
  f += static_cast<char>(type);
  f += static_cast<char>(flags);
  for (int shift : {24, 16, 8, 0}) f += static_cast<char>(stream >> shift);
  return f + payload;
}

/// An HPACK literal header field without indexing, new name, no Huffman coding (names and values
/// under 127 bytes).
inline std::string hpackLiteral(const std::string& name, const std::string& value) {
  return std::string(1, '\0') + static_cast<char>(name.size()) + name +
         static_cast<char>(value.size()) + value;
}

/// The header block of a gRPC call to `path` (no deadline).
inline std::string grpcRequestHeaders(const std::string& path) {
  return hpackLiteral(":method", "POST") + hpackLiteral(":scheme", "http") +
         hpackLiteral(":path", path) + hpackLiteral(":authority", "localhost") +
         hpackLiteral("content-type", "application/grpc") + hpackLiteral("te", "trailers");
}

/// A connected Unix stream socket to `path`, or -1.
inline int connectUnix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return -1;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace stateguard::testing
