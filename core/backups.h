#pragma once
// "When was the last good backup of this volume, and of etcd?": the one answer the
// backup-freshness rule and `stateguardctl backups` share. Read from the cluster state: Velero
// Backups, Longhorn Backups, VolumeSnapshots and k3s/RKE2 ETCDSnapshotFiles, plus (for the
// retention in force) Longhorn RecurringJobs and Velero Schedules when the state holds them.

#include <optional>
#include <string>
#include <vector>

#include "core/cluster_state.h"
#include "core/timeutil.h"

namespace stateguard::backups {

/// One backup or snapshot that may hold a copy of a volume (or of etcd).
struct Copy {
  std::string source;  ///< "Velero Backup", "Longhorn Backup", "VolumeSnapshot", "ETCDSnapshotFile"
  std::string name;    ///< "velero/nightly-20261120" ("" namespace: just the name)
  std::string state;   ///< "Completed", "PartiallyFailed", "Error", "ready", "not ready"
  bool good = false;   ///< finished successfully and holds the volume's data
  std::optional<Clock::time_point> time;  ///< completion (Velero) or creation time
  std::string note;  ///< why it does not count, when it is not good ("objects only: ...")

  /// "Velero Backup velero/nightly-20261120".
  std::string label() const { return source + " " + name; }
};

/// Everything the state says about one claim's backups, newest first.
struct ClaimBackups {
  std::string claim;           ///< "namespace/name"
  std::string pv;              ///< bound PV, "" when unbound
  std::string longhornVolume;  ///< Longhorn volume name (PV's CSI volumeHandle), "" otherwise
  std::vector<Copy> copies;    ///< every backup/snapshot that covers the claim, newest first

  /// The newest good copy, or nullptr.
  const Copy* newestGood() const;
  /// The newest copy of any state when it is newer than newestGood() (a recent failure), or
  /// nullptr.
  const Copy* newerFailure() const;
};

/// The backups and snapshots that cover `pvc` (a PersistentVolumeClaim object).
ClaimBackups forClaim(const ClusterState& state, const json& pvc);

/// Whether a Velero Backup's spec (or a Schedule's template) takes `pvc`: its namespace is
/// included and not excluded, claims are not filtered out, and spec.labelSelector.matchLabels
/// match. (matchExpressions and orLabelSelectors are not evaluated: such a backup is taken to
/// cover.)
bool veleroCovers(const json& spec, const json& pvc);

/// k3s/RKE2 etcd snapshots (ETCDSnapshotFile), newest first.
std::vector<Copy> etcdSnapshots(const ClusterState& state);

/// The newest good copy in a newest-first list, or nullptr.
const Copy* newestGood(const std::vector<Copy>& copies);
/// The newest copy of a newest-first list when it did not count and is newer than the newest
/// good one (a recent failure worth naming), or nullptr.
const Copy* newerFailure(const std::vector<Copy>& copies);

/// Schedules that keep backups of a claim: "Longhorn RecurringJob longhorn-system/daily (backup,
/// 0 2 * * *, keeps 7)", "Velero Schedule velero/nightly (0 1 * * *, ttl 720h0m0s)". Empty when
/// the state holds none that cover it.
std::vector<std::string> retentionFor(const ClusterState& state, const json& pvc);

/// "3d4h old" style age of `t` at `now` ("in the future" for clock skew).
std::string age(Clock::time_point t, Clock::time_point now);

}  // namespace stateguard::backups
