#pragma once
// /metrics of stateguard-csi: the CSI sidecar convention
// csi_sidecar_operations_seconds{driver_name,method_name,grpc_status_code} plus refusals and
// quarantines by reason, and the volumes this node's ledger holds quarantined (read at each
// scrape, so a quarantine cleared with stateguardctl disappears at the next one).

#include <array>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "csi-sidecar/ledger.h"

namespace stateguard::csi {

class SidecarMetrics {
 public:
  static constexpr std::array<double, 13> kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0};
  void observe(const std::string& driver, const std::string& method, int grpcCode, double seconds);
  void countRefusal(const std::string& reason);
  void countQuarantine(const std::string& reason);
  /// stateguard_csi_guard_info{driver,node} 1: this node's driver is guarded (set once the
  /// driver's name is known), for alerts comparing guarded nodes with the driver's nodes.
  void setGuardInfo(const std::string& driver, const std::string& node);
  /// stateguard_build_info{version,component="stateguard-csi"} 1, once the version is set.
  void setBuildInfo(const std::string& version);
  /// The node's ledger, listed at each render() for stateguard_csi_quarantined_volumes,
  /// stateguard_csi_volume_quarantined{volume_id,pv} and stateguard_csi_ledger_read_errors
  /// (none of them rendered without it). It must outlive this object.
  void setLedger(const Ledger* ledger);
  std::string render() const;

 private:
  struct Histogram {
    std::array<uint64_t, kBuckets.size()> buckets{};
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, Histogram> ops_;
  std::map<std::string, uint64_t> refusals_;
  std::map<std::string, uint64_t> quarantines_;
  std::string guardDriver_, guardNode_;
  std::string version_;
  const Ledger* ledger_ = nullptr;
};

/// gRPC status code as grpc-go spells it ("OK", "FailedPrecondition", ...), as the other CSI
/// sidecars label their metrics.
const char* grpcCodeName(int code);

}  // namespace stateguard::csi
