#pragma once
// Serving certificates that follow their files: the pair is re-read when the files change
// (cert-manager rotation, a Secret volume update) and used for every new TLS handshake, while
// connections already open keep going.

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
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
  /// Loads the pair now (error if unreadable or mismatched), then polls every `interval`.
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

 private:
  CertificateReloader(std::string certPath, std::string keyPath)
      : certPath_(std::move(certPath)), keyPath_(std::move(keyPath)) {}
  static int onHandshake(SSL* ssl, void* self);
  CertifiedKeyPtr current() const;

  std::string certPath_, keyPath_;
  mutable std::mutex mu_;
  CertifiedKeyPtr current_;
  std::string fingerprint_;
  std::atomic<uint64_t> reloads_{0}, failures_{0};
  std::unique_ptr<Poller> poller_;  // last member: stops before the rest goes
};

}  // namespace stateguard
