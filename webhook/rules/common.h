#pragma once
// Facts several rules share: what a claim's deletion destroys, a StatefulSet's
// claims, message helpers.

#include <optional>
#include <string>
#include <vector>

#include "webhook/rule.h"

namespace stateguard::rules {

/// A claim whose deletion would destroy its backend volume.
struct VolumeAtRisk {
  std::string claim;         ///< namespace/name
  std::string pv;            ///< PV name, or "" when not in the cluster state
  std::string size;          ///< "10Gi"
  std::string storageClass;  ///< "longhorn"
  std::string backend;       ///< "driver.longhorn.io volume pvc-123"
  std::string why;           ///< "reclaim policy Delete" or how it was inferred
};

/// Whether deleting `pvc` destroys data: bound to a PV whose reclaim policy is Delete (or, when the
/// PV is not in the cluster state, whose StorageClass reclaims with Delete). Unbound claims:
/// nullopt.
std::optional<VolumeAtRisk> volumeDestroyedWithClaim(const json& pvc, const ClusterState& state);

/// "pvc-a (10Gi), pvc-b (5Gi)" with at most `cap` entries, then "and N more".
std::string joinCapped(const std::vector<std::string>& items, size_t cap);

/// "1 claim", "3 claims": a count with its noun, for texts a person reads.
std::string countOf(long long n, const std::string& noun);

/// The volumeClaimTemplates names of a StatefulSet.
std::vector<std::string> claimTemplateNames(const json& statefulSet);

/// If `claimName` is `<template>-<statefulSet>-<ordinal>`, returns {template, ordinal}.
std::optional<std::pair<std::string, long>> splitStatefulSetClaim(const std::string& claimName,
                                                                  const std::string& statefulSet);

/// Claims in `ns` that belong to StatefulSet `name` through one of `templates`.
std::vector<ObjectPtr> statefulSetClaims(const ClusterState& state, const std::string& ns,
                                         const std::string& name,
                                         const std::vector<std::string>& templates);

/// spec.replicas of a StatefulSet or Scale (the API default, 1, when unset).
long replicas(const json& obj);

/// True when the claim is Bound (status.phase, or spec.volumeName set).
bool claimBound(const json& pvc);
/// "10Gi" from status.capacity or spec.resources.requests, or "unknown size".
std::string claimSize(const json& pvc);

/// The sentence that tells a person how to override a rule on purpose.
std::string breakGlassHint(const RuleContext& ctx, const std::string& ruleId);

}  // namespace stateguard::rules
