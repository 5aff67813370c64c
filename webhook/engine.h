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
  std::string verdict;  ///< overall: deny | break-glass | warn | audit | allow | exempt
  std::string rule;     ///< the rule that decided ("" when nothing fired)
  std::string breakGlassReason;
  /// API reads made to confirm an allowance against live state (0: judged on the cache alone).
  size_t liveReads = 0;
};

/// Judges requests with a fixed set of rules, which must outlive it; thread-safe (rules are pure).
class Engine {
 public:
  explicit Engine(const std::vector<RulePtr>& rules);

  /// Judges one request. A controller finishing what was judged passes unjudged (verdict
  /// "exempt", see controllers.h). A request that would destroy data and is allowed after rules
  /// read cached state that can lag is judged again on live state (state.liveView()); if that
  /// cannot be read, it is refused (nothing destructive is allowed on unconfirmed state).
  Decision review(const AdmissionRequest& request, const ClusterState& state, const Policy& policy,
                  Clock::time_point now) const;

 private:
  /// Every applicable rule against `state`, under the policy's modes and break-glass.
  Decision judge(const AdmissionRequest& request, const ClusterState& state, const Policy& policy,
                 Clock::time_point now) const;

  /// The rules with a target of this API group and kind, in registry order.
  const std::vector<const Rule*>& candidates(const AdmissionRequest& request) const;

  /// "<group>/<kind>" -> rules that may apply: a request only meets the rules of its kind.
  std::unordered_map<std::string, std::vector<const Rule*>> byKind_;
};

/// Who sent the review, as far as TLS can tell (the webhook's audit lines carry it).
struct AuditCaller {
  bool verified = false;  ///< a client certificate verified against --client-ca
  std::string name;       ///< its common name
};

/// One audit-log record for a decision, as JSON: the reference form of auditLine().
json auditRecord(const AdmissionRequest& request, const Decision& decision, const std::string& time,
                 const AuditCaller* caller = nullptr);
/// The same record as the line the audit log gets (JSON and a newline), written directly: what
/// the webhook uses per request.
std::string auditLine(const AdmissionRequest& request, const Decision& decision,
                      const std::string& time, const AuditCaller* caller = nullptr);

/// Keeps a warning under the apiserver's comfortable length (120 characters).
std::string shortWarning(const std::string& text);

}  // namespace stateguard
