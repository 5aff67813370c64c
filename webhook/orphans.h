#pragma once
// What `stateguardctl orphans` finds, for what reports it (orphans, scan, the webhook's scan).

#include <chrono>
#include <string>
#include <vector>

#include "core/cluster_state.h"
#include "core/timeutil.h"

namespace stateguard {

/// Storage that serves nobody, and provisioners on their own storage; each list holds the JSON
/// rows `stateguardctl orphans -o json` prints.
struct Orphans {
  /// Released PVs, and PVs Available for longer than `availableFor`: {name, phase, size,
  /// reclaimPolicy, backend, age}.
  json pvs = json::array();
  json claims = json::array();   ///< claims no Pod uses: {claim, phase, volume, storageClass}
  json volumes = json::array();  ///< backend volume names no PV references
  /// Provisioner Pods mounting a claim of the StorageClass they provision: {storageClass,
  /// provisioner, pod, claim}.
  json provisioners = json::array();

  size_t size() const { return pvs.size() + claims.size() + volumes.size() + provisioners.size(); }
};

/// Everything `stateguardctl orphans` reports on `state`; `backend` is the --backend-volumes list
/// (empty: not checked).
Orphans findOrphans(const ClusterState& state, Clock::time_point now,
                    std::chrono::seconds availableFor, const std::vector<std::string>& backend);

}  // namespace stateguard
