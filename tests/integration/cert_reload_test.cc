// The real webhook picks up a rotated serving certificate for new handshakes while a connection
// opened before the rotation keeps working, and ignores a half-written (mismatched) pair, an
// expired or a not-yet-valid one; an expired certificate at start-up is refused.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <stdexcept>
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

/// Writes to `outCert` a certificate for `keyPath`'s key (IP SAN 127.0.0.1), signed by the CA in
/// `caDir` (ca.crt, ca.key), valid from now + notBeforeOffset to now + notAfterOffset (seconds,
/// may be negative: the openssl CLI cannot make an expired certificate). Returns its serial (hex).
std::string writeCertificate(const std::string& caDir, const std::string& keyPath,
                             const std::string& outCert, long notBeforeOffset, long notAfterOffset,
                             long serial) {
  auto readPem = [](const std::string& path, auto reader) {
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) throw std::runtime_error("cannot open " + path);
    auto* got = reader(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    if (got == nullptr) throw std::runtime_error("cannot read PEM " + path);
    return got;
  };
  X509* ca = readPem(caDir + "/ca.crt", &PEM_read_X509);
  EVP_PKEY* caKey = readPem(caDir + "/ca.key", &PEM_read_PrivateKey);
  EVP_PKEY* key = readPem(keyPath, &PEM_read_PrivateKey);
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), notBeforeOffset);
  X509_gmtime_adj(X509_getm_notAfter(x), notAfterOffset);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_NAME_new();
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("stateguard-webhook"), -1, -1,
                             0);
  X509_set_subject_name(x, name);
  X509_NAME_free(name);
  X509_set_issuer_name(x, X509_get_subject_name(ca));
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, ca, x, nullptr, nullptr, 0);
  X509_EXTENSION* san =
      X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name, const_cast<char*>("IP:127.0.0.1"));
  X509_add_ext(x, san, -1);
  X509_EXTENSION_free(san);
  X509_sign(x, caKey, EVP_sha256());
  // Written next to the target and renamed over it: the reloader never sees half a file.
  const std::string tmp = outCert + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  PEM_write_X509(f, x);
  std::fclose(f);
  std::filesystem::rename(tmp, outCert);
  X509_free(x);
  X509_free(ca);
  EVP_PKEY_free(caKey);
  EVP_PKEY_free(key);
  char hex[32];
  std::snprintf(hex, sizeof hex, "%lX", serial);
  std::string out = hex;
  return out.size() % 2 == 1 ? "0" + out : out;  // whole bytes, as the server logs it
}

constexpr long kDay = 24 * 3600;

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

// Issue 13: an expired (or not yet valid) pair written over the files is refused, counted and
// logged with the file and its dates; the current pair keeps serving.
TEST(CertReload, ExpiredOrNotYetValidCertificateIsRefusedOnReload) {
  const std::string dir = makeTempDir("sg-certs");
  DevCerts certs = makeDevCerts(dir + "/tls");
  const std::string firstSerial = fileSerial(certs.tlsCert);
  WebhookProcess webhook(dir, certs, {"--cluster-state", sourcePath("examples/cluster-state.yaml")},
                         {"--cert-poll-ms", "50"});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
  const std::string metricsBefore = webhook.get("/metrics").second;
  EXPECT_NE(metricsBefore.find("\nstateguard_tls_certificate_expiry_seconds "), std::string::npos)
      << metricsBefore;

  // Expired an hour ago (same key, so only the dates are wrong).
  writeCertificate(certs.dir, certs.tlsKey, certs.tlsCert, -2 * kDay, -3600, 0x5E1);
  ASSERT_TRUE(webhook.process().waitForOutput("has expired", std::chrono::seconds(10)))
      << webhook.process().stderrText();
  EXPECT_NE(webhook.process().stderrText().find(certs.tlsCert), std::string::npos);
  EXPECT_EQ(webhook.process().stderrText().find("TLS certificate reloaded"), std::string::npos)
      << webhook.process().stderrText();
  {
    RawTlsConnection during(webhook.port(), certs.caCert);
    ASSERT_TRUE(during.connected()) << "the current pair must still serve";
    EXPECT_EQ(during.peerSerial(), firstSerial);
  }

  // Valid only from tomorrow.
  writeCertificate(certs.dir, certs.tlsKey, certs.tlsCert, kDay, 30 * kDay, 0x5E2);
  ASSERT_TRUE(webhook.process().waitForOutput("not valid before", std::chrono::seconds(10)))
      << webhook.process().stderrText();
  {
    RawTlsConnection during(webhook.port(), certs.caCert);
    ASSERT_TRUE(during.connected());
    EXPECT_EQ(during.peerSerial(), firstSerial);
  }
  const std::string metrics = webhook.get("/metrics").second;
  EXPECT_NE(metrics.find("stateguard_tls_certificate_reload_failures_total 2"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("stateguard_tls_certificate_reloads_total 0"), std::string::npos);

  // A valid pair is then taken, and the expiry gauge follows it.
  const std::string good =
      writeCertificate(certs.dir, certs.tlsKey, certs.tlsCert, -60, 20 * kDay, 0x5E3);
  ASSERT_TRUE(webhook.process().waitForOutput("serial " + good, std::chrono::seconds(10)))
      << webhook.process().stderrText();
  const std::string after = webhook.get("/metrics").second;
  const double expected = static_cast<double>(std::time(nullptr) + 20 * kDay);
  const size_t at = after.find("\nstateguard_tls_certificate_expiry_seconds ");
  ASSERT_NE(at, std::string::npos) << after;
  const double exported = std::stod(after.substr(at + 43));
  EXPECT_NEAR(exported, expected, 120.0);
  removeTree(dir);
}

// Issue 13: an expired certificate at start-up is a clear error (the apiserver could not call the
// webhook anyway); one that expires within 7 days is a warning.
TEST(CertReload, StartupRefusesAnExpiredCertificateAndWarnsWhenExpirySoon) {
  const std::string dir = makeTempDir("sg-certs");
  DevCerts certs = makeDevCerts(dir + "/tls");
  writeCertificate(certs.dir, certs.tlsKey, certs.tlsCert, -2 * kDay, -3600, 0x5E4);
  {
    ChildProcess proc(binaryPath("stateguard-webhook"),
                      {"--listen", "127.0.0.1:0", "--tls-cert", certs.tlsCert, "--tls-key",
                       certs.tlsKey, "--cluster-state", sourcePath("examples/cluster-state.yaml")},
                      dir);
    EXPECT_NE(proc.wait(std::chrono::seconds(20)), 0) << proc.stderrText();
    EXPECT_NE(proc.stderrText().find("has expired"), std::string::npos) << proc.stderrText();
    EXPECT_EQ(proc.stderrText().find("listening on"), std::string::npos) << proc.stderrText();
  }
  writeCertificate(certs.dir, certs.tlsKey, certs.tlsCert, -60, 3 * kDay - 3600, 0x5E5);
  WebhookProcess webhook(dir, certs,
                         {"--cluster-state", sourcePath("examples/cluster-state.yaml")});
  ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
  EXPECT_NE(webhook.process().stderrText().find("expires in 2 day"), std::string::npos)
      << webhook.process().stderrText();
  EXPECT_EQ(webhook.get("/healthz").first, 200);
  removeTree(dir);
}

}  // namespace
}  // namespace stateguard::testing
