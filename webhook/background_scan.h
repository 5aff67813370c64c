#pragma once
// The background scan: what `stateguardctl scan` finds (webhook/scan.h), run inside the webhook
// over its watch cache, by one replica at a time (leader election on a Lease). It scans once the
// cache has synced, again soon after anything it holds changes (at most every `afterChange`),
// and every `interval` regardless (backups age without any change). The leader publishes the
// findings as PolicyReports and as gauges on /metrics; the other replicas only keep electing.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/cluster_state.h"
#include "core/kube_client.h"
#include "core/policy.h"
#include "webhook/leader_election.h"
#include "webhook/policy_reports.h"
#include "webhook/scan.h"

namespace stateguard {

struct BackgroundScanOptions {
  std::chrono::seconds interval{std::chrono::minutes(10)};  ///< a full scan at least this often
  /// A change in the cluster state is scanned within this long (or ten times the last scan's
  /// duration, when that is longer); scans run at most this often.
  std::chrono::seconds afterChange{15};
  scan::Options scan;
  /// Whether the cluster serves ETCDSnapshotFiles (asked at every scan); null: no.
  std::function<bool()> etcdSnapshotsServed;
};

class BackgroundScan {
 public:
  /// With `client` and `lease`: elects on the Lease and writes PolicyReports. Without (a cluster
  /// state file): this process always scans, and findings go to /metrics only.
  BackgroundScan(std::shared_ptr<const ClusterState> state,
                 std::function<std::shared_ptr<const Policy>()> policy, KubeClientPtr client,
                 std::optional<LeaseOptions> lease, BackgroundScanOptions options);
  ~BackgroundScan();
  BackgroundScan(const BackgroundScan&) = delete;
  BackgroundScan& operator=(const BackgroundScan&) = delete;

  /// Stops both threads and gives the Lease up, so another replica takes over at once.
  void stop();
  bool leading() const;
  uint64_t runs() const;
  /// The metric families, in Prometheus text format (appended to /metrics).
  std::string renderMetrics() const;

 private:
  void electLoop();
  void scanLoop();
  /// One scan, published; false when the PolicyReports could not all be written.
  bool scanNow(const Policy& policy);
  /// Lists the configuration kinds again when they are due (scan::listConfiguration): at the
  /// first scan, every `interval`, and when the policy's registry config label changes. The
  /// cache does not watch them, so a change there is seen within one interval.
  void refreshConfiguration(const Policy& policy);
  bool sleep(std::chrono::milliseconds d);

  std::shared_ptr<const ClusterState> state_;
  std::function<std::shared_ptr<const Policy>()> policy_;
  KubeClientPtr client_;
  /// The configuration kinds' objects from the last listing (null without a client: a state
  /// file holds them). Only the scan thread touches these.
  std::unique_ptr<ObjectStore> configuration_;
  std::chrono::steady_clock::time_point configurationListed_{};
  std::vector<std::string> configurationLabels_;
  std::map<std::string, std::string> configurationStatus_;  ///< key -> "" | "absent" | error
  std::unique_ptr<LeaderElector> elector_;
  std::unique_ptr<PolicyReportWriter> reports_;
  BackgroundScanOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t runs_ = 0;
  double lastSuccess_ = 0, lastDuration_ = 0;
  size_t lastObjects_ = 0;
  size_t configurationFailures_ = 0;  ///< resources whose last configuration list failed
  std::string findingsText_;          ///< the leader's finding gauges, rendered after each scan
  std::string lastSummary_;
  std::thread electThread_, scanThread_;
};

}  // namespace stateguard
