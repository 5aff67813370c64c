#include "core/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <cstdio>
#include <ctime>
#include <limits>
#include <vector>

#include "core/file_watch.h"
#include "core/log.h"

namespace stateguard {

struct CertifiedKey {
  X509* leaf = nullptr;
  STACK_OF(X509) * chain = nullptr;  // intermediates after the leaf
  EVP_PKEY* key = nullptr;
  int64_t notBefore = 0, notAfter = 0;  // Unix times of the leaf's validity period
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

/// An ASN.1 time as Unix time (0 if it cannot be read).
int64_t unixTime(const ASN1_TIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

std::string rfc3339(int64_t unix) {
  std::time_t t = static_cast<std::time_t>(unix);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// Certificates that expire sooner than this are warned about.
constexpr int64_t kExpiryWarning = 7 * 24 * 3600;

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
  pair->notBefore = unixTime(X509_get0_notBefore(pair->leaf));
  pair->notAfter = unixTime(X509_get0_notAfter(pair->leaf));
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

/// Why a clock-valid pair cannot be served ("" if it can): the apiserver refuses an expired or a
/// not-yet-valid serving certificate, so every call to the webhook would fail.
std::string validityProblem(const CertifiedKey& pair, const std::string& certPath, int64_t now) {
  const std::string what = "TLS certificate " + certPath + " (serial " + serialOf(pair) + ")";
  if (now >= pair.notAfter) {
    return what + " has expired: notAfter " + rfc3339(pair.notAfter) + " (notBefore " +
           rfc3339(pair.notBefore) + ")";
  }
  if (now < pair.notBefore) {
    return what + " is not valid before " + rfc3339(pair.notBefore) + " yet (notAfter " +
           rfc3339(pair.notAfter) + "; is the clock right?)";
  }
  return "";
}

void warnIfExpiringSoon(const CertifiedKey& pair, const std::string& certPath, int64_t now) {
  if (pair.notAfter - now >= kExpiryWarning) return;
  log::warn("TLS certificate " + certPath + " (serial " + serialOf(pair) + ") expires in " +
            std::to_string((pair.notAfter - now) / (24 * 3600)) + " day(s), at " +
            rfc3339(pair.notAfter) + ": renew it before the apiserver refuses it");
}

int64_t unixNow() { return static_cast<int64_t>(std::time(nullptr)); }

}  // namespace

Result<std::unique_ptr<CertificateReloader>> CertificateReloader::create(
    std::string certPath, std::string keyPath, std::chrono::milliseconds interval) {
  std::unique_ptr<CertificateReloader> r(
      new CertificateReloader(std::move(certPath), std::move(keyPath)));
  r->fingerprint_ = fileFingerprint(r->certPath_) + "|" + fileFingerprint(r->keyPath_);
  auto pair = loadPair(r->certPath_, r->keyPath_);
  if (!pair.ok()) return makeError(pair.error());
  // Refused at start-up: the apiserver could not call a webhook serving it, and a Pod that fails
  // to start says so where an operator looks (CrashLoopBackOff) instead of failing every review.
  if (std::string problem = validityProblem(*pair.value(), r->certPath_, unixNow());
      !problem.empty()) {
    return makeError(problem + "; refusing to start with it");
  }
  warnIfExpiringSoon(*pair.value(), r->certPath_, unixNow());
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

int64_t CertificateReloader::notAfter() const { return current()->notAfter; }

bool CertificateReloader::checkForChange() {
  std::string seen = fileFingerprint(certPath_) + "|" + fileFingerprint(keyPath_);
  if (seen == fingerprint_) return false;
  const int64_t now = unixNow();
  if (seen == rejected_ && now < retryAt_) return false;  // refused already, said so once
  // cert-manager and kubelet swap both files at once; a half-rotated pair fails the key check
  // below and is retried on the next poll, because the fingerprint is only kept on success.
  auto pair = loadPair(certPath_, keyPath_);
  if (!pair.ok()) {
    failures_.fetch_add(1);
    log::error("TLS certificate files changed but cannot be used yet, keeping the current one: " +
               pair.error());
    return false;
  }
  if (std::string problem = validityProblem(*pair.value(), certPath_, now); !problem.empty()) {
    failures_.fetch_add(1);
    rejected_ = seen;
    // A certificate that is not valid yet is taken once it is; an expired one never is.
    retryAt_ = now < pair.value()->notBefore ? pair.value()->notBefore
                                             : std::numeric_limits<int64_t>::max();
    log::error(
        "TLS certificate files changed but the new certificate cannot be served, keeping "
        "the current one (serial " +
        currentSerial() + ", notAfter " + rfc3339(notAfter()) + "): " + problem);
    return false;
  }
  warnIfExpiringSoon(*pair.value(), certPath_, now);
  rejected_.clear();
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
