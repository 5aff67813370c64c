#include "tests/support/webhook_process.h"

#include <regex>
#include <sstream>
#include <stdexcept>

namespace stateguard::testing {

DevCerts makeDevCerts(const std::string& dir) {
  auto r = runCommand("/bin/bash", {sourcePath("certs/gen-certs.sh"), "--out", dir, "--service",
                                    "stateguard-webhook", "--namespace", "stateguard-system"});
  if (r.exitCode != 0) throw std::runtime_error("certs/gen-certs.sh failed: " + r.err);
  return DevCerts{dir, dir + "/ca.crt", dir + "/tls.crt", dir + "/tls.key"};
}

WebhookProcess::WebhookProcess(const std::string& dir, const DevCerts& certs,
                               std::vector<std::string> sourceArgs,
                               std::vector<std::string> extraArgs, const std::string& binary)
    : certs_(certs), auditPath_(dir + "/audit.log") {
  // Audit lines written before each answer: the tests read the log right after a response.
  // extraArgs may name another --audit-log (and --audit-mode).
  for (size_t i = 0; i + 1 < extraArgs.size(); ++i) {
    if (extraArgs[i] == "--audit-log") {
      auditPath_ = extraArgs[i + 1];
      extraArgs.erase(extraArgs.begin() + static_cast<long>(i),
                      extraArgs.begin() + static_cast<long>(i) + 2);
      break;
    }
  }
  std::vector<std::string> args = {
      "--listen",   "127.0.0.1:0", "--tls-cert", certs.tlsCert,      "--tls-key",
      certs.tlsKey, "--audit-log", auditPath_,   "--audit-flush-ms", "0"};
  args.insert(args.end(), sourceArgs.begin(), sourceArgs.end());
  args.insert(args.end(), extraArgs.begin(), extraArgs.end());
  process_ = std::make_unique<ChildProcess>(
      binary.empty() ? binaryPath("stateguard-webhook") : binary, args, dir);
  if (!process_->waitForOutput("listening on https://", std::chrono::seconds(20))) return;
  static const std::regex re(R"(listening on https://127\.0\.0\.1:(\d+))");
  std::smatch m;
  std::string err = process_->stderrText();
  if (std::regex_search(err, m, re)) port_ = std::stoi(m[1]);
}

WebhookProcess::~WebhookProcess() {
  if (process_) process_->stop();
}

std::vector<json> WebhookProcess::auditRecords() const {
  std::vector<json> out;
  std::istringstream in(readText(auditPath_));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

std::unique_ptr<httplib::SSLClient> WebhookProcess::client() const {
  auto c = std::make_unique<httplib::SSLClient>("127.0.0.1", port_);
  c->set_ca_cert_path(certs_.caCert.c_str());
  c->enable_server_certificate_verification(true);
  c->set_connection_timeout(5);
  c->set_read_timeout(10);
  c->set_keep_alive(true);
  return c;
}

std::pair<int, std::string> WebhookProcess::post(const std::string& body) const {
  auto c = client();
  auto res = c->Post("/validate", body, "application/json");
  if (!res) return {-1, httplib::to_string(res.error())};
  return {res->status, res->body};
}

std::pair<int, std::string> WebhookProcess::get(const std::string& path) const {
  auto c = client();
  auto res = c->Get(path.c_str());
  if (!res) return {-1, httplib::to_string(res.error())};
  return {res->status, res->body};
}

std::unique_ptr<WebhookProcess> startOnExampleState(const std::string& dir, const TlsMaterial& tls,
                                                    std::vector<std::string> extraArgs) {
  return std::make_unique<WebhookProcess>(
      dir, DevCerts{dir, tls.caCertPath, tls.serverCertPath, tls.serverKeyPath},
      std::vector<std::string>{"--cluster-state", sourcePath("examples/cluster-state.yaml")},
      std::move(extraArgs));
}

}  // namespace stateguard::testing
