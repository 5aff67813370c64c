// namespace-delete: deleting a Namespace deletes its claims; when some of their volumes would be
// destroyed (reclaim policy Delete), the deletion is refused, listing them (capped) with the count.

#include "core/k8s.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

/// Rule namespace-delete (see file comment).
class NamespaceDelete : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        "namespace-delete",
        "Namespace DELETE while it holds claims whose volumes would be destroyed",
        Mode::Enforce,
        json{{"maxListed", 10}},
        {{"", "v1", "namespaces", "Namespace", {"DELETE"}}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const std::string ns = k8s::name(ctx.request.oldObject);
    std::vector<std::string> listed;
    for (const auto& pvc : ctx.state.list("PersistentVolumeClaim", ns)) {
      if (auto risk = volumeDestroyedWithClaim(*pvc, ctx.state)) {
        listed.push_back(k8s::name(*pvc) + " (" + risk->size + ", PV " + risk->pv + ")");
      }
    }
    if (listed.empty()) return {};
    const auto cap = static_cast<size_t>(std::max(1, ctx.params.value("maxListed", 10)));
    const std::string count = std::to_string(listed.size());
    return {violation(
        "deleting Namespace " + ns + " deletes its " + count +
            " claim(s) whose volumes are destroyed with them (reclaim policy Delete): " +
            joinCapped(listed, cap) +
            ". To proceed: back up or move the data, set persistentVolumeReclaimPolicy: Retain on "
            "the PVs to keep, or delete the claims one by one. " +
            breakGlassHint(ctx, "namespace-delete"),
        "deleting Namespace " + ns + " destroys the volumes of " + countOf(listed.size(), "claim") +
            " (reclaim policy Delete)")};
  }
};

}  // namespace

RulePtr makeNamespaceDelete() { return std::make_unique<NamespaceDelete>(); }

}  // namespace stateguard::rules
