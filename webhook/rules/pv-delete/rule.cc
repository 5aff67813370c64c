// pv-delete: deleting a Bound PersistentVolume, or one whose reclaim policy destroys the
// backend volume, is refused. Deleting a Released PV that retains its volume is allowed
// with a warning naming the backend volume left behind.

#include "core/k8s.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

/// Rule pv-delete (see file comment).
class PvDelete : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        "pv-delete",
        "PersistentVolume DELETE while Bound or with reclaim policy Delete",
        Mode::Enforce,
        json::object(),
        {{"", "v1", "persistentvolumes", "PersistentVolume", {"DELETE"}}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const json& pv = ctx.request.oldObject;
    const std::string name = k8s::name(pv);
    const std::string phase = k8s::pvPhase(pv);
    const std::string reclaim = k8s::pvReclaimPolicy(pv);
    const std::string backend = k8s::pvBackendVolume(pv);
    const std::string facts = k8s::pvCapacity(pv) + ", storage class " + k8s::pvStorageClass(pv);
    const std::string claim =
        k8s::str(pv, "/spec/claimRef/namespace") + "/" + k8s::str(pv, "/spec/claimRef/name");

    if (phase == "Bound") {
      std::string lost = "claim " + claim + " loses its volume (" + facts + ")";
      if (reclaim == "Delete") lost += " and the backend " + backend + " is destroyed";
      return {violation(
          "PersistentVolume " + name + " is Bound: deleting it means " + lost +
              ". To proceed: stop the workload using " + claim +
              ", back up the data, delete the claim first (rule pvc-delete judges that), or set "
              "persistentVolumeReclaimPolicy: Retain to keep the volume. " +
              breakGlassHint(ctx, "pv-delete"),
          "PV " + name + " is Bound to claim " + claim + ", which would lose its volume")};
    }
    if (reclaim == "Delete") {
      return {violation(
          "PersistentVolume " + name + " has reclaim policy Delete: deleting it destroys " +
              backend + " (" + facts + "). To keep the data, first run: kubectl patch pv " + name +
              " -p '{\"spec\":{\"persistentVolumeReclaimPolicy\":\"Retain\"}}' and then "
              "delete it. " +
              breakGlassHint(ctx, "pv-delete"),
          "deleting PV " + name + " destroys " + backend + " (reclaim policy Delete)")};
    }
    if (phase == "Released" || phase == "Failed") {
      return {
          notice("PersistentVolume " + name + " (" + facts +
                     (claim == "/" ? ", no claim recorded" : ", was " + claim) +
                     ") is deleted with reclaim policy " + reclaim + ": " + backend +
                     " is left behind, no longer referenced by any PV; reuse it with a new PV or "
                     "delete it in the storage backend.",
                 "PV " + name + " deleted; " + backend + " is left behind unreferenced")};
    }
    return {};
  }
};

}  // namespace

RulePtr makePvDelete() { return std::make_unique<PvDelete>(); }

}  // namespace stateguard::rules
