#include "webhook/rules/common.h"

#include "core/k8s.h"

namespace stateguard::rules {

long replicas(const json& obj) {
  const json& r = k8s::at(obj, "/spec/replicas");
  return r.is_number_integer() ? r.get<long>() : 1;
}

bool claimBound(const json& pvc) {
  return k8s::str(pvc, "/status/phase") == "Bound" || !k8s::str(pvc, "/spec/volumeName").empty();
}

std::string claimSize(const json& pvc) {
  std::string s = k8s::str(pvc, "/status/capacity/storage");
  if (s.empty()) s = k8s::str(pvc, "/spec/resources/requests/storage");
  return s.empty() ? "unknown size" : s;
}

std::optional<VolumeAtRisk> volumeDestroyedWithClaim(const json& pvc, const ClusterState& state) {
  const std::string pvName = k8s::str(pvc, "/spec/volumeName");
  if (pvName.empty()) return std::nullopt;  // never bound: no data
  VolumeAtRisk risk;
  risk.claim = k8s::ref(pvc);
  if (ObjectPtr pv = state.get("PersistentVolume", "", pvName)) {
    if (k8s::pvReclaimPolicy(*pv) != "Delete") return std::nullopt;
    risk.pv = pvName;
    risk.size = k8s::pvCapacity(*pv);
    risk.storageClass = k8s::pvStorageClass(*pv);
    risk.backend = k8s::pvBackendVolume(*pv);
    risk.why = "reclaim policy Delete";
    return risk;
  }
  // The PV is not in the cluster state: judge by the claim's StorageClass (default reclaim:
  // Delete).
  risk.pv = pvName;
  risk.size = claimSize(pvc);
  std::string sc = k8s::str(pvc, "/spec/storageClassName");
  risk.storageClass = sc.empty() ? "(none)" : sc;
  risk.backend = "(PV " + pvName + " not in cluster state)";
  if (!sc.empty()) {
    if (ObjectPtr cls = state.get("StorageClass", "", sc)) {
      std::string policy = k8s::str(*cls, "/reclaimPolicy");
      if (policy == "Retain") return std::nullopt;
      risk.why = "StorageClass " + sc + " reclaims with " + (policy.empty() ? "Delete" : policy);
      return risk;
    }
  }
  risk.why = "PV " + pvName + " not found, reclaim policy unknown (treated as Delete)";
  return risk;
}

std::string joinCapped(const std::vector<std::string>& items, size_t cap) {
  std::string out;
  size_t shown = std::min(cap, items.size());
  for (size_t i = 0; i < shown; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > shown) out += " and " + std::to_string(items.size() - shown) + " more";
  return out;
}

std::string countOf(long long n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

std::vector<std::string> claimTemplateNames(const json& statefulSet) {
  std::vector<std::string> out;
  const json& templates = k8s::at(statefulSet, "/spec/volumeClaimTemplates");
  if (!templates.is_array()) return out;
  for (const auto& t : templates) {
    std::string n = k8s::name(t);
    if (!n.empty()) out.push_back(n);
  }
  return out;
}

std::optional<std::pair<std::string, long>> splitStatefulSetClaim(const std::string& claimName,
                                                                  const std::string& statefulSet) {
  // <template>-<statefulSet>-<ordinal>
  size_t dash = claimName.rfind('-');
  if (dash == std::string::npos || dash + 1 == claimName.size()) return std::nullopt;
  const std::string ordinal = claimName.substr(dash + 1);
  if (ordinal.size() > 9 || ordinal.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  const std::string head = claimName.substr(0, dash);
  const std::string suffix = "-" + statefulSet;
  if (head.size() <= suffix.size() || !head.ends_with(suffix)) return std::nullopt;
  return std::make_pair(head.substr(0, head.size() - suffix.size()), std::stol(ordinal));
}

std::vector<ObjectPtr> statefulSetClaims(const ClusterState& state, const std::string& ns,
                                         const std::string& name,
                                         const std::vector<std::string>& templates) {
  std::vector<ObjectPtr> out;
  for (const auto& pvc : state.list("PersistentVolumeClaim", ns)) {
    auto split = splitStatefulSetClaim(k8s::name(*pvc), name);
    if (!split) continue;
    for (const auto& t : templates) {
      if (t == split->first) {
        out.push_back(pvc);
        break;
      }
    }
  }
  return out;
}

std::string breakGlassHint(const RuleContext& ctx, const std::string& ruleId) {
  return "If this is intended, a member of a break-glass group can annotate the object with " +
         ctx.policy.breakGlass.annotation + "=\"" + ruleId + "; until=<RFC3339, within " +
         std::to_string(ctx.policy.breakGlass.maxDuration.count()) +
         "h>; reason=<ticket>\" and retry.";
}

}  // namespace stateguard::rules
