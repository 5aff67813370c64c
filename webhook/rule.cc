#include "webhook/rule.h"

#include <algorithm>

namespace stateguard {

bool Rule::appliesTo(const AdmissionRequest& request) const {
  for (const auto& t : info().targets) {
    if (t.kind != request.kind || t.group != request.group) continue;
    if (t.subResource != request.subResource) continue;  // status etc. are not guarded
    if (!request.resource.empty() && t.resource != request.resource) continue;
    if (std::find(t.operations.begin(), t.operations.end(), request.operation) !=
        t.operations.end()) {
      return true;
    }
  }
  return false;
}

Finding violation(std::string message, std::string warning) {
  return Finding{Finding::Severity::Violation, std::move(message), std::move(warning)};
}

Finding notice(std::string message, std::string warning) {
  return Finding{Finding::Severity::Notice, std::move(message), std::move(warning)};
}

}  // namespace stateguard
