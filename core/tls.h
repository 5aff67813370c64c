#pragma once
// Serving certificates that follow their files: the pair is re-read when the files change
// (cert-manager rotation, a Secret volume update) and used for every new TLS handshake, while
// connections already open keep going.

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/file_watch.h"
#include "core/result.h"

namespace stateguard {

/// A certificate chain and its key, loaded and checked together.
struct CertifiedKey;
using CertifiedKeyPtr = std::shared_ptr<const CertifiedKey>;

/// Loads cert/key files for TLS servers and reloads them when they change.
class CertificateReloader {
 public:
  /// Loads the pair now (error if unreadable, mismatched, expired or not yet valid; a warning if
  /// it expires within 7 days), then polls every `interval`. A changed pair that is expired or
  /// not yet valid is refused (counted in failures(), logged once) and the current one kept.
  static Result<std::unique_ptr<CertificateReloader>> create(
      std::string certPath, std::string keyPath,
      std::chrono::milliseconds interval = std::chrono::milliseconds(1000));
  ~CertificateReloader();
  CertificateReloader(const CertificateReloader&) = delete;
  CertificateReloader& operator=(const CertificateReloader&) = delete;

  /// Installs the reloader on a server context: TLS 1.2 minimum and a per-handshake certificate.
  void install(SSL_CTX* ctx);
  /// Checks the files once; true when a new pair was installed.
  bool checkForChange();
  uint64_t reloads() const { return reloads_.load(); }
  uint64_t failures() const { return failures_.load(); }
  /// Serial number (hex) of the certificate in use, for logs and tests.
  std::string currentSerial() const;
  /// Unix time at which the certificate in use expires (its notAfter).
  int64_t notAfter() const;

 private:
  CertificateReloader(std::string certPath, std::string keyPath)
      : certPath_(std::move(certPath)), keyPath_(std::move(keyPath)) {}
  static int onHandshake(SSL* ssl, void* self);
  CertifiedKeyPtr current() const;

  std::string certPath_, keyPath_;
  mutable std::mutex mu_;
  CertifiedKeyPtr current_;
  std::string fingerprint_;
  std::string rejected_;  // fingerprint of files refused for their validity period
  int64_t retryAt_ = 0;   // when to look at the refused files again (not-yet-valid only)
  std::atomic<uint64_t> reloads_{0}, failures_{0};
  std::unique_ptr<Poller> poller_;  // last member: stops before the rest goes
};

}  // namespace stateguard
