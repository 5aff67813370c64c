#include "core/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <cstdio>
#include <vector>

#include "core/file_watch.h"
#include "core/log.h"

namespace stateguard {

struct CertifiedKey {
  X509* leaf = nullptr;
  STACK_OF(X509) * chain = nullptr;  // intermediates after the leaf
  EVP_PKEY* key = nullptr;
  ~CertifiedKey() {
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
  }
};

namespace {

std::string opensslError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "no details from OpenSSL";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

Result<CertifiedKeyPtr> loadPair(const std::string& certPath, const std::string& keyPath) {
  auto pair = std::make_shared<CertifiedKey>();
  std::FILE* cf = std::fopen(certPath.c_str(), "r");
  if (cf == nullptr) return makeError("cannot open TLS certificate " + certPath);
  pair->leaf = PEM_read_X509(cf, nullptr, nullptr, nullptr);
  if (pair->leaf == nullptr) {
    std::fclose(cf);
    return makeError("TLS certificate " + certPath +
                     " holds no PEM certificate: " + opensslError());
  }
  pair->chain = sk_X509_new_null();
  while (X509* extra = PEM_read_X509(cf, nullptr, nullptr, nullptr))
    sk_X509_push(pair->chain, extra);
  ERR_clear_error();  // the loop ends on "no start line"
  std::fclose(cf);

  std::FILE* kf = std::fopen(keyPath.c_str(), "r");
  if (kf == nullptr) return makeError("cannot open TLS key " + keyPath);
  pair->key = PEM_read_PrivateKey(kf, nullptr, nullptr, nullptr);
  std::fclose(kf);
  if (pair->key == nullptr) {
    return makeError("TLS key " + keyPath + " holds no PEM private key: " + opensslError());
  }
  if (X509_check_private_key(pair->leaf, pair->key) != 1) {
    ERR_clear_error();
    return makeError("TLS key " + keyPath + " does not match certificate " + certPath);
  }
  return CertifiedKeyPtr(pair);
}

std::string serialOf(const CertifiedKey& pair) {
  const ASN1_INTEGER* serial = X509_get0_serialNumber(pair.leaf);
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  char* hex = BN_bn2hex(bn);
  std::string out = hex;
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

}  // namespace

Result<std::unique_ptr<CertificateReloader>> CertificateReloader::create(
    std::string certPath, std::string keyPath, std::chrono::milliseconds interval) {
  std::unique_ptr<CertificateReloader> r(
      new CertificateReloader(std::move(certPath), std::move(keyPath)));
  r->fingerprint_ = fileFingerprint(r->certPath_) + "|" + fileFingerprint(r->keyPath_);
  auto pair = loadPair(r->certPath_, r->keyPath_);
  if (!pair.ok()) return makeError(pair.error());
  r->current_ = pair.value();
  CertificateReloader* self = r.get();
  r->poller_ = std::make_unique<Poller>(interval, [self] { self->checkForChange(); });
  return r;
}

CertificateReloader::~CertificateReloader() = default;

CertifiedKeyPtr CertificateReloader::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

std::string CertificateReloader::currentSerial() const { return serialOf(*current()); }

bool CertificateReloader::checkForChange() {
  std::string seen = fileFingerprint(certPath_) + "|" + fileFingerprint(keyPath_);
  if (seen == fingerprint_) return false;
  // cert-manager and kubelet swap both files at once; a half-rotated pair fails the key check
  // below and is retried on the next poll, because the fingerprint is only kept on success.
  auto pair = loadPair(certPath_, keyPath_);
  if (!pair.ok()) {
    failures_.fetch_add(1);
    log::error("TLS certificate files changed but cannot be used yet, keeping the current one: " +
               pair.error());
    return false;
  }
  fingerprint_ = seen;
  {
    std::lock_guard lock(mu_);
    current_ = pair.value();
  }
  reloads_.fetch_add(1);
  log::info("TLS certificate reloaded from " + certPath_ + " (serial " + serialOf(*pair.value()) +
            "); open connections keep their session");
  return true;
}

int CertificateReloader::onHandshake(SSL* ssl, void* arg) {
  auto* self = static_cast<CertificateReloader*>(arg);
  CertifiedKeyPtr pair = self->current();
  if (SSL_use_certificate(ssl, pair->leaf) != 1 || SSL_use_PrivateKey(ssl, pair->key) != 1 ||
      SSL_set1_chain(ssl, pair->chain) != 1) {
    return 0;  // aborts this handshake only
  }
  return 1;
}

void CertificateReloader::install(SSL_CTX* ctx) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_cert_cb(ctx, &CertificateReloader::onHandshake, this);
}

}  // namespace stateguard
