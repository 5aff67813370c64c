#pragma once
// The central list of rules: ids, targets, defaults. The webhook, the CLI and the
// webhook-configuration checks all read it.

#include <vector>

#include "core/policy.h"
#include "webhook/rule.h"

namespace stateguard {

/// Every rule, in evaluation order.
const std::vector<RulePtr>& allRules();
/// Ids, default modes and parameters, for the policy parser.
std::vector<RuleDefaults> ruleDefaults();

}  // namespace stateguard
