#pragma once
// The real stateguard-webhook binary started for a test, with certificates from the project's
// own certs/gen-certs.sh, and a TLS client that verifies it.

#include <httplib.h>

#include <memory>
#include <string>
#include <vector>

#include "core/json_yaml.h"
#include "tests/support/process.h"
#include "tests/support/tls_material.h"

namespace stateguard::testing {

/// A CA + serving certificate made by certs/gen-certs.sh in a temp dir.
struct DevCerts {
  std::string dir, caCert, tlsCert, tlsKey;
};
/// Runs certs/gen-certs.sh into `dir`; throws std::runtime_error on failure.
DevCerts makeDevCerts(const std::string& dir);

/// A running stateguard-webhook on 127.0.0.1:<random port>.
class WebhookProcess {
 public:
  /// `sourceArgs` e.g. {"--cluster-state", path}; audit log goes to dir/audit.log. `binary`
  /// runs another build of the webhook (benchmarks against a baseline); "" is this build's.
  WebhookProcess(const std::string& dir, const DevCerts& certs, std::vector<std::string> sourceArgs,
                 std::vector<std::string> extraArgs = {}, const std::string& binary = "");
  ~WebhookProcess();

  bool started() const { return port_ > 0; }
  int port() const { return port_; }
  ChildProcess& process() { return *process_; }
  std::string auditLogPath() const { return auditPath_; }
  /// Audit log lines parsed as JSON.
  std::vector<json> auditRecords() const;

  /// A client that verifies the server against the test CA.
  std::unique_ptr<httplib::SSLClient> client() const;
  /// POST /validate; returns {status, body} (status -1 when the request failed).
  std::pair<int, std::string> post(const std::string& body) const;
  std::pair<int, std::string> get(const std::string& path) const;

 private:
  DevCerts certs_;
  std::string auditPath_;
  std::unique_ptr<ChildProcess> process_;
  int port_ = -1;
};

/// The webhook on examples/cluster-state.yaml with a TlsMaterial's CA and serving certificate
/// (tests that also sign client certificates with that CA), audit log in dir/audit.log.
std::unique_ptr<WebhookProcess> startOnExampleState(const std::string& dir, const TlsMaterial& tls,
                                                    std::vector<std::string> extraArgs = {});

}  // namespace stateguard::testing
