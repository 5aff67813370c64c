#pragma once
// The hazards that already exist: every rule judges every object of a cluster state as if it
// were created now (through the engine the webhook and `lint` use), and the state checks no
// request carries: stale backups, volumes stateguard-csi has quarantined, what `orphans` finds,
// and StatefulSets whose claim retention policy would delete bound claims. `stateguardctl scan`
// prints it; the webhook's background scan (webhook/background_scan.h) publishes it.
// docs/scan.md.

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/cluster_state.h"
#include "core/policy.h"
#include "core/timeutil.h"

namespace stateguard::scan {

/// One hazard on one object.
struct Finding {
  Finding() = default;
  Finding(std::string rule_, std::string kind_, std::string ns_, std::string name_,
          std::string severity_, std::string message_, std::string apiVersion_ = "")
      : rule(std::move(rule_)),
        kind(std::move(kind_)),
        ns(std::move(ns_)),
        name(std::move(name_)),
        severity(std::move(severity_)),
        message(std::move(message_)),
        apiVersion(std::move(apiVersion_)) {}

  std::string rule;  ///< a rule id, or one of stateChecks()
  std::string kind;
  std::string ns;  ///< "" for cluster-scoped objects
  std::string name;
  std::string severity;    ///< error | warning | note
  std::string message;     ///< what is at risk and how to fix it
  std::string apiVersion;  ///< the object's ("v1", "apps/v1", "velero.io/v1"); run() fills it

  /// "Kind namespace/name".
  std::string object() const;
};

/// A bound claim and the age of its newest successful backup (none: no such backup).
struct BackupAge {
  std::string ns, claim;
  std::optional<std::chrono::seconds> age;
};

struct Options {
  /// An Available PersistentVolume unclaimed for longer than this is reported.
  std::chrono::seconds availableFor = std::chrono::hours(24);
  std::string availableText = "24h";  ///< availableFor as the user wrote it, for messages
  /// The cluster serves ETCDSnapshotFiles (k3s, RKE2): etcd without any snapshot is reported.
  bool etcdSnapshotsServed = false;
};

struct Report {
  std::vector<Finding> findings;   ///< by severity (error first), kind, namespace, name, rule
  std::vector<BackupAge> backups;  ///< every bound claim, while backup-freshness is not off
  size_t objects = 0;              ///< objects judged by the rules
  size_t count(const std::string& severity) const;
};

/// Everything found in `state` under `policy` at `now`.
Report run(const ClusterState& state, const Policy& policy, Clock::time_point now,
           const Options& options = {});

/// The checks that are not webhook rules: {id, one-line description} (SARIF's rule list, the
/// PolicyReports' rule names).
const std::vector<std::pair<std::string, std::string>>& stateChecks();

}  // namespace stateguard::scan
