#pragma once
// The HTTP/2 front of stateguard-csi: what kubelet connects to. Calls the guard does not judge
// are forwarded to the driver frame by frame (headers with all metadata and grpc-timeout, DATA,
// trailers, RST_STREAM, both ways) without a gRPC server or client in between; the guarded
// methods (isGuardedMethod) go to the CsiProxy, a grpc++ server on a private socket, which keeps
// argument checks, receive limit, guard, undo, audit and metrics as they were.
//
// Why: grpc++'s server plus client machinery for a call that is only relayed cost 230-295 µs
// added latency and ~155 µs CPU per call (bench/RESULTS.md, "stateguard-csi against real CSI
// drivers"): six recvmsg, four sendmsg and thread hand-offs per call. Here one thread per kubelet
// connection polls its kubelet, driver and (lazily) proxy sockets, and nghttp2 does HPACK, framing
// and flow control; a forwarded call costs one read and one write on each side.
//
// Memory stays bounded by HTTP/2 flow control: bytes read from one side are acknowledged
// (WINDOW_UPDATE) only once the other side took them, so at most the receive windows are held per
// connection; connections and concurrent streams are capped.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "core/result.h"
#include "csi-sidecar/sidecar_metrics.h"

namespace stateguard::csi {

struct FrontOptions {
  /// The CSI driver's socket (a path, not a gRPC target).
  std::string driverPath;
  /// The CsiProxy's private socket, where guarded calls go.
  std::string guardPath;
  /// kubelet opens one connection per driver; more than a handful is a misbehaving client.
  size_t maxConnections = 64;
  /// SETTINGS_MAX_CONCURRENT_STREAMS advertised to each client.
  uint32_t maxConcurrentStreams = 100;
  /// Receive window per stream and per connection, on each side: the most bytes held for one
  /// connection in each direction. CSI messages are a few KiB.
  int32_t windowBytes = 256 * 1024;
  /// Request headers (metadata) accepted per stream; a larger block resets the stream.
  size_t maxHeaderBytes = 64 * 1024;
  /// On shutdown, in-flight calls get this long.
  std::chrono::milliseconds drain{5000};
  /// The driver's name for the metrics' driver_name label (learnt after start).
  std::function<std::string()> driverName;
};

/// Accepts kubelet's connections and runs one forwarding thread per connection.
class H2Front {
 public:
  /// `metrics` may be null (no metrics); it must outlive this object.
  H2Front(FrontOptions options, SidecarMetrics* metrics);
  ~H2Front();

  /// Listens on `path` (a stale socket file from an earlier run is removed first).
  Status start(const std::string& path);
  /// Stops accepting; connections send GOAWAY and their calls get up to options.drain; returns
  /// once every connection thread has ended. Idempotent.
  void shutdown();
  /// Serves one client connection on the calling thread until it ends; takes `fd` (connected,
  /// non-blocking). The accept loop runs each connection this way; the fuzz target feeds it.
  void serve(int fd);

  const FrontOptions& options() const { return options_; }
  SidecarMetrics* metrics() const { return metrics_; }
  int stopFd() const { return stopFd_; }
  bool stopping() const { return stopping_; }

 private:
  void acceptLoop();

  FrontOptions options_;
  SidecarMetrics* metrics_;
  int listenFd_ = -1;
  /// eventfd, readable once shutdown() began: wakes the acceptor and every connection.
  int stopFd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t connections_ = 0;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace stateguard::csi
