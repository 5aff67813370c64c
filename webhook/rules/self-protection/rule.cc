// self-protection: the webhook's own Deployment, policy ConfigMap and
// ValidatingWebhookConfiguration may be changed or deleted only by members of the break-glass
// groups, of the groups the policy lists (system:masters: cluster admins, who bypass RBAC and can
// remove the webhook configuration anyway, so refusing them protects nothing and breaks
// `helm upgrade` and `kubectl apply -k` of stateguard itself) or by the users it lists (the
// GitOps controllers that install it, cert-manager's CA injector), so the guard cannot be quietly
// switched off by someone who may merely edit objects in its namespace. Note: kube-apiserver never
// sends ValidatingWebhookConfiguration objects to admission webhooks; that target matters for
// `stateguardctl` offline checks, and RBAC must guard the live object.

#include <algorithm>

#include "core/k8s.h"
#include "webhook/break_glass.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

bool contains(const json& list, const std::string& value) {
  if (!list.is_array()) return false;
  return std::any_of(list.begin(), list.end(),
                     [&](const json& v) { return v.is_string() && v.get<std::string>() == value; });
}

/// Rule self-protection (see file comment).
class SelfProtection : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo = [] {
      RuleInfo i{
          "self-protection",
          "changes to stateguard's own Deployment, policy ConfigMap or webhook configuration",
          Mode::Enforce,
          json{{"namespace", "stateguard-system"},
               {"deployment", "stateguard-webhook"},
               {"policyConfigMap", "stateguard-policy"},
               {"webhookConfiguration", "stateguard"},
               {"allowedGroups", {"system:masters"}},
               {"allowedUsers",
                {"system:serviceaccount:cert-manager:cert-manager-cainjector",
                 "system:serviceaccount:flux-system:kustomize-controller",
                 "system:serviceaccount:flux-system:helm-controller",
                 "system:serviceaccount:argocd:argocd-application-controller"}}},
          {{"apps", "v1", "deployments", "Deployment", {"UPDATE", "DELETE"}},
           {"autoscaling", "v1", "deployments", "Scale", {"UPDATE"}, "scale", "apps"},
           {"", "v1", "configmaps", "ConfigMap", {"UPDATE", "DELETE"}},
           {"admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            {"UPDATE", "DELETE"}}},
      };
      i.breakGlassAllowed = false;  // group members pass directly; no annotation needed
      return i;
    }();
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const auto& req = ctx.request;
    const json& p = ctx.params;
    std::string ours;
    if (req.kind == "ValidatingWebhookConfiguration") {
      ours = p.value("webhookConfiguration", "");
    } else if (req.ns == p.value("namespace", "")) {
      ours = req.kind == "ConfigMap" ? p.value("policyConfigMap", "") : p.value("deployment", "");
    }
    if (ours.empty() || req.name != ours) return {};
    if (inBreakGlassGroup(req.user, ctx.policy.breakGlass) ||
        contains(p.value("allowedUsers", json::array()), req.user.username)) {
      return {};
    }
    const json groups = p.value("allowedGroups", json::array());
    for (const auto& g : req.user.groups) {
      if (contains(groups, g)) return {};
    }
    const std::string verb = req.operation == "DELETE" ? "delete" : "change";
    return {violation("user \"" + req.user.username + "\" may not " + verb + " " + req.describe() +
                          ": it is part of stateguard itself, and changing it could switch off the "
                          "protection of every volume in the cluster. Members of " +
                          joinCapped(ctx.policy.breakGlass.groups, 10) +
                          " and cluster admins may change it (upgrade with their credentials, or "
                          "add your deploy tool's identity to self-protection's allowedUsers); to "
                          "uninstall, delete the ValidatingWebhookConfiguration first (see the "
                          "README's Uninstall section).",
                      "stateguard's own " + req.kind + " " + req.name + " is protected")};
  }
};

}  // namespace

RulePtr makeSelfProtection() { return std::make_unique<SelfProtection>(); }

}  // namespace stateguard::rules
