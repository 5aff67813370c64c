#pragma once
// --http-endpoint: /healthz, /readyz and /metrics of stateguard-csi, plain HTTP (the conventions
// of the other CSI sidecars; bind it to 127.0.0.1 or the pod IP). /healthz says only that the
// sidecar itself serves (a liveness probe must not restart it because the driver is down);
// /readyz also needs the driver to have answered and the PV cache to have synced.

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "core/result.h"
#include "csi-sidecar/sidecar_metrics.h"

namespace httplib {
class Server;
}

namespace stateguard::csi {

class SidecarHttp {
 public:
  /// `ready` answers /readyz: "" when ready, else the reason (served with 503).
  SidecarHttp(SidecarMetrics* metrics, std::function<std::string()> ready);
  ~SidecarHttp();
  /// Binds HOST:PORT (port 0: any free port, see port()) and serves from a thread.
  Status start(const std::string& hostPort);
  void stop();
  int port() const { return port_; }

 private:
  SidecarMetrics* metrics_;
  std::function<std::string()> ready_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace stateguard::csi
