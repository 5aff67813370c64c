// break-glass-annotation: adding or changing the break-glass annotation is itself guarded. Only
// users in the policy's break-glass groups may set it, and only in its valid form.

#include "core/k8s.h"
#include "webhook/break_glass.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

/// Rule break-glass-annotation (see file comment).
class BreakGlassAnnotation : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo = [] {
      RuleInfo i{
          "break-glass-annotation",
          "adding or changing the break-glass annotation outside the break-glass groups",
          Mode::Enforce,
          json::object(),
          {{"", "v1", "persistentvolumes", "PersistentVolume", {"CREATE", "UPDATE"}},
           {"", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", {"CREATE", "UPDATE"}},
           {"", "v1", "namespaces", "Namespace", {"CREATE", "UPDATE"}},
           {"apps", "v1", "statefulsets", "StatefulSet", {"CREATE", "UPDATE"}}},
      };
      i.breakGlassAllowed = false;
      return i;
    }();
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const auto& cfg = ctx.policy.breakGlass;
    auto after = k8s::annotation(ctx.request.object, cfg.annotation);
    if (!after) return {};  // removing it is always fine
    auto before = k8s::annotation(ctx.request.oldObject, cfg.annotation);
    if (before && *before == *after) return {};
    const std::string what = ctx.request.describe();
    if (!inBreakGlassGroup(ctx.request.user, cfg)) {
      std::string groups = joinCapped(cfg.groups, 10);
      return {violation("user \"" + ctx.request.user.username +
                            "\" may not set the break-glass annotation " + cfg.annotation + " on " +
                            what + ": only members of " + groups +
                            " may override stateguard rules. Ask one of them, with the reason.",
                        "break-glass annotation on " + what + " refused")};
    }
    auto parsed = parseBreakGlass(*after);
    if (!parsed.ok()) {
      return {violation(
          "the " + cfg.annotation + " annotation on " + what + " is invalid: " + parsed.error(),
          "invalid break-glass annotation on " + what)};
    }
    if (parsed->until <= ctx.now) {
      return {violation("the " + cfg.annotation + " annotation on " + what +
                            " has until=" + formatRfc3339(parsed->until) +
                            ", which has already passed, so it would override nothing; set a "
                            "time in the next " +
                            std::to_string(cfg.maxDuration.count()) + "h.",
                        "break-glass until= already passed on " + what)};
    }
    if (parsed->until - ctx.now > cfg.maxDuration) {
      return {violation("the " + cfg.annotation + " annotation on " + what +
                            " has until=" + formatRfc3339(parsed->until) + ", more than " +
                            std::to_string(cfg.maxDuration.count()) +
                            "h from now; choose an earlier time.",
                        "break-glass until= too far on " + what)};
    }
    return {notice("break-glass annotation set on " + what + " by " + ctx.request.user.username +
                       " for rule(s) " + joinCapped(parsed->rules, 10) + " until " +
                       formatRfc3339(parsed->until) + ": " + parsed->reason,
                   "break-glass armed on " + what + " until " + formatRfc3339(parsed->until))};
  }
};

}  // namespace

RulePtr makeBreakGlassAnnotation() { return std::make_unique<BreakGlassAnnotation>(); }

}  // namespace stateguard::rules
