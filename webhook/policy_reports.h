#pragma once
// The background scan's findings as wgpolicyk8s.io/v1alpha2 PolicyReports, the format Kyverno
// writes and Policy Reporter, Kyverno's UI and many dashboards read: one PolicyReport named
// "stateguard" in each namespace with findings, one ClusterPolicyReport "stateguard" for
// cluster-scoped objects. A report is written only when its results change (a result keeps the
// timestamp of the scan that first found it, also across leaders), and deleted when its namespace
// has nothing left. When the CRDs are not installed, that is said once and nothing is written.

#include <cstdint>
#include <mutex>
#include <string>

#include "core/kube_client.h"
#include "core/timeutil.h"
#include "webhook/scan.h"

namespace stateguard {

/// How many results one report holds at most (errors first). An object in etcd may not exceed
/// 1.5 MiB; 500 results of ~1.5 KiB stay well below it. The rest are counted in the summary and
/// in the annotation stateguard.io/results-omitted.
inline constexpr size_t kMaxReportResults = 500;

/// What the scan found in one namespace ("" = cluster-scoped), as the report object to write.
/// `firstSeen` gives a result's timestamp by key (rule/kind/ns/name); results not in it get `now`.
json policyReportFor(const std::string& ns, const std::vector<const scan::Finding*>& findings,
                     const std::map<std::string, json>& firstSeen, Clock::time_point now);

class PolicyReportWriter {
 public:
  explicit PolicyReportWriter(KubeClientPtr client);

  /// Makes the cluster's stateguard reports say what `report` found. "" on success, else what
  /// failed (the next scan tries again).
  std::string publish(const scan::Report& report, Clock::time_point now);

  /// False while the PolicyReport CRDs are not served (checked again at every publish).
  bool available() const;
  uint64_t writes() const;    ///< reports created, replaced or deleted
  uint64_t failures() const;  ///< publishes that failed

 private:
  KubeClientPtr client_;
  mutable std::mutex mu_;
  bool available_ = true;
  bool absenceLogged_ = false;
  uint64_t writes_ = 0, failures_ = 0;
};

}  // namespace stateguard
