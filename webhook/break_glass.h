#pragma once
// Break-glass: the annotation `stateguard.io/allow: "<rule>[,<rule>]; until=<RFC3339>;
// reason=<text>"` lets users in the policy's break-glass groups through one rule, until a time.

#include <optional>
#include <string>
#include <vector>

#include "core/policy.h"
#include "core/timeutil.h"
#include "webhook/admission.h"

namespace stateguard {

/// A parsed break-glass annotation.
struct BreakGlass {
  std::vector<std::string> rules;
  Clock::time_point until;
  std::string reason;
};

/// Parses the annotation value; errors say which part is wrong and show the expected form.
Result<BreakGlass> parseBreakGlass(const std::string& value);

/// True when the user is in one of the policy's break-glass groups.
bool inBreakGlassGroup(const UserInfo& user, const BreakGlassConfig& config);

/// The outcome of asking "may this request override `ruleId`?".
struct BreakGlassGrant {
  bool granted = false;
  std::string reason;       ///< the annotation's reason, when granted
  std::string explanation;  ///< why not, when an annotation exists but does not apply ("" if none)
};

/// Looks at the annotation on the request's object (the old object on DELETE).
BreakGlassGrant checkBreakGlass(const AdmissionRequest& request, const BreakGlassConfig& config,
                                const std::string& ruleId, Clock::time_point now);

}  // namespace stateguard
