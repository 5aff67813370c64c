// statefulset-claims: a StatefulSet whose persistentVolumeClaimRetentionPolicy deletes claims.
// - DELETE with whenDeleted: Delete while its claims are bound: refused.
// - UPDATE (or scale) that lowers replicas with whenScaled: Delete: refused.
// - UPDATE that changes whenDeleted or whenScaled to Delete: refused.
// - any other DELETE: allowed, warning that the claims stay and re-attach only to a
//   StatefulSet of the same name and claim templates.

#include "core/k8s.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

std::string retention(const json& sts, const char* field) {
  std::string v =
      k8s::str(sts, (std::string("/spec/persistentVolumeClaimRetentionPolicy/") + field).c_str());
  return v.empty() ? "Retain" : v;
}

std::vector<std::string> describeClaims(const std::vector<ObjectPtr>& claims) {
  std::vector<std::string> out;
  for (const auto& c : claims) out.push_back(k8s::name(*c) + " (" + claimSize(*c) + ")");
  return out;
}

/// Rule statefulset-claims (see file comment).
class StatefulSetClaims : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        "statefulset-claims",
        "StatefulSet deletion or scale-down that deletes its claims (retention policy Delete)",
        Mode::Enforce,
        json{{"maxListed", 10}},
        {{"apps", "v1", "statefulsets", "StatefulSet", {"DELETE", "UPDATE"}},
         {"autoscaling", "v1", "statefulsets", "Scale", {"UPDATE"}, "scale", "apps"}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const auto& req = ctx.request;
    if (req.kind == "Scale") {
      ObjectPtr sts = ctx.state.get("StatefulSet", req.ns, req.name);
      if (!sts) return {};  // not in the cluster state: nothing known about its retention policy
      return scaleDown(ctx, *sts, replicas(req.oldObject), replicas(req.object));
    }
    if (req.operation == "DELETE") return onDelete(ctx);
    std::vector<Finding> out;
    for (const char* field : {"whenDeleted", "whenScaled"}) {
      if (retention(req.oldObject, field) != "Delete" && retention(req.object, field) == "Delete") {
        out.push_back(
            violation("changing StatefulSet " + k8s::ref(req.object) +
                          " persistentVolumeClaimRetentionPolicy." + field +
                          " to Delete makes Kubernetes delete its claims " +
                          (std::string(field) == "whenDeleted" ? "when the StatefulSet is deleted"
                                                               : "when it scales down") +
                          ", and with them the data of volumes that reclaim with Delete. Keep "
                          "Retain and delete "
                          "claims deliberately. " +
                          breakGlassHint(ctx, "statefulset-claims"),
                      "StatefulSet " + k8s::ref(req.object) + ": " + field +
                          ": Delete would delete its claims " +
                          (std::string(field) == "whenDeleted" ? "with it" : "on scale-down")));
      }
    }
    if (out.empty()) {
      auto scaled = scaleDown(ctx, req.object, replicas(req.oldObject), replicas(req.object));
      out.insert(out.end(), scaled.begin(), scaled.end());
    }
    return out;
  }

 private:
  size_t cap(const RuleContext& ctx) const {
    return static_cast<size_t>(std::max(1, ctx.params.value("maxListed", 10)));
  }

  std::vector<Finding> scaleDown(const RuleContext& ctx, const json& sts, long from,
                                 long to) const {
    if (to >= from || retention(sts, "whenScaled") != "Delete") return {};
    const std::string ns = k8s::namespaceOf(sts).empty() ? ctx.request.ns : k8s::namespaceOf(sts);
    const std::string name = k8s::name(sts);
    std::vector<ObjectPtr> doomed;
    for (const auto& c : statefulSetClaims(ctx.state, ns, name, claimTemplateNames(sts))) {
      auto split = splitStatefulSetClaim(k8s::name(*c), name);
      if (split && split->second >= to && claimBound(*c)) doomed.push_back(c);
    }
    if (doomed.empty()) return {};
    return {violation("scaling StatefulSet " + ns + "/" + name + " from " + std::to_string(from) +
                          " to " + std::to_string(to) +
                          " replicas deletes the claims of the removed pods " +
                          "(persistentVolumeClaimRetentionPolicy.whenScaled: Delete): " +
                          joinCapped(describeClaims(doomed), cap(ctx)) +
                          ". Set whenScaled: Retain first if the data must survive. " +
                          breakGlassHint(ctx, "statefulset-claims"),
                      "scaling StatefulSet " + ns + "/" + name + " to " + std::to_string(to) +
                          " deletes " + countOf(doomed.size(), "claim") + " (whenScaled: Delete)")};
  }

  std::vector<Finding> onDelete(const RuleContext& ctx) const {
    const json& sts = ctx.request.oldObject;
    const std::string ns = k8s::namespaceOf(sts);
    const std::string name = k8s::name(sts);
    const auto templates = claimTemplateNames(sts);
    if (templates.empty()) return {};
    std::vector<ObjectPtr> bound;
    for (const auto& c : statefulSetClaims(ctx.state, ns, name, templates)) {
      if (claimBound(*c)) bound.push_back(c);
    }
    const bool orphan = k8s::str(ctx.request.options, "/propagationPolicy") == "Orphan";
    if (retention(sts, "whenDeleted") == "Delete" && !bound.empty() && !orphan) {
      return {violation(
          "deleting StatefulSet " + ns + "/" + name +
              " deletes its claims (persistentVolumeClaimRetentionPolicy.whenDeleted: Delete): " +
              joinCapped(describeClaims(bound), cap(ctx)) +
              ". To keep them, set whenDeleted: Retain first, or delete with --cascade=orphan. " +
              breakGlassHint(ctx, "statefulset-claims"),
          "deleting StatefulSet " + ns + "/" + name + " deletes its " +
              countOf(bound.size(), "claim") + " (whenDeleted: Delete)")};
    }
    std::string tpl = joinCapped(templates, 5);
    return {notice(
        "StatefulSet " + ns + "/" + name + " is deleted; its claims stay" +
            (bound.empty() ? "" : " (" + joinCapped(describeClaims(bound), cap(ctx)) + ")") +
            " and re-attach only to a StatefulSet named " + name + " with claim template(s) " +
            tpl + ". To recreate it without downtime, delete with kubectl delete --cascade=orphan.",
        "claims stay; reuse needs StatefulSet " + ns + "/" + name + " with template " + tpl)};
  }
};

}  // namespace

RulePtr makeStatefulSetClaims() { return std::make_unique<StatefulSetClaims>(); }

}  // namespace stateguard::rules
