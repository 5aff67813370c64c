#pragma once
// The gRPC proxy between kubelet and the CSI driver. Every call is forwarded to the driver as
// the bytes kubelet sent (unknown fields and methods this build has never heard of included),
// with kubelet's metadata and deadline, and the driver's answer, metadata and status come back
// unchanged. NodeStageVolume and NodePublishVolume pass through the Guard first. Behind the
// HTTP/2 front (h2_front.h, the default) it listens on a private socket and sees only those two;
// with --forwarding grpc it serves kubelet directly and sees every call.
//
// One completion queue and one thread drive every call, server side and client side: a
// forwarded call costs two hand-offs between threads, not the callback API's six or more
// (`git show 3517577:bench/RESULTS.md`, "CSI proxy overhead"). Guarded calls probe devices, which
// blocks: they run on a small pool of worker threads.
//
// Not yet: streaming methods. CSI v1 has none; a future streaming method would be forwarded as
// its first request message only.

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "csi-sidecar/guard.h"
#include "csi-sidecar/guarded_methods.h"
#include "csi-sidecar/sidecar_metrics.h"

namespace stateguard::csi {

struct ProxyOptions {
  /// Largest request accepted from kubelet (--max-receive-message-size); a larger one is
  /// answered RESOURCE_EXHAUSTED by gRPC before anything is buffered or parsed. gRPC's default;
  /// CSI messages are a few KiB.
  int maxReceiveMessageBytes = 4 * 1024 * 1024;
  /// Longest wait between two attempts to reach a driver that went away. gRPC's default grows
  /// to 120 s, so calls kept failing for seconds after the driver was back (issue 14); a unix
  /// socket connect costs microseconds.
  std::chrono::milliseconds maxReconnectBackoff{1000};
};

class CsiProxy {
 public:
  /// `driverAddress` and the listen address are gRPC targets ("unix:///csi/csi.sock").
  CsiProxy(std::string driverAddress, Guard* guard, SidecarMetrics* metrics,
           ProxyOptions options = {});
  ~CsiProxy();

  /// Listens on `address` (a stale socket file from an earlier run is removed first) and starts
  /// the completion-queue thread and the guard workers.
  Status start(const std::string& address);
  /// Stops serving: in-flight calls get up to 5 s, then everything is joined. Idempotent.
  void shutdown();
  /// Blocks until shutdown() has completed.
  void wait();

  /// Asks the driver for its name and node capabilities (GetPluginInfo, NodeGetCapabilities);
  /// true once both answered. Called at start and again until it succeeds.
  bool learnDriver(std::chrono::milliseconds timeout);
  bool driverKnown() const { return driverKnown_; }
  /// Asks the driver's Identity Probe; "" when it answered ready, else why not (for /readyz).
  std::string probeDriver(std::chrono::milliseconds timeout);
  /// Whether NodePublishVolume gets the full check (the driver has no STAGE_UNSTAGE_VOLUME, or
  /// its capabilities are not known yet).
  bool publishIsFirstUse() const { return !stageUnstageKnown_ || !hasStageUnstage_; }

 private:
  friend class ProxyCall;
  void runQueue();
  void runWorker();
  /// Runs `job` on a guard worker (guarded calls block on device reads).
  void submit(std::function<void()> job);

  /// NodeUnstageVolume / NodeUnpublishVolume to the driver after a quarantine ("" when OK).
  std::string undo(const GuardCall& call);

  std::string driverAddress_;
  ProxyOptions options_;
  Guard* guard_;
  SidecarMetrics* metrics_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
  grpc::AsyncGenericService service_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::unique_ptr<grpc::Server> server_;
  std::thread queueThread_;
  std::vector<std::thread> workers_;

  std::mutex jobsMu_;
  std::condition_variable jobsCv_;
  std::deque<std::function<void()>> jobs_;
  bool stopWorkers_ = false;

  std::mutex lifecycleMu_;
  std::condition_variable lifecycleCv_;
  bool started_ = false;
  bool stopped_ = false;

  std::atomic<bool> driverKnown_{false};
  std::atomic<bool> stageUnstageKnown_{false};
  std::atomic<bool> hasStageUnstage_{false};
};

}  // namespace stateguard::csi
