// registry-probe: the optional live probe (off by default). Each endpoint of a mirror
// configuration that is created or changed gets `GET <API root>/` (200 or 401 expected), and an
// upstream endpoint a manifest lookup that must not answer 404. All requests together stay within
// `budgetMs`, below the webhook's 5 s timeout; what is left when it is spent is not probed.
// The probe runs from the webhook's Pod, whose network may differ from the nodes'.

#include <algorithm>

#include "registry/kube.h"
#include "registry/probe.h"
#include "webhook/rules/common.h"
#include "webhook/rules/registry_mirrors.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

constexpr const char* kId = "registry-probe";

/// Endpoints as the runtime sees them, to tell whether an UPDATE changed any.
std::vector<std::string> endpointKeys(const std::vector<registry::Mirror>& mirrors) {
  std::vector<std::string> out;
  for (const auto& m : mirrors)
    for (const auto& e : m.endpoints)
      out.push_back(m.registry + " " + e.url + (e.overridePath ? " override" : "") +
                    (e.resolve ? "" : " no-resolve"));
  std::sort(out.begin(), out.end());
  return out;
}

/// Rule registry-probe (see file comment).
class RegistryProbe : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo = [] {
      json params = registry::defaultProbeParams();
      params["configLabel"] = registry::kDefaultConfigLabel;
      return RuleInfo{kId,
                      "live probe (off by default): mirror endpoints must answer /v2/, an "
                      "upstream endpoint must find a known manifest",
                      Mode::Off, params, registryMirrorTargets()};
    }();
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const std::string label = configLabelOf(ctx.params);
    const auto now = registry::mirrorsOfObject(ctx.request.object, ctx.request.group, label);
    if (!now.carriesConfig || now.mirrors.empty()) return {};
    if (ctx.request.operation == "UPDATE" && ctx.request.oldObject.is_object()) {
      const auto old = registry::mirrorsOfObject(ctx.request.oldObject, ctx.request.group, label);
      if (endpointKeys(old.mirrors) == endpointKeys(now.mirrors)) return {};  // nothing new
    }
    std::vector<Finding> out;
    for (const auto& f :
         registry::probeMirrors(now.mirrors, registry::probeOptionsFromParams(ctx.params)))
      out.push_back(violation(f.message + " " + breakGlassHint(ctx, kId), f.warning));
    return out;
  }
};

}  // namespace

RulePtr makeRegistryProbe() { return std::make_unique<RegistryProbe>(); }

}  // namespace stateguard::rules
