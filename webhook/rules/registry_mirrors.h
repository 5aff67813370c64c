#pragma once
// What the registry-mirror rules share: the objects that carry mirror configurations, and the
// step from the checks' findings (registry/checks.h) to rule findings.

#include <functional>
#include <string>
#include <vector>

#include "registry/checks.h"
#include "registry/kube.h"
#include "webhook/rule.h"

namespace stateguard::rules {

/// ConfigMaps, Secrets, CABPT TalosConfig/TalosConfigTemplate, TalosControlPlane and Rancher
/// provisioning.cattle.io/v1 Clusters, on CREATE and UPDATE.
std::vector<RuleTarget> registryMirrorTargets();

/// The parameters of the rules that judge endpoints as in or out of the cluster:
/// inClusterHosts, serviceCidrs, configLabel.
json registryCheckParams();
/// The policy's configLabel, or stateguard.io/registry-config.
std::string configLabelOf(const json& params);
/// Every configLabel the policy's rules read (rules that are not Off), sorted and without
/// duplicates: the ConfigMaps a scan lists. Rules may be given different labels.
std::vector<std::string> configLabelsOf(const Policy& policy);

/// Runs `check` on the mirrors of the request's object. On UPDATE, findings the old object
/// already had are dropped, so an unrelated edit of an existing object is never refused. Parse
/// errors become notices when `reportErrors`. `severity` is the kind of finding each one gives.
std::vector<Finding> registryFindings(
    const RuleContext& ctx, const std::string& ruleId,
    const std::function<std::vector<registry::MirrorFinding>(const std::vector<registry::Mirror>&)>&
        check,
    bool reportErrors = false);

}  // namespace stateguard::rules
