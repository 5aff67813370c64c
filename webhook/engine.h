#pragma once
// The review engine: runs every applicable rule under the policy's modes, applies
// break-glass, and turns findings into one admission decision plus an audit record.

#include <string>
#include <unordered_map>
#include <vector>

#include "webhook/rule.h"

namespace stateguard {

/// One rule's contribution to a decision.
struct RuleVerdict {
  std::string rule;
  std::string verdict;  ///< deny | warn | audit | break-glass | notice
  std::string message;
};

/// The decision for one AdmissionRequest.
struct Decision {
  AdmissionResponse response;
  std::vector<RuleVerdict> verdicts;
  std::string verdict;  ///< overall: deny | break-glass | warn | audit | allow
  std::string rule;     ///< the rule that decided ("" when nothing fired)
  std::string breakGlassReason;
};

/// Judges requests with a fixed set of rules, which must outlive it; thread-safe (rules are pure).
class Engine {
 public:
  explicit Engine(const std::vector<RulePtr>& rules);

  Decision review(const AdmissionRequest& request, const ClusterState& state, const Policy& policy,
                  Clock::time_point now) const;

 private:
  /// The rules with a target of this API group and kind, in registry order.
  const std::vector<const Rule*>& candidates(const AdmissionRequest& request) const;

  /// "<group>/<kind>" -> rules that may apply: a request only meets the rules of its kind.
  std::unordered_map<std::string, std::vector<const Rule*>> byKind_;
};

/// One audit-log record for a decision, as JSON: the reference form of auditLine().
json auditRecord(const AdmissionRequest& request, const Decision& decision,
                 const std::string& time);
/// The same record as the line the audit log gets (JSON and a newline), written directly: what
/// the webhook uses per request.
std::string auditLine(const AdmissionRequest& request, const Decision& decision,
                      const std::string& time);

/// Keeps a warning under the apiserver's comfortable length (120 characters).
std::string shortWarning(const std::string& text);

}  // namespace stateguard
