#include "csi-sidecar/sidecar_http.h"

#include <httplib.h>

namespace stateguard::csi {

SidecarHttp::SidecarHttp(SidecarMetrics* metrics, std::function<std::string()> ready)
    : metrics_(metrics), ready_(std::move(ready)) {}

SidecarHttp::~SidecarHttp() { stop(); }

Status SidecarHttp::start(const std::string& hostPort) {
  size_t colon = hostPort.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return makeError("--http-endpoint " + hostPort + ": expected HOST:PORT");
  }
  std::string host = hostPort.substr(0, colon);
  int port = 0;
  try {
    size_t used = 0;
    port = std::stoi(hostPort.substr(colon + 1), &used);
    if (used != hostPort.size() - colon - 1 || port < 0 || port > 65535)
      throw std::out_of_range("");
  } catch (const std::exception&) {
    return makeError("--http-endpoint " + hostPort + ": the port must be a number 0-65535");
  }
  server_ = std::make_unique<httplib::Server>();
  server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  server_->Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    std::string problem = ready_();
    res.status = problem.empty() ? 200 : 503;
    res.set_content(problem.empty() ? "ok\n" : problem + "\n", "text/plain");
  });
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_->render(), "text/plain; version=0.0.4");
  });
  if (port == 0) {
    port_ = server_->bind_to_any_port(host);
  } else {
    port_ = server_->bind_to_port(host, port) ? port : -1;
  }
  if (port_ <= 0) return makeError("--http-endpoint " + hostPort + ": cannot bind");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return Ok{};
}

void SidecarHttp::stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace stateguard::csi
