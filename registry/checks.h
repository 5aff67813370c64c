#pragma once
// The checks on the mirror model: a mirror with no way back to its upstream registry, an
// upstream listed in a way that cannot reach its API, and endpoints the node cannot resolve.
// Shared by the webhook rules (webhook/rules/registry-*) and stateguardctl lint.

#include <string>
#include <vector>

#include "registry/mirrors.h"

namespace stateguard::registry {

/// What counts as served from inside the cluster, besides loopback, `*.svc` names and NodePorts.
struct CheckOptions {
  std::vector<std::string> inClusterHosts;  ///< "harbor.example.internal", "*.cluster.internal"
  std::vector<std::string> serviceCidrs;    ///< ClusterIP ranges ("10.96.0.0/12")
};

/// Reads `inClusterHosts` and `serviceCidrs` from a rule's params (defaults when absent).
CheckOptions optionsFromParams(const json& params);
/// The defaults: kubeadm/Talos (10.96.0.0/12) and k3s/RKE2 (10.43.0.0/16) service ranges.
json defaultCheckParams();

/// One problem with one mirror (and one endpoint of it, when it is about an endpoint).
struct MirrorFinding {
  std::string check;    ///< "no-fallback", "broken-fallback", "cluster-dns"
  std::string message;  ///< full text: which endpoint, what the runtime does, what breaks, fix
  std::string warning;  ///< under 120 characters
  std::string source;   ///< mirror.source
  size_t line = 0;
};

/// Why `host` is served by the cluster itself ("loopback", "a *.svc name", "a NodePort", ...),
/// or "" when it is not.
std::string inClusterReason(const std::string& host, const CheckOptions& opts);

/// Check 1: every endpoint is served from inside the cluster and the upstream is not tried last.
std::vector<MirrorFinding> checkNoFallback(const std::vector<Mirror>& mirrors,
                                           const CheckOptions& opts);
/// Check 2: the upstream listed as an endpoint with a path that does not reach its API, or a
/// fallback that cannot resolve tags.
std::vector<MirrorFinding> checkBrokenFallback(const std::vector<Mirror>& mirrors);
/// Check 3: a `*.svc.cluster.local` (or `*.svc`) endpoint the node's resolver cannot look up.
std::vector<MirrorFinding> checkClusterDns(const std::vector<Mirror>& mirrors);

/// True when the runtime has somewhere to go once every in-cluster endpoint is down: the upstream
/// tried last or listed (and reachable: no path that 404s, can resolve tags), or an endpoint
/// outside the cluster; and no upstream endpoint is listed with a broken path.
bool hasWorkingFallback(const Mirror& m, const CheckOptions& opts);

/// The registry an image reference is pulled from ("goharbor/harbor-core:v2" -> "docker.io").
std::string imageRegistry(const std::string& image);

/// Check 4: the registry a mirror points at pulls its own images through that mirror, with no
/// working fallback. `services` and `pods` are the cluster's Services and Pods; an endpoint is
/// matched to a Service by ClusterIP (and port), `<name>.<namespace>.svc[...]` name, or NodePort
/// on a loopback/node address, and the Service to its Pods by selector.
std::vector<MirrorFinding> checkSelfPull(const std::vector<Mirror>& mirrors,
                                         const std::vector<const json*>& services,
                                         const std::vector<const json*>& pods,
                                         const CheckOptions& opts);

}  // namespace stateguard::registry
