// registry-no-fallback: a registry mirror whose every endpoint is served by the cluster itself
// (loopback/NodePort, ClusterIP, *.svc names, hosts the policy lists) while the runtime is told
// not to try the upstream registry last (Talos skipFallback, containerd `server` on the mirror,
// k3s disable-default-registry-endpoint, CRI-O blocked). When the in-cluster registry is down,
// nothing can pull, the registry's own images included. Denied by default.

#include "registry/checks.h"
#include "webhook/rules/registry_mirrors.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

constexpr const char* kId = "registry-no-fallback";

/// Rule registry-no-fallback (see file comment).
class RegistryNoFallback : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo = [] {
      return RuleInfo{kId,
                      "registry mirror served only from inside the cluster with no fallback to "
                      "the upstream registry",
                      Mode::Enforce, registryCheckParams(), registryMirrorTargets()};
    }();
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const registry::CheckOptions opts = registry::optionsFromParams(ctx.params);
    return registryFindings(ctx, kId, [&](const std::vector<registry::Mirror>& m) {
      return registry::checkNoFallback(m, opts);
    });
  }
};

}  // namespace

RulePtr makeRegistryNoFallback() { return std::make_unique<RegistryNoFallback>(); }

}  // namespace stateguard::rules
