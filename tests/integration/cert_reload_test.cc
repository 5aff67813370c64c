// The real webhook picks up a rotated serving certificate for new handshakes while a connection
// opened before the rotation keeps working, and ignores a half-written (mismatched) pair.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "tests/support/webhook_process.h"

namespace stateguard::testing {
namespace {

/// One raw TLS connection that sends keep-alive HTTP/1.1 requests (so the test sees the socket).
class RawTlsConnection {
 public:
  RawTlsConnection(int port, const std::string& caFile) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx_, caFile.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return;
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    SSL_set1_host(ssl_, "127.0.0.1");
    connected_ = SSL_connect(ssl_) == 1;
  }
  ~RawTlsConnection() {
    if (ssl_) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
    SSL_CTX_free(ctx_);
  }
  bool connected() const { return connected_; }

  std::string peerSerial() const {
    X509* cert = SSL_get1_peer_certificate(ssl_);
    if (!cert) return "";
    BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
    char* hex = BN_bn2hex(bn);
    std::string out = hex;
    OPENSSL_free(hex);
    BN_free(bn);
    X509_free(cert);
    return out;
  }

  /// GET /healthz on this connection; returns the status line ("" if the connection is gone).
  std::string healthz() {
    const std::string req =
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n";
    if (SSL_write(ssl_, req.data(), static_cast<int>(req.size())) <= 0) return "";
    std::string got;
    char buf[4096];
    while (got.find("\r\n\r\nok\n") == std::string::npos) {
      int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) return "";
      got.append(buf, static_cast<size_t>(n));
    }
    return got.substr(0, got.find("\r\n"));
  }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool connected_ = false;
};

std::string fileSerial(const std::string& certPath) {
  auto r = runCommand("/usr/bin/openssl", {"x509", "-in", certPath, "-noout", "-serial"});
  std::string s = r.out.substr(r.out.find('=') + 1);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

TEST(CertReload, NewHandshakesGetTheNewCertificateOpenConnectionsStay) {
  const std::string dir = makeTempDir("sg-certs");
  DevCerts certs = makeDevCerts(dir + "/tls");
  const std::string firstSerial = fileSerial(certs.tlsCert);
  WebhookProcess webhook(dir, certs, {"--cluster-state", sourcePath("examples/cluster-state.yaml")},
                         {"--cert-poll-ms", "50"});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();

  RawTlsConnection before(webhook.port(), certs.caCert);
  ASSERT_TRUE(before.connected());
  EXPECT_EQ(before.peerSerial(), firstSerial);
  EXPECT_EQ(before.healthz(), "HTTP/1.1 200 OK");

  // A half-rotated pair (new certificate, old key) is refused and the current pair stays.
  const std::string stage = dir + "/stage";
  makeDevCerts(stage);  // new CA: its key cannot match the served certificate's files
  std::filesystem::copy_file(stage + "/tls.crt", certs.tlsCert,
                             std::filesystem::copy_options::overwrite_existing);
  ASSERT_TRUE(webhook.process().waitForOutput("cannot be used yet", std::chrono::seconds(10)))
      << webhook.process().stderrText();
  {
    RawTlsConnection during(webhook.port(), certs.caCert);
    ASSERT_TRUE(during.connected()) << "the old pair must still serve";
    EXPECT_EQ(during.peerSerial(), firstSerial);
  }

  // Rotation completes: the original CA issues a new serving pair (key first, then certificate).
  makeDevCerts(certs.dir);
  const std::string secondSerial = fileSerial(certs.tlsCert);
  ASSERT_NE(secondSerial, firstSerial);
  ASSERT_TRUE(webhook.process().waitForOutput("serial " + secondSerial, std::chrono::seconds(10)))
      << webhook.process().stderrText();

  RawTlsConnection after(webhook.port(), certs.caCert);
  ASSERT_TRUE(after.connected());
  EXPECT_EQ(after.peerSerial(), secondSerial);
  EXPECT_EQ(after.healthz(), "HTTP/1.1 200 OK");

  // The connection opened before the rotation is still served.
  EXPECT_EQ(before.healthz(), "HTTP/1.1 200 OK");
  EXPECT_EQ(before.peerSerial(), firstSerial);
  EXPECT_NE(webhook.get("/metrics").second.find("stateguard_tls_certificate_reloads_total 1"),
            std::string::npos);
  removeTree(dir);
}

}  // namespace
}  // namespace stateguard::testing
