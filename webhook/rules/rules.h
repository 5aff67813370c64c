#pragma once
// Factories for every rule; the registry (webhook/registry.cc) lists them.

#include "webhook/rule.h"

namespace stateguard::rules {

RulePtr makePvDelete();
RulePtr makePvcDelete();
RulePtr makeNamespaceDelete();
RulePtr makeProtectionFinalizer();
RulePtr makeReclaimPolicy();
RulePtr makeStatefulSetClaims();
RulePtr makeStatefulSetRecreate();
RulePtr makeBreakGlassAnnotation();
RulePtr makeSelfProtection();
RulePtr makeBackupRetention();
RulePtr makeBackupLifecycle();
RulePtr makeBackupFreshness();
RulePtr makeBackupQuarantine();
RulePtr makeRegistryNoFallback();
RulePtr makeRegistryBrokenFallback();
RulePtr makeRegistryClusterDns();
RulePtr makeRegistrySelfPull();
RulePtr makeRegistryProbe();

}  // namespace stateguard::rules
