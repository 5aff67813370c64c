#pragma once
// The rule interface: what a rule guards, and how it judges one request against
// the cluster state.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/cluster_state.h"
#include "core/policy.h"
#include "core/timeutil.h"
#include "webhook/admission.h"

namespace stateguard {

/// One API resource and the operations a rule needs to see on it. Used to build and
/// check the ValidatingWebhookConfiguration.
struct RuleTarget {
  std::string group;     ///< "" for core
  std::string version;   ///< "v1"
  std::string resource;  ///< "persistentvolumes"
  std::string kind;      ///< "PersistentVolume" (the kind the request carries, e.g. "Scale")
  std::vector<std::string> operations;
  std::string subResource = "";  ///< "" for the object itself, "scale" for statefulsets/scale
  /// The API group of `resource` when it differs from the request kind's group (Scale: "apps").
  std::string resourceGroup = "";

  /// The group to name in a ValidatingWebhookConfiguration rule.
  const std::string& apiGroup() const { return resourceGroup.empty() ? group : resourceGroup; }
};

/// Static facts about a rule: id, what it guards, defaults.
struct RuleInfo {
  std::string id;
  std::string summary;  ///< one line, for docs and `stateguardctl rules`
  Mode defaultMode = Mode::Enforce;
  json defaultParams = json::object();
  std::vector<RuleTarget> targets;
  /// False for rules that guard the break-glass mechanism itself.
  bool breakGlassAllowed = true;
};

/// What a rule found. A Violation is denied in enforce mode; a Notice is only ever a warning.
struct Finding {
  enum class Severity { Violation, Notice };
  Severity severity = Severity::Violation;
  /// Full text: what was refused, what would be lost, how to proceed.
  std::string message;
  /// Short text for response.warnings (kept under 120 characters).
  std::string warning;
};

/// Everything a rule may look at.
struct RuleContext {
  const AdmissionRequest& request;
  const ClusterState& state;
  const json& params;
  const Policy& policy;
  Clock::time_point now;
};

/// A rule: pure function of the request and the cluster state.
class Rule {
 public:
  virtual ~Rule() = default;
  virtual const RuleInfo& info() const = 0;
  /// Returns what the rule found; empty when the request is fine.
  virtual std::vector<Finding> evaluate(const RuleContext& ctx) const = 0;

  /// True when one of info().targets matches the request's kind and operation.
  bool appliesTo(const AdmissionRequest& request) const;
};
using RulePtr = std::unique_ptr<Rule>;

/// Helpers for building findings.
Finding violation(std::string message, std::string warning);
Finding notice(std::string message, std::string warning);

}  // namespace stateguard
