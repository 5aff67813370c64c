#pragma once
// The unguarded check: every configured CSI driver's node DaemonSet, and each of its Pods, read
// from the cluster state (the watch cache), must carry stateguard-csi. One that does not (created
// while the injector was down, a target that cannot take the guard, Pods not yet replaced) is
// reported as the metric stateguard_csi_unguarded and a Warning Event on the DaemonSet.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/cluster_state.h"
#include "core/events.h"
#include "webhook/csi_inject.h"

namespace stateguard {

/// The kind the check lists (apps/v1 DaemonSets): added to the watch cache with --csi-guard.
ResourceKind daemonSetKind();

/// What the check found about one targeted DaemonSet.
struct CsiGuardFinding {
  std::string driver;  ///< the target's name in csi-guard.yaml
  std::string ns, daemonSet;
  std::vector<std::string> templateGaps;   ///< what the pod template lacks (empty: guarded)
  size_t pods = 0;                         ///< Pods of the DaemonSet in the cache
  std::vector<std::string> unguardedPods;  ///< names of Pods without stateguard-csi
  bool unguarded() const { return !templateGaps.empty() || !unguardedPods.empty(); }
  /// One line for a person: what is unguarded and what to do.
  std::string message() const;
};

/// Every DaemonSet in `state` that a driver of `config` targets, with what it lacks.
std::vector<CsiGuardFinding> checkCsiGuard(const ClusterState& state, const CsiGuardConfig& config);

/// Runs checkCsiGuard() every config.checkInterval (once the state is ready), keeps the last
/// findings for /metrics, and posts a Warning Event (reason CSIGuardMissing) when a DaemonSet
/// turns unguarded, or is first seen unguarded.
class CsiGuardMonitor {
 public:
  CsiGuardMonitor(std::shared_ptr<const ClusterState> state,
                  std::function<CsiGuardConfigPtr()> config, EventRecorder* events);
  ~CsiGuardMonitor();
  CsiGuardMonitor(const CsiGuardMonitor&) = delete;
  CsiGuardMonitor& operator=(const CsiGuardMonitor&) = delete;

  /// Checks now (the thread calls this).
  void checkNow();
  std::vector<CsiGuardFinding> findings() const;
  uint64_t checks() const;
  /// The metric families, in Prometheus text format (appended to /metrics).
  std::string renderMetrics() const;

 private:
  void run();
  std::shared_ptr<const ClusterState> state_;
  std::function<CsiGuardConfigPtr()> config_;
  EventRecorder* events_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool checked_ = false;
  uint64_t checks_ = 0;
  std::vector<CsiGuardFinding> findings_;
  std::map<std::string, std::string> reported_;  ///< ns/name -> the message last posted
  std::thread thread_;
};

}  // namespace stateguard
