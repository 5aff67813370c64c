// What the registry-mirror rules share (registry_mirrors.h): their targets, and findings from the
// registry checks with break-glass hints, counting on UPDATE only what the old object lacked.

#include "webhook/rules/registry_mirrors.h"

#include <algorithm>
#include <set>

#include "registry/kube.h"
#include "webhook/rules/common.h"

namespace stateguard::rules {

std::vector<RuleTarget> registryMirrorTargets() {
  const std::vector<std::string> ops = {"CREATE", "UPDATE"};
  return {
      {"", "v1", "configmaps", "ConfigMap", ops},
      {"", "v1", "secrets", "Secret", ops},
      {"bootstrap.cluster.x-k8s.io", "v1alpha3", "talosconfigs", "TalosConfig", ops},
      {"bootstrap.cluster.x-k8s.io", "v1alpha3", "talosconfigtemplates", "TalosConfigTemplate",
       ops},
      {"controlplane.cluster.x-k8s.io", "v1alpha3", "taloscontrolplanes", "TalosControlPlane", ops},
      {"provisioning.cattle.io", "v1", "clusters", "Cluster", ops}};
}

json registryCheckParams() {
  json params = registry::defaultCheckParams();
  params["configLabel"] = registry::kDefaultConfigLabel;
  return params;
}

std::string configLabelOf(const json& params) {
  return params.is_object() && params.contains("configLabel") && params["configLabel"].is_string()
             ? params["configLabel"].get<std::string>()
             : std::string(registry::kDefaultConfigLabel);
}

std::vector<std::string> configLabelsOf(const Policy& policy) {
  std::set<std::string> labels;
  for (const auto& [id, rule] : policy.rules) {
    if (rule.mode != Mode::Off && rule.params.is_object() && rule.params.contains("configLabel"))
      labels.insert(configLabelOf(rule.params));
  }
  return {labels.begin(), labels.end()};
}

std::vector<Finding> registryFindings(
    const RuleContext& ctx, const std::string& ruleId,
    const std::function<std::vector<registry::MirrorFinding>(const std::vector<registry::Mirror>&)>&
        check,
    bool reportErrors) {
  const std::string label = configLabelOf(ctx.params);
  const registry::ObjectMirrors now =
      registry::mirrorsOfObject(ctx.request.object, ctx.request.group, label);
  if (!now.carriesConfig && now.errors.empty()) return {};
  std::vector<std::string> before;
  if (ctx.request.operation == "UPDATE" && ctx.request.oldObject.is_object()) {
    const registry::ObjectMirrors old =
        registry::mirrorsOfObject(ctx.request.oldObject, ctx.request.group, label);
    for (const auto& f : check(old.mirrors)) before.push_back(f.message);
    for (const auto& e : old.errors) before.push_back(e);
  }
  const auto seen = [&](const std::string& m) {
    return std::find(before.begin(), before.end(), m) != before.end();
  };
  std::vector<Finding> out;
  for (const auto& f : check(now.mirrors)) {
    if (seen(f.message)) continue;
    out.push_back(violation(f.message + " " + breakGlassHint(ctx, ruleId), f.warning));
  }
  if (reportErrors) {
    for (const auto& e : now.errors) {
      if (seen(e)) continue;
      // The warning is the error itself (file, key, line), cut to leave room for the engine's
      // prefix.
      out.push_back(notice(e + " (the runtime ignores a configuration it cannot read: none of its "
                               "mirrors applies)",
                           e.size() <= 80 ? e : e.substr(0, 77) + "..."));
    }
  }
  return out;
}

}  // namespace stateguard::rules
