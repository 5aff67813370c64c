#include "webhook/registry.h"

#include "webhook/rules/rules.h"

namespace stateguard {

const std::vector<RulePtr>& allRules() {
  static const std::vector<RulePtr> kRules = [] {
    std::vector<RulePtr> r;
    r.push_back(rules::makePvDelete());
    r.push_back(rules::makePvcDelete());
    r.push_back(rules::makeNamespaceDelete());
    r.push_back(rules::makeProtectionFinalizer());
    r.push_back(rules::makeReclaimPolicy());
    r.push_back(rules::makeStatefulSetClaims());
    r.push_back(rules::makeStatefulSetRecreate());
    r.push_back(rules::makeBreakGlassAnnotation());
    r.push_back(rules::makeSelfProtection());
    r.push_back(rules::makeBackupRetention());
    r.push_back(rules::makeBackupLifecycle());
    r.push_back(rules::makeBackupFreshness());
    r.push_back(rules::makeBackupQuarantine());
    r.push_back(rules::makeRegistryNoFallback());
    r.push_back(rules::makeRegistryBrokenFallback());
    r.push_back(rules::makeRegistryClusterDns());
    r.push_back(rules::makeRegistrySelfPull());
    r.push_back(rules::makeRegistryProbe());
    return r;
  }();
  return kRules;
}

std::vector<RuleDefaults> ruleDefaults() {
  std::vector<RuleDefaults> out;
  for (const auto& rule : allRules()) {
    const RuleInfo& info = rule->info();
    out.push_back(RuleDefaults{info.id, info.defaultMode, info.defaultParams});
  }
  return out;
}

}  // namespace stateguard
