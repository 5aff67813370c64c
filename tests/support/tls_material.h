#pragma once
// TLS material generated at test time with the openssl CLI (no private keys in git): a CA, a
// server certificate for the given hosts, and client certificates.

#include <string>
#include <vector>

#include "core/result.h"

namespace stateguard::testing {

/// A throwaway CA and a server certificate it signed, as files and PEM text.
struct TlsMaterial {
  std::string dir;             ///< where the files are
  std::string caCertPath;      ///< ca.crt
  std::string caKeyPath;       ///< ca.key
  std::string serverCertPath;  ///< server.crt (subjectAltName: every host given)
  std::string serverKeyPath;   ///< server.key
  std::string caPem;           ///< content of ca.crt
  std::string serverCertPem;
  std::string serverKeyPem;
};

/// A client certificate (extendedKeyUsage clientAuth) signed by a TlsMaterial's CA.
struct ClientCertificate {
  std::string certPath;
  std::string keyPath;
  std::string certPem;
  std::string keyPem;
};

/// Generates a CA and a server certificate for `hosts` (IP addresses become IP SANs, other names
/// DNS SANs) into `dir` (created if missing). ECDSA P-256 keys; valid for 2 days.
Result<TlsMaterial> makeTlsMaterial(const std::string& dir,
                                    const std::vector<std::string>& hosts = {"127.0.0.1",
                                                                             "localhost"});

/// Generates `<name>.crt` / `<name>.key` in tls.dir for a client with the given common name
/// (Kubernetes reads the user name from CN and groups from O).
Result<ClientCertificate> makeClientCertificate(const TlsMaterial& tls, const std::string& name,
                                                const std::string& commonName,
                                                const std::string& organization = "");

}  // namespace stateguard::testing
