// reclaim-policy: changing a PersistentVolume's reclaim policy from Retain to Delete arms the
// destruction of its backend volume; refused.

#include "core/k8s.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

/// Rule reclaim-policy (see file comment).
class ReclaimPolicy : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        "reclaim-policy",
        "PersistentVolume reclaim policy changed from Retain to Delete",
        Mode::Enforce,
        json::object(),
        {{"", "v1", "persistentvolumes", "PersistentVolume", {"UPDATE"}}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const json& before = ctx.request.oldObject;
    const json& after = ctx.request.object;
    if (k8s::pvReclaimPolicy(before) != "Retain" || k8s::pvReclaimPolicy(after) != "Delete")
      return {};
    const std::string name = k8s::name(after);
    const std::string claim =
        k8s::str(after, "/spec/claimRef/namespace") + "/" + k8s::str(after, "/spec/claimRef/name");
    return {violation(
        "changing PersistentVolume " + name + " from Retain to Delete means " +
            k8s::pvBackendVolume(after) + " (" + k8s::pvCapacity(after) + ", storage class " +
            k8s::pvStorageClass(after) + ") is destroyed as soon as " +
            (k8s::pvPhase(after) == "Bound" ? "claim " + claim + " is deleted"
                                            : "the PV is released") +
            ". If the data is really no longer needed, delete the volume "
            "deliberately after a backup. " +
            breakGlassHint(ctx, "reclaim-policy"),
        "PV " + name + ": reclaim policy Retain -> Delete destroys its volume once released")};
  }
};

}  // namespace

RulePtr makeReclaimPolicy() { return std::make_unique<ReclaimPolicy>(); }

}  // namespace stateguard::rules
