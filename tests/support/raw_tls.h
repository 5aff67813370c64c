#pragma once
// A raw TLS client connection (OpenSSL directly) for what httplib's client will not do: lie
// about Content-Length, stop mid-body, hold a connection idle, or speak an old protocol version.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <memory>
#include <regex>
#include <string>

namespace stateguard::testing {

/// A raw TLS connection (OpenSSL directly) for what httplib's client will not do: lie about
/// Content-Length, stop mid-body, or speak an old protocol version.
class RawTls {
 public:
  ~RawTls() { close(); }

  /// Connects to 127.0.0.1:port and handshakes, verifying the server against caPath. Version
  /// bounds of 0 keep OpenSSL's defaults. On failure `error` holds OpenSSL's reason.
  static std::unique_ptr<RawTls> connect(int port, const std::string& caPath, int minVersion,
                                         int maxVersion, std::string& error,
                                         unsigned long* errorCode = nullptr,
                                         time_t timeoutSeconds = 10) {
    auto conn = std::unique_ptr<RawTls>(new RawTls());
    conn->fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (conn->fd_ < 0) {
      error = "socket failed";
      return nullptr;
    }
    timeval tv{timeoutSeconds, 0};
    ::setsockopt(conn->fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(conn->fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(conn->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      error = "TCP connect failed";
      return nullptr;
    }
    conn->ctx_ = SSL_CTX_new(TLS_client_method());
    if (minVersion != 0 && minVersion < TLS1_2_VERSION) {
      // Let this client really offer old versions (Debian's default config refuses them).
      SSL_CTX_set_security_level(conn->ctx_, 0);
      SSL_CTX_set_cipher_list(conn->ctx_, "DEFAULT:@SECLEVEL=0");
    }
    if (minVersion != 0) SSL_CTX_set_min_proto_version(conn->ctx_, minVersion);
    if (maxVersion != 0) SSL_CTX_set_max_proto_version(conn->ctx_, maxVersion);
    SSL_CTX_load_verify_locations(conn->ctx_, caPath.c_str(), nullptr);
    SSL_CTX_set_verify(conn->ctx_, SSL_VERIFY_PEER, nullptr);
    conn->ssl_ = SSL_new(conn->ctx_);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(conn->ssl_), "127.0.0.1");
    SSL_set_fd(conn->ssl_, conn->fd_);
    ERR_clear_error();
    if (SSL_connect(conn->ssl_) != 1) {
      unsigned long e = ERR_peek_last_error();
      char buf[256] = "handshake failed without an OpenSSL error";
      if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
      error = buf;
      if (errorCode != nullptr) *errorCode = e;
      ERR_clear_error();
      return nullptr;
    }
    return conn;
  }

  int version() const { return SSL_version(ssl_); }

  bool write(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      int n = SSL_write(ssl_, data.data() + done, static_cast<int>(data.size() - done));
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  /// Reads whatever arrives until the peer closes or the socket times out.
  std::string readAll() {
    std::string out;
    char buf[4096];
    while (true) {
      int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  /// Reads one HTTP response (headers and a Content-Length body), or what arrives before the
  /// peer closes or the socket times out.
  std::string readResponse() {
    std::string out;
    char buf[4096];
    while (true) {
      const size_t headerEnd = out.find("\r\n\r\n");
      if (headerEnd != std::string::npos) {
        static const std::regex kLength(R"(\r\nContent-Length: *(\d+))", std::regex::icase);
        std::smatch m;
        const std::string head = out.substr(0, headerEnd);
        const size_t length = std::regex_search(head, m, kLength) ? std::stoul(m[1].str()) : 0;
        if (out.size() >= headerEnd + 4 + length) break;
      }
      int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  /// Sends close_notify (end of our data) but keeps reading.
  void shutdownWrite() {
    if (ssl_ != nullptr && (SSL_get_shutdown(ssl_) & SSL_SENT_SHUTDOWN) == 0) SSL_shutdown(ssl_);
  }

  /// Sends close_notify and closes the socket.
  void close() {
    if (ssl_ != nullptr) {
      // Only send close_notify; never wait for the peer's (a second SSL_shutdown would).
      if ((SSL_get_shutdown(ssl_) & SSL_SENT_SHUTDOWN) == 0) SSL_shutdown(ssl_);
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
    if (ctx_ != nullptr) {
      SSL_CTX_free(ctx_);
      ctx_ = nullptr;
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

 private:
  RawTls() = default;
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

}  // namespace stateguard::testing
