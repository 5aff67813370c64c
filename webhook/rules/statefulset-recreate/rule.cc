// statefulset-recreate: creating a StatefulSet that would start on new, empty claims while claims
// from an earlier StatefulSet of the same name (or the same pod labels) still hold data under a
// different claim template name is refused: the application would initialise an empty store
// beside its real data.

#include <set>

#include "core/k8s.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

bool labelsMatch(const json& obj, const json& matchLabels) {
  if (!matchLabels.is_object() || matchLabels.empty()) return false;
  for (const auto& [key, value] : matchLabels.items()) {
    if (!value.is_string() || k8s::label(obj, key) != value.get<std::string>()) return false;
  }
  return true;
}

/// Rule statefulset-recreate (see file comment).
class StatefulSetRecreate : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        "statefulset-recreate",
        "StatefulSet CREATE onto new empty claims while older claims of it hold data",
        Mode::Enforce,
        json{{"matchBySelector", true}, {"maxListed", 10}},
        {{"apps", "v1", "statefulsets", "StatefulSet", {"CREATE"}}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const json& sts = ctx.request.object;
    const std::string ns = k8s::namespaceOf(sts).empty() ? ctx.request.ns : k8s::namespaceOf(sts);
    const std::string name = k8s::name(sts);
    const auto templates = claimTemplateNames(sts);
    if (templates.empty() || name.empty()) return {};
    const std::set<std::string> templateSet(templates.begin(), templates.end());

    // The claims this StatefulSet will use; the ones missing are created empty.
    std::vector<std::string> fresh;
    for (long i = 0; i < replicas(sts); ++i) {
      for (const auto& t : templates) {
        std::string claim = t + "-" + name + "-" + std::to_string(i);
        if (!ctx.state.get("PersistentVolumeClaim", ns, claim)) fresh.push_back(claim);
      }
    }
    if (fresh.empty()) return {};

    // Claims of other live StatefulSets in the namespace are theirs, not leftovers.
    std::set<std::string> owned;
    for (const auto& other : ctx.state.list("StatefulSet", ns)) {
      if (k8s::name(*other) == name) continue;
      for (const auto& c :
           statefulSetClaims(ctx.state, ns, k8s::name(*other), claimTemplateNames(*other))) {
        owned.insert(k8s::name(*c));
      }
    }

    const bool bySelector = ctx.params.value("matchBySelector", true);
    const json& matchLabels = k8s::at(sts, "/spec/selector/matchLabels");
    std::vector<std::string> leftovers;
    for (const auto& pvc : ctx.state.list("PersistentVolumeClaim", ns)) {
      const std::string claim = k8s::name(*pvc);
      if (!claimBound(*pvc) || owned.count(claim)) continue;
      auto split = splitStatefulSetClaim(claim, name);
      bool sameName = split && !templateSet.count(split->first);
      bool sameApp = !split && bySelector && labelsMatch(*pvc, matchLabels);
      if (sameName || sameApp) leftovers.push_back(claim + " (" + claimSize(*pvc) + ")");
    }
    if (leftovers.empty()) return {};

    const auto cap = static_cast<size_t>(std::max(1, ctx.params.value("maxListed", 10)));
    return {violation(
        "StatefulSet " + ns + "/" + name + " would start on new empty claims (" +
            joinCapped(fresh, cap) +
            ") while existing claims from an earlier StatefulSet still hold data: " +
            joinCapped(leftovers, cap) +
            ". The application would initialise an empty store beside its real data. Claims are "
            "named <template>-<statefulset>-<ordinal>: give the claim template and StatefulSet the "
            "names the existing claims carry so they are re-attached. " +
            breakGlassHint(ctx, "statefulset-recreate"),
        "StatefulSet " + ns + "/" + name + " would start empty; its data is in " +
            countOf(leftovers.size(), "older claim"))};
  }
};

}  // namespace

RulePtr makeStatefulSetRecreate() { return std::make_unique<StatefulSetRecreate>(); }

}  // namespace stateguard::rules
