// protection-finalizer: removing kubernetes.io/pv-protection or kubernetes.io/pvc-protection turns
// a postponed deletion into an immediate one while the volume is still bound or in use; refused.

#include <algorithm>

#include "core/k8s.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

bool has(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

/// Rule protection-finalizer (see file comment).
class ProtectionFinalizer : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        "protection-finalizer",
        "removing the kubernetes.io/pv-protection or pvc-protection finalizer",
        Mode::Enforce,
        json::object(),
        {{"", "v1", "persistentvolumes", "PersistentVolume", {"UPDATE"}},
         {"", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", {"UPDATE"}}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const bool isPv = ctx.request.kind == "PersistentVolume";
    const std::string finalizer =
        isPv ? "kubernetes.io/pv-protection" : "kubernetes.io/pvc-protection";
    if (!has(k8s::finalizers(ctx.request.oldObject), finalizer) ||
        has(k8s::finalizers(ctx.request.object), finalizer)) {
      return {};
    }
    const json& obj = ctx.request.object;
    const std::string what =
        (isPv ? "PersistentVolume " : "PersistentVolumeClaim ") + k8s::ref(obj);
    const bool deleting = !k8s::str(obj, "/metadata/deletionTimestamp").empty();
    std::string state;
    if (isPv) {
      state = "it is " +
              (k8s::pvPhase(obj).empty() ? std::string("in phase unknown") : k8s::pvPhase(obj)) +
              " (" + k8s::pvCapacity(obj) + ", reclaim policy " + k8s::pvReclaimPolicy(obj) + ")";
    } else {
      std::vector<std::string> pods;
      for (const auto& pod : ctx.state.list("Pod", k8s::namespaceOf(obj))) {
        const json& vols = k8s::at(*pod, "/spec/volumes");
        if (!vols.is_array()) continue;
        for (const auto& v : vols) {
          if (k8s::str(v, "/persistentVolumeClaim/claimName") == k8s::name(obj)) {
            pods.push_back(k8s::name(*pod));
            break;
          }
        }
      }
      state = "it is " +
              std::string(claimBound(obj) ? "bound to PV " + k8s::str(obj, "/spec/volumeName")
                                          : "unbound") +
              (pods.empty() ? "" : " and used by pod(s) " + joinCapped(pods, 5));
    }
    return {violation(
        "removing finalizer " + finalizer + " from " + what + " lets " +
            (deleting ? "its pending deletion" : "any deletion") + " happen at once while " +
            state +
            "; the data can be destroyed under running workloads. The finalizer only waits until "
            "nothing uses the volume: stop the pods using it and let it go by itself. " +
            breakGlassHint(ctx, "protection-finalizer"),
        "removing " + finalizer + " from " + (isPv ? "PV " : "claim ") + k8s::ref(obj))};
  }
};

}  // namespace

RulePtr makeProtectionFinalizer() { return std::make_unique<ProtectionFinalizer>(); }

}  // namespace stateguard::rules
