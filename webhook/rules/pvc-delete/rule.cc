// pvc-delete: deleting a claim whose bound PV reclaims with Delete destroys the data; refused,
// naming the PV, its size and storage class. A claim whose PV is retained is allowed with a note.
// Giving such a claim a new owner (metadata.ownerReferences) is refused too: the garbage
// collector deletes it once that owner goes, and does so unjudged (webhook/controllers.h).

#include <algorithm>

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
        {{"", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", {"DELETE", "UPDATE"}}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    if (ctx.request.operation == "UPDATE") return newOwner(ctx);
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
                      "deleting claim " + claim + " destroys its data: PV " + risk->pv + " (" +
                          risk->size + ")")};
  }

 private:
  /// An UPDATE that adds an owner reference to a claim whose volume goes with it.
  std::vector<Finding> newOwner(const RuleContext& ctx) const {
    const json& before = k8s::at(ctx.request.oldObject, "/metadata/ownerReferences");
    const json& after = k8s::at(ctx.request.object, "/metadata/ownerReferences");
    if (!after.is_array()) return {};
    std::vector<std::string> added;
    for (const json& ref : after) {
      const bool known =
          before.is_array() && std::any_of(before.begin(), before.end(), [&](const json& b) {
            return k8s::str(b, "/uid") == k8s::str(ref, "/uid") &&
                   k8s::str(b, "/kind") == k8s::str(ref, "/kind");
          });
      if (!known) added.push_back(k8s::str(ref, "/kind") + " " + k8s::str(ref, "/name"));
    }
    if (added.empty()) return {};
    auto risk = volumeDestroyedWithClaim(ctx.request.object, ctx.state);
    if (!risk) return {};
    const std::string claim = k8s::ref(ctx.request.object);
    const std::string owners = joinCapped(added, 3);
    return {violation("giving PersistentVolumeClaim " + claim + " the owner " + owners +
                          " makes the garbage collector delete the claim when that owner is "
                          "deleted, and with it PV " +
                          risk->pv + " (" + risk->size + ", " + risk->backend + ", " + risk->why +
                          "). Owners of claims are set by the StatefulSet controller for "
                          "persistentVolumeClaimRetentionPolicy: Delete; set that on the "
                          "StatefulSet instead (rule statefulset-claims judges it). " +
                          breakGlassHint(ctx, "pvc-delete"),
                      "owner " + owners + " would delete claim " + claim + " and PV " + risk->pv)};
  }
};

}  // namespace

RulePtr makePvcDelete() { return std::make_unique<PvcDelete>(); }

}  // namespace stateguard::rules
