// registry-cluster-dns: a registry mirror endpoint named `*.svc.cluster.local` (or `*.svc`). The
// container runtime runs on the node and resolves names with the node's resolver, which usually
// does not know cluster DNS names. Warns by default (with a working fallback, pulls only slow
// down; registry-no-fallback catches the case where nothing else is left).

#include "registry/checks.h"
#include "webhook/rules/registry_mirrors.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

constexpr const char* kId = "registry-cluster-dns";

/// Rule registry-cluster-dns (see file comment).
class RegistryClusterDns : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        kId, "registry mirror endpoint with a cluster DNS name the node cannot resolve", Mode::Warn,
        json{{"configLabel", registry::kDefaultConfigLabel}}, registryMirrorTargets()};
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    return registryFindings(ctx, kId, [](const std::vector<registry::Mirror>& m) {
      return registry::checkClusterDns(m);
    });
  }
};

}  // namespace

RulePtr makeRegistryClusterDns() { return std::make_unique<RegistryClusterDns>(); }

}  // namespace stateguard::rules
