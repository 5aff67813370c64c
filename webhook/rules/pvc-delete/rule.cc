// pvc-delete: deleting a claim whose bound PV reclaims with Delete destroys the data; refused,
// naming the PV, its size and storage class. A claim whose PV is retained is allowed with a note.

#include "core/k8s.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

/// Rule pvc-delete (see file comment).
class PvcDelete : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        "pvc-delete",
        "PersistentVolumeClaim DELETE when its PV's reclaim policy is Delete",
        Mode::Enforce,
        json::object(),
        {{"", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", {"DELETE"}}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const json& pvc = ctx.request.oldObject;
    const std::string claim = k8s::ref(pvc);
    auto risk = volumeDestroyedWithClaim(pvc, ctx.state);
    if (!risk) {
      const std::string pvName = k8s::str(pvc, "/spec/volumeName");
      if (pvName.empty()) return {};
      return {
          notice("PersistentVolumeClaim " + claim + " is deleted; PV " + pvName +
                     " is retained and becomes Released with its data. It does not bind to a new "
                     "claim by itself: clear its spec.claimRef to reuse it.",
                 "claim " + claim + " deleted; PV " + pvName + " keeps the data (Released)")};
    }
    return {violation("deleting PersistentVolumeClaim " + claim + " destroys its data: PV " +
                          risk->pv + " (" + risk->size + ", storage class " + risk->storageClass +
                          ", " + risk->backend + ") is deleted with it (" + risk->why +
                          "). To keep the data, first run: kubectl patch pv " + risk->pv +
                          " -p '{\"spec\":{\"persistentVolumeReclaimPolicy\":\"Retain\"}}'. " +
                          breakGlassHint(ctx, "pvc-delete"),
                      "deleting " + claim + " destroys PV " + risk->pv + " (" + risk->size + ")")};
  }
};

}  // namespace

RulePtr makePvcDelete() { return std::make_unique<PvcDelete>(); }

}  // namespace stateguard::rules
