#pragma once
// The gRPC proxy between kubelet and the CSI driver. Every call is forwarded to the driver as
// the bytes kubelet sent (unknown fields and methods this build has never heard of included),
// with kubelet's metadata and deadline, and the driver's answer, metadata and status come back
// unchanged. NodeStageVolume and NodePublishVolume pass through the Guard first.
//
// Not yet: streaming methods. CSI v1 has none; a future streaming method would be forwarded as
// its first request message only.

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>

#include "csi-sidecar/guard.h"
#include "csi-sidecar/sidecar_metrics.h"

namespace stateguard::csi {

class CsiProxy {
 public:
  /// `driverAddress` and the listen address are gRPC targets ("unix:///csi/csi.sock").
  CsiProxy(std::string driverAddress, Guard* guard, SidecarMetrics* metrics);
  ~CsiProxy();

  /// Listens on `address` (a stale socket file from an earlier run is removed first).
  Status start(const std::string& address);
  void shutdown();
  void wait();

  /// Asks the driver for its name and node capabilities (GetPluginInfo, NodeGetCapabilities);
  /// true once both answered. Called at start and again until it succeeds.
  bool learnDriver(std::chrono::milliseconds timeout);
  bool driverKnown() const { return driverKnown_; }
  /// Whether NodePublishVolume gets the full check (the driver has no STAGE_UNSTAGE_VOLUME, or
  /// its capabilities are not known yet).
  bool publishIsFirstUse() const { return !stageUnstageKnown_ || !hasStageUnstage_; }

  grpc::GenericStub& stub() { return *stub_; }
  Guard* guard() { return guard_; }
  SidecarMetrics* metrics() { return metrics_; }

 private:
  class Service;
  std::string driverAddress_;
  Guard* guard_;
  SidecarMetrics* metrics_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<bool> driverKnown_{false};
  std::atomic<bool> stageUnstageKnown_{false};
  std::atomic<bool> hasStageUnstage_{false};
};

}  // namespace stateguard::csi
