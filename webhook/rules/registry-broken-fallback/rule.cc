// registry-broken-fallback: the upstream registry listed as a mirror endpoint in a way that cannot
// reach its API (the seed: Talos `overridePath: true` applied to https://registry-1.docker.io
// beside Harbor, so it was called without /v2 and answered 404), or a fallback that cannot
// resolve tags. Unreadable configurations are reported as warnings. Denied by default.

#include "registry/checks.h"
#include "webhook/rules/registry_mirrors.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

constexpr const char* kId = "registry-broken-fallback";

/// Rule registry-broken-fallback (see file comment).
class RegistryBrokenFallback : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        kId,
        "registry mirror lists the upstream registry with a path that does not reach its API, "
        "or a fallback that cannot resolve tags",
        Mode::Enforce, json{{"configLabel", registry::kDefaultConfigLabel}},
        registryMirrorTargets()};
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    return registryFindings(
        ctx, kId,
        [](const std::vector<registry::Mirror>& m) { return registry::checkBrokenFallback(m); },
        /*reportErrors=*/true);
  }
};

}  // namespace

RulePtr makeRegistryBrokenFallback() { return std::make_unique<RegistryBrokenFallback>(); }

}  // namespace stateguard::rules
