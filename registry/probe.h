#pragma once
// Check 5, the optional live probe of registry mirror endpoints: `GET <API root>/` must answer 200
// or 401, and an upstream endpoint must not answer 404 for a manifest that exists upstream. Every
// request is bounded, and all of them together stay within one time budget (below the webhook's
// timeout), so a slow or silent registry never holds admission.

#include <chrono>
#include <string>
#include <vector>

#include "registry/checks.h"

namespace stateguard::registry {

/// How long and what to probe.
struct ProbeOptions {
  std::chrono::milliseconds budget{3000};      ///< all requests of one call together
  std::chrono::milliseconds perRequest{1500};  ///< connect + read of one request
  std::string image = "library/busybox";       ///< a repository that exists upstream
  std::string reference = "latest";
};

/// Reads `budgetMs`, `requestTimeoutMs`, `image`, `reference` from a rule's params.
ProbeOptions probeOptionsFromParams(const json& params);
/// The defaults as rule params.
json defaultProbeParams();

/// Probes every endpoint of `mirrors`; one finding per endpoint that fails. Endpoints left when
/// the budget is spent are not probed (and not reported).
std::vector<MirrorFinding> probeMirrors(const std::vector<Mirror>& mirrors,
                                        const ProbeOptions& opts);

}  // namespace stateguard::registry
