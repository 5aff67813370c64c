// registry-self-pull: a registry mirror whose in-cluster registry pulls its own images through
// that same mirror while the mirror has no working fallback (none, or the seed's upstream endpoint
// that 404s). When the registry's Pods go down they cannot come back: their images can only come
// from themselves. Needs the cluster's Services and Pods (the watch cache). Denied by default.

#include "core/k8s.h"
#include "registry/checks.h"
#include "webhook/rules/registry_mirrors.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

constexpr const char* kId = "registry-self-pull";

/// Rule registry-self-pull (see file comment).
class RegistrySelfPull : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo = [] {
      return RuleInfo{kId,
                      "registry mirror whose in-cluster registry pulls its own images through it "
                      "with no working fallback",
                      Mode::Enforce, registryCheckParams(), registryMirrorTargets()};
    }();
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const registry::CheckOptions opts = registry::optionsFromParams(ctx.params);
    return registryFindings(ctx, kId, [&](const std::vector<registry::Mirror>& mirrors) {
      std::vector<registry::MirrorFinding> none;
      // Only mirrors without a working fallback need the cluster state.
      bool any = false;
      for (const auto& m : mirrors) any |= !registry::hasWorkingFallback(m, opts);
      if (!any) return none;
      const std::vector<ObjectPtr> services = ctx.state.list("Service");
      const std::vector<ObjectPtr> pods = ctx.state.list("Pod");
      std::vector<const json*> svc;
      std::vector<const json*> pod;
      for (const auto& s : services) svc.push_back(s.get());
      for (const auto& p : pods) pod.push_back(p.get());
      return registry::checkSelfPull(mirrors, svc, pod, opts);
    });
  }
};

}  // namespace

RulePtr makeRegistrySelfPull() { return std::make_unique<RegistrySelfPull>(); }

}  // namespace stateguard::rules
