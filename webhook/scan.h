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
#include "core/kube_client.h"
#include "core/policy.h"
#include "core/timeutil.h"

namespace stateguard::scan {

/// Marks data nobody needs to keep, with the reason as its value: a claim (or every claim of a
/// namespace) so marked is not reported by backup-stale or claim-unused, a PersistentVolume not
/// by pv-released or pv-unclaimed. It silences reports only: no rule allows more because of it.
inline constexpr const char* kExpendableAnnotation = "stateguard.io/expendable";

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
  /// Where the objects of configurationKinds() are read: null reads them from `state` (a state
  /// file holds them); the background scan and `scan --kubeconfig` list them with
  /// listConfiguration(), since the webhook's cache does not watch them.
  const ClusterState* configuration = nullptr;
};

struct Report {
  std::vector<Finding> findings;   ///< by severity (error first), kind, namespace, name, rule
  std::vector<BackupAge> backups;  ///< every bound claim, while backup-freshness is not off
  size_t objects = 0;              ///< objects judged by the rules
  size_t count(const std::string& severity) const;
};

/// The kinds rules judge on creation that the webhook's cache does not watch: the configuration
/// that decides, long before anything breaks, whether data survives. S3 lifecycle rules on ACK
/// and Crossplane buckets (backup-lifecycle), Longhorn RecurringJobs and Velero Schedules
/// (backup-retention), registry mirrors in Talos Cluster API objects, Rancher Clusters and
/// ConfigMaps (registry-*). Taken from the rules' CREATE targets, one entry per version a rule
/// names, keyed by kind and group so that every version lands under one store key. Left out:
/// Secrets (a guard should not hold a grant to read every Secret; `lint` judges them from
/// manifests), upgrade Plans (a Plan is an action, judged when it is created) and Longhorn
/// Snapshots (judged only when created).
const std::vector<ResourceKind>& configurationKinds();

/// What listing one resource of configurationKinds() gave.
struct ConfigurationListing {
  std::string key;         ///< the store key ("Bucket.s3.services.k8s.aws")
  std::string apiVersion;  ///< the version that answered ("" when none did)
  size_t objects = 0;
  bool served = false;     ///< false: no version is served (CRD not installed) or readable
  bool forbidden = false;  ///< the answer was 403: RBAC does not grant list
  std::string error;       ///< "" unless listing failed; the store keeps the earlier objects then
};

/// Lists configurationKinds() into `into`, each resource at the newest version the server
/// serves, in pages of 50 (ConfigMaps: only those carrying one of `configLabels`, the labels
/// the registry rules read, rules::configLabelsOf). A resource that fails to list keeps what
/// `into` held of it, so one failed list does not make its findings disappear and reappear.
std::vector<ConfigurationListing> listConfiguration(KubeClient& client,
                                                    const std::vector<std::string>& configLabels,
                                                    ObjectStore& into);

/// Everything found in `state` under `policy` at `now`.
Report run(const ClusterState& state, const Policy& policy, Clock::time_point now,
           const Options& options = {});

/// The checks that are not webhook rules: {id, one-line description} (SARIF's rule list, the
/// PolicyReports' rule names).
const std::vector<std::pair<std::string, std::string>>& stateChecks();

}  // namespace stateguard::scan
