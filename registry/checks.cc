// The mirror checks (registry/checks.h): each finding names the endpoint, what the runtime will
// do with it, what breaks, and the fix.

#include "registry/checks.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdint>

#include "core/k8s.h"

namespace stateguard::registry {
namespace {

/// Room for a warning: the engine prefixes "stateguard <rule-id>: " and keeps the whole under
/// 120 characters.
constexpr size_t kWarningRoom = 80;

/// Host without port or IPv6 brackets; the port, or -1.
std::pair<std::string, long> hostAndPort(const std::string& hostPort) {
  std::string host = hostPort;
  long port = -1;
  if (!host.empty() && host.front() == '[') {
    const auto close = host.find(']');
    std::string rest = close == std::string::npos ? "" : host.substr(close + 1);
    host = host.substr(1, close == std::string::npos ? std::string::npos : close - 1);
    if (rest.size() > 1 && rest.front() == ':') port = std::strtol(rest.c_str() + 1, nullptr, 10);
    return {host, port};
  }
  const auto colon = host.rfind(':');
  if (colon != std::string::npos && host.find(':') == colon) {
    port = std::strtol(host.c_str() + colon + 1, nullptr, 10);
    host.resize(colon);
  }
  return {host, port};
}

bool ipv4(const std::string& s, uint32_t& out) {
  in_addr a{};
  if (::inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  out = ntohl(a.s_addr);
  return true;
}

bool inCidr(const std::string& ip, const std::string& cidr) {
  uint32_t addr = 0;
  uint32_t net = 0;
  const auto slash = cidr.find('/');
  if (!ipv4(ip, addr) || !ipv4(cidr.substr(0, slash), net)) return false;
  const long bits =
      slash == std::string::npos ? 32 : std::strtol(cidr.c_str() + slash + 1, nullptr, 10);
  if (bits <= 0) return true;
  if (bits > 32) return false;
  const uint32_t mask = bits == 32 ? 0xffffffffu : ~(0xffffffffu >> bits);
  return (addr & mask) == (net & mask);
}

bool privateIp(const std::string& ip) {
  return inCidr(ip, "10.0.0.0/8") || inCidr(ip, "172.16.0.0/12") || inCidr(ip, "192.168.0.0/16") ||
         inCidr(ip, "100.64.0.0/10");
}

bool globMatch(const std::string& pattern, const std::string& host) {
  if (pattern.starts_with("*.")) return host.ends_with(pattern.substr(1));
  return pattern == host;
}

/// A `*.svc` / `*.svc.cluster.local` style name: resolved by the cluster DNS only.
bool clusterDnsName(const std::string& host) {
  return host.ends_with(".svc") || host.find(".svc.") != std::string::npos;
}

bool isUpstream(const Mirror& m, const Endpoint& e) { return isUpstreamHost(m.registry, e.host); }

/// The API path the runtime will use for `e` ("/v2" appended unless the path is the API root).
std::string apiRoot(const Endpoint& e) {
  std::string base = e.path;
  while (base.ends_with("/")) base.pop_back();
  return e.overridePath ? base : base + "/v2";
}

/// True when the upstream endpoint `e` will not reach its registry's API.
std::string brokenPath(const Mirror& m, const Endpoint& e) {
  if (m.format == Format::Crio) {
    // A location's path is a repository namespace, prepended to every image name.
    if (!e.path.empty() && e.path != "/") {
      std::string want = splitUrl(m.registry).path;
      if (e.path != want)
        return "CRI-O reads the path " + e.path + " of location " + e.url +
               " as a repository namespace and asks " + e.host + " for " + e.host + e.path +
               "/<image>, which the upstream registry does not have";
    }
    return "";
  }
  const std::string root = apiRoot(e);
  if (root == "/v2") return "";
  std::string how;
  if (!e.overridePath)
    return "its path " + e.path + " is kept, so containerd calls " +
           (e.scheme.empty() ? e.host : e.scheme + "://" + e.host) + root +
           "/<name>/manifests/<tag>";
  switch (m.format) {
    case Format::Talos:
      how = m.where.starts_with("RegistryMirrorConfig")
                ? "overridePath: true on this endpoint"
                : "Talos applies the mirror's one overridePath: true to every endpoint in its "
                  "list, this one included, so containerd";
      break;
    case Format::Containerd:
      how = e.overridePath ? "override_path = true" : "its path " + e.path;
      break;
    case Format::K3s:
      how =
          "k3s treats an endpoint path other than /v2 as the API root (override_path), so "
          "containerd";
      break;
    case Format::Crio:
      break;
  }
  std::string target = e.scheme.empty() ? e.host : e.scheme + "://" + e.host;
  target += root + "/<name>/manifests/<tag>";
  if (m.format == Format::Containerd) return how + " makes containerd call " + target;
  if (how.ends_with("containerd")) return how + " calls " + target;
  return how + " makes containerd call " + target;
}

/// "after the last endpoint, nothing" for the runtime.
std::string noFallbackText(const Mirror& m) {
  switch (m.format) {
    case Format::Talos:
      return "with " + m.noFallbackBecause +
             " Talos makes the last endpoint containerd's `server`, and containerd never tries " +
             m.registry + " itself";
    case Format::Containerd:
      return "with " + m.noFallbackBecause + " containerd tries that server last instead of " +
             m.registry;
    case Format::K3s:
      return "with " + m.noFallbackBecause + " k3s/RKE2 does not add " + m.registry +
             "'s default endpoint after the mirrors";
    case Format::Crio:
      return "with " + m.noFallbackBecause + " CRI-O never pulls from " + m.registry +
             "'s own location";
  }
  return "";
}

std::string fixNoFallback(const Mirror& m) {
  switch (m.format) {
    case Format::Talos:
      return "remove skipFallback (or set it to false): Talos/containerd then fall back to " +
             m.registry + " when every mirror fails";
    case Format::Containerd:
      return "remove `server` (containerd then uses " + m.registry +
             " as the last resort) or point it at " + apiHost(m.registry);
    case Format::K3s:
      return "drop disable-default-registry-endpoint, or add https://" + apiHost(m.registry) +
             " as the last endpoint";
    case Format::Crio:
      return "remove blocked = true so CRI-O pulls from the primary location after the mirrors";
  }
  return "";
}

std::string describe(const Mirror& m) {
  return std::string(formatName(m.format)) + " mirror for " + m.registry + " (" + m.where + ")";
}

}  // namespace

json defaultCheckParams() {
  return json{{"inClusterHosts", json::array()},
              {"serviceCidrs", json::array({"10.96.0.0/12", "10.43.0.0/16"})}};
}

CheckOptions optionsFromParams(const json& params) {
  CheckOptions o;
  const json defaults = defaultCheckParams();
  auto strings = [&](const char* key) {
    std::vector<std::string> out;
    const json& v = params.is_object() && params.contains(key) ? params[key] : defaults[key];
    if (v.is_array())
      for (const auto& s : v)
        if (s.is_string()) out.push_back(s.get<std::string>());
    return out;
  };
  o.inClusterHosts = strings("inClusterHosts");
  o.serviceCidrs = strings("serviceCidrs");
  return o;
}

std::string inClusterReason(const std::string& hostPort, const CheckOptions& opts) {
  const auto [host, port] = hostAndPort(hostPort);
  for (const auto& p : opts.inClusterHosts)
    if (globMatch(p, host) || globMatch(p, hostPort)) return "listed in inClusterHosts";
  if (host == "localhost" || host == "::1" || inCidr(host, "127.0.0.0/8"))
    return "a loopback address, a node-local mirror or NodePort";
  if (clusterDnsName(host)) return "a Kubernetes Service name";
  for (const auto& c : opts.serviceCidrs)
    if (inCidr(host, c)) return "a ClusterIP in " + c;
  if (port >= 30000 && port <= 32767 && privateIp(host)) return "a NodePort on a node address";
  return "";
}

std::vector<MirrorFinding> checkNoFallback(const std::vector<Mirror>& mirrors,
                                           const CheckOptions& opts) {
  std::vector<MirrorFinding> out;
  for (const auto& m : mirrors) {
    if (m.upstreamLast || m.endpoints.empty()) continue;
    std::vector<std::string> inside;
    bool allInside = true;
    for (const auto& e : m.endpoints) {
      // An external endpoint, or the upstream itself, still serves pulls when the cluster is down.
      const std::string why = isUpstream(m, e) ? "" : inClusterReason(e.host, opts);
      if (why.empty()) {
        allInside = false;
        break;
      }
      inside.push_back(e.url + ": " + why);
    }
    if (!allInside) continue;
    std::string list;
    for (size_t i = 0; i < inside.size(); ++i) list += (i == 0 ? "" : "; ") + inside[i];
    MirrorFinding f;
    f.check = "no-fallback";
    f.source = m.source;
    f.line = m.line;
    f.message = describe(m) + ": every endpoint is served by the cluster itself (" + list +
                "), and " + noFallbackText(m) +
                ". When those pods or their node are down, no node can pull any image from " +
                m.registry + ", including the images of the registry that would have to start " +
                "again. Fix: " + fixNoFallback(m) + ".";
    f.warning = m.registry + " mirror: only in-cluster endpoints and no fallback to the upstream";
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<MirrorFinding> checkBrokenFallback(const std::vector<Mirror>& mirrors) {
  std::vector<MirrorFinding> out;
  for (const auto& m : mirrors) {
    for (const auto& e : m.endpoints) {
      if (!isUpstream(m, e)) continue;
      const std::string how = brokenPath(m, e);
      if (!how.empty()) {
        MirrorFinding f;
        f.check = "broken-fallback";
        f.source = m.source;
        f.line = e.line != 0 ? e.line : m.line;
        std::string fix;
        if (m.upstreamLast) {
          fix = "remove the explicit upstream endpoint " + e.url + "; the runtime already " +
                "falls back to " + m.registry + " (with the right /v2 path) after the mirrors";
        } else if (m.format == Format::Talos && m.where.starts_with("machine.")) {
          fix = "remove " + e.url + " and " + m.noFallbackBecause + " (the runtime then falls " +
                "back to " + m.registry + " itself), or move the mirror to a Talos 1.12 " +
                "RegistryMirrorConfig where overridePath is set per endpoint";
        } else if (m.format == Format::Crio) {
          fix = "drop the path from that location (CRI-O adds the image name itself)";
        } else {
          fix = "list the upstream as " + (e.scheme.empty() ? std::string("https") : e.scheme) +
                "://" + e.host + " without a path and without override_path";
        }
        f.message = describe(m) + ": endpoint " + e.url + " is the upstream registry itself, " +
                    "but " + how + ". The registry answers 404 for every image there, which " +
                    "containerd reads as \"image not found\": the fallback the endpoint was " +
                    "meant to be never delivers an image, and when the mirrors before it are " +
                    "down nothing can pull (in the seed incident not even the mirror's own " +
                    "Harbor pods). Fix: " + fix + ".";
        f.warning = m.registry + ": upstream endpoint " + e.host + " 404s (wrong path); remove it";
        if (f.warning.size() > kWarningRoom) f.warning = m.registry + ": upstream endpoint 404s";
        out.push_back(std::move(f));
        continue;
      }
      if (!e.resolve) {
        MirrorFinding f;
        f.check = "broken-fallback";
        f.source = m.source;
        f.line = e.line != 0 ? e.line : m.line;
        f.message = describe(m) + ": endpoint " + e.url + " is the upstream registry, but " +
                    (m.format == Format::Crio ? std::string("it is used for digest pulls only")
                                              : std::string("its capabilities lack \"resolve\"")) +
                    ", so a pull by tag (image:1.2) never reaches it: when the mirrors are " +
                    "down, tag pulls fail although the upstream is up. Fix: give it " +
                    (m.format == Format::Crio ? "pull-from-mirror = \"all\""
                                              : "capabilities = [\"pull\", \"resolve\"]") +
                    ", or remove it and let the runtime fall back to " + m.registry + " itself.";
        f.warning = m.registry + ": upstream endpoint " + e.host + " cannot resolve tags";
        if (f.warning.size() > kWarningRoom)
          f.warning = m.registry + ": fallback cannot resolve tags";
        out.push_back(std::move(f));
      }
    }
    // No endpoint may resolve a tag, and the upstream is not tried last: tag pulls never work.
    const bool anyResolve = std::any_of(m.endpoints.begin(), m.endpoints.end(),
                                        [](const Endpoint& e) { return e.resolve; });
    if (!m.upstreamLast && !m.endpoints.empty() && !anyResolve) {
      MirrorFinding f;
      f.check = "broken-fallback";
      f.source = m.source;
      f.line = m.line;
      f.message = describe(m) + ": no endpoint may resolve a tag (" +
                  (m.format == Format::Crio ? std::string("mirrors are digest-only")
                                            : std::string("none has the \"resolve\" capability")) +
                  ") and " + noFallbackText(m) +
                  ", so every pull by tag fails. Fix: " + fixNoFallback(m) + ".";
      f.warning = m.registry + " mirror: no endpoint resolves tags and no fallback";
      out.push_back(std::move(f));
    }
  }
  return out;
}

std::vector<MirrorFinding> checkClusterDns(const std::vector<Mirror>& mirrors) {
  std::vector<MirrorFinding> out;
  for (const auto& m : mirrors) {
    for (const auto& e : m.endpoints) {
      const auto [host, port] = hostAndPort(e.host);
      if (!clusterDnsName(host)) continue;
      MirrorFinding f;
      f.check = "cluster-dns";
      f.source = m.source;
      f.line = e.line != 0 ? e.line : m.line;
      f.message = describe(m) + ": endpoint " + e.url + " is a cluster DNS name, but " +
                  (m.format == Format::Crio ? "CRI-O" : "containerd") +
                  " runs on the node and resolves names with the node's resolver, not the " +
                  "cluster DNS: on most nodes the lookup fails and every pull through this " +
                  "endpoint " +
                  (m.upstreamLast ? "waits for the failed lookup before falling back" : "fails") +
                  ". Fix: use the Service's ClusterIP, a NodePort on 127.0.0.1, or a name the "
                  "node's DNS knows.";
      f.warning = m.registry + ": node cannot resolve " + host;
      if (f.warning.size() > kWarningRoom)
        f.warning = m.registry + ": node cannot resolve a *.svc endpoint";
      out.push_back(std::move(f));
    }
  }
  return out;
}

bool hasWorkingFallback(const Mirror& m, const CheckOptions& opts) {
  bool fallback = m.upstreamLast;
  for (const auto& e : m.endpoints) {
    if (isUpstream(m, e)) {
      if (!brokenPath(m, e).empty()) return false;  // the seed: it 404s instead
      if (e.resolve) fallback = true;
    } else if (inClusterReason(e.host, opts).empty()) {
      fallback = true;  // a registry outside the cluster still serves
    }
  }
  return fallback;
}

std::string imageRegistry(const std::string& image) {
  const auto slash = image.find('/');
  if (slash == std::string::npos) return "docker.io";
  const std::string first = image.substr(0, slash);
  if (first.find('.') != std::string::npos || first.find(':') != std::string::npos ||
      first == "localhost")
    return first == "index.docker.io" || first == "registry-1.docker.io" ? "docker.io" : first;
  return "docker.io";
}

namespace {

std::string textOf(const json& obj, const char* pointer) { return k8s::str(obj, pointer); }

/// The Services an endpoint reaches: by ClusterIP (port unspecified or one of the Service's),
/// by `<name>.<namespace>.svc...` name, or by NodePort on a loopback or node address.
std::vector<const json*> servicesBehind(const Endpoint& e,
                                        const std::vector<const json*>& services) {
  // Named copies, not structured bindings: the lambda below uses them (clang 14 cannot capture
  // bindings).
  const auto hp = hostAndPort(e.host);
  const std::string host = hp.first;
  const long port = hp.second;
  std::vector<const json*> out;
  for (const json* svcPtr : services) {
    const json& svc = *svcPtr;
    const std::string name = textOf(svc, "/metadata/name");
    const std::string ns = textOf(svc, "/metadata/namespace");
    const json& ports = svc.contains("spec") && svc["spec"].is_object() &&
                                svc["spec"].contains("ports") && svc["spec"]["ports"].is_array()
                            ? svc["spec"]["ports"]
                            : json::array();
    const auto hasPort = [&](const char* key) {
      for (const auto& p : ports)
        if (p.is_object() && p.contains(key) && p[key].is_number_integer() &&
            p[key].get<long>() == port)
          return true;
      return false;
    };
    bool match = false;
    if (!name.empty() && (host.rfind(name + "." + ns + ".svc", 0) == 0)) {
      match = true;
    } else if (!host.empty() && host == textOf(svc, "/spec/clusterIP")) {
      match = port < 0 || hasPort("port");
    } else if (port >= 30000 && port <= 32767 &&
               (host == "localhost" || inCidr(host, "127.0.0.0/8") || privateIp(host))) {
      match = hasPort("nodePort");
    }
    if (match) out.push_back(svcPtr);
  }
  return out;
}

bool selects(const json& selector, const json& pod) {
  if (!selector.is_object() || selector.empty()) return false;
  const json& labels =
      pod.contains("metadata") && pod["metadata"].is_object() && pod["metadata"].contains("labels")
          ? pod["metadata"]["labels"]
          : json::object();
  for (const auto& [k, v] : selector.items())
    if (!labels.is_object() || !labels.contains(k) || labels[k] != v) return false;
  return true;
}

std::vector<std::string> imagesOf(const json& pod) {
  std::vector<std::string> out;
  if (!pod.contains("spec") || !pod["spec"].is_object()) return out;
  for (const char* list : {"initContainers", "containers"}) {
    const json& cs = pod["spec"].value(list, json::array());
    if (!cs.is_array()) continue;
    for (const auto& c : cs)
      if (c.is_object() && c.contains("image") && c["image"].is_string())
        out.push_back(c["image"].get<std::string>());
  }
  return out;
}

}  // namespace

std::vector<MirrorFinding> checkSelfPull(const std::vector<Mirror>& mirrors,
                                         const std::vector<const json*>& services,
                                         const std::vector<const json*>& pods,
                                         const CheckOptions& opts) {
  std::vector<MirrorFinding> out;
  for (const auto& m : mirrors) {
    if (hasWorkingFallback(m, opts)) continue;
    std::vector<std::string> hits;
    std::string endpoint;
    for (const auto& e : m.endpoints) {
      if (isUpstream(m, e)) continue;
      for (const json* svc : servicesBehind(e, services)) {
        const std::string ns = textOf(*svc, "/metadata/namespace");
        const json selector = svc->contains("spec") && (*svc)["spec"].is_object()
                                  ? (*svc)["spec"].value("selector", json::object())
                                  : json::object();
        for (const json* podPtr : pods) {
          const json& pod = *podPtr;
          if (textOf(pod, "/metadata/namespace") != ns || !selects(selector, pod)) continue;
          for (const auto& image : imagesOf(pod)) {
            const std::string reg = imageRegistry(image);
            if (m.registry != "*" && m.registry != "_default" && reg != m.registry) continue;
            if (endpoint.empty())
              endpoint = e.url + " (Service " + ns + "/" + textOf(*svc, "/metadata/name") + ")";
            hits.push_back("Pod " + ns + "/" + textOf(pod, "/metadata/name") + " runs " + image);
            break;
          }
        }
      }
    }
    if (hits.empty()) continue;
    std::string list;
    const size_t shown = std::min<size_t>(hits.size(), 5);
    for (size_t i = 0; i < shown; ++i) list += (i == 0 ? "" : "; ") + hits[i];
    if (hits.size() > shown) list += "; and " + std::to_string(hits.size() - shown) + " more";
    MirrorFinding f;
    f.check = "self-pull";
    f.source = m.source;
    f.line = m.line;
    f.message = describe(m) + ": endpoint " + endpoint + " is served by Pods whose own images " +
                "come from " + m.registry + " through this same mirror (" + list + "), and " +
                "the mirror has no working fallback (" +
                (m.noFallbackBecause.empty() ? "the upstream endpoint listed cannot serve"
                                             : m.noFallbackBecause) +
                "). Once those Pods are down (a drained node, an upgrade), a node that must pull " +
                "their images can only ask the registry that is down: it cannot start again, " +
                "and nothing else pulls from " + m.registry + " either. Fix: keep a working " +
                "fallback (" + fixNoFallback(m) + "), or pull the registry's own images from " +
                "elsewhere (another registry, or images preloaded on the nodes).";
    f.warning = m.registry + " mirror: its registry's own Pods pull through it, no fallback";
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace stateguard::registry
