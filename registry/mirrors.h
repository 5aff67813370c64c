#pragma once
// Registry mirror configurations in one normalised model: for each upstream registry, the
// endpoints a node's container runtime tries in order (URL, path handling, capabilities) and
// whether it tries the upstream registry last. One parser per format (Talos machine config and
// RegistryMirrorConfig, containerd hosts.toml, k3s/RKE2 registries.yaml, CRI-O registries.conf)
// builds it; the checks in registry/checks.h run on it for the webhook and stateguardctl lint.

#include <string>
#include <string_view>
#include <vector>

#include "core/json_yaml.h"
#include "core/result.h"

namespace stateguard::registry {

/// Which runtime configuration a mirror came from (its messages say what that runtime does).
enum class Format { Talos, Containerd, K3s, Crio };

/// "Talos", "containerd", "k3s/RKE2", "CRI-O".
const char* formatName(Format f);

/// One place the runtime sends a pull to.
struct Endpoint {
  std::string url;     ///< as written ("https://harbor.example/v2/proxy", "mirror:5000/ns")
  std::string scheme;  ///< "https", "http", or "" (CRI-O locations have none)
  std::string host;    ///< "host[:port]", lower case
  std::string path;    ///< URL path as written, "" when none
  /// The path is the registry API root: the runtime does not append /v2.
  bool overridePath = false;
  bool pull = true;
  bool resolve = true;  ///< may turn a tag into a digest
  /// containerd `server`, the endpoint Talos moves into `server` with skipFallback, or CRI-O's
  /// primary location: the last place tried, in place of the upstream registry.
  bool isServer = false;
  size_t line = 0;  ///< 1-based line in the source, 0 unknown
};

/// The mirror configuration of one upstream registry.
struct Mirror {
  Format format = Format::Containerd;
  std::string registry;             ///< upstream name: "docker.io", "ghcr.io", "*" (every registry)
  std::vector<Endpoint> endpoints;  ///< in the order the runtime tries them
  /// The runtime tries the upstream registry itself after every endpoint failed.
  bool upstreamLast = true;
  /// Why the upstream is not tried last ("skipFallback: true"), "" when it is.
  std::string noFallbackBecause;
  std::string where;   ///< "machine.registries.mirrors.docker.io", "hosts.d/docker.io/hosts.toml"
  std::string source;  ///< file name or Kubernetes object and key
  size_t line = 0;
};

/// The formats a file or ConfigMap key can hold.
enum class FileKind { Unknown, Talos, HostsToml, K3sRegistries, CrioConf };

/// "Talos machine config", "containerd hosts.toml", "k3s registries.yaml", "CRI-O registries.conf".
const char* fileKindName(FileKind k);

/// Guesses the format from a file or key name: hosts.toml, registries.yaml, registries.conf,
/// *.conf; Unknown for anything else (callers then sniff the content with sniffKind()).
FileKind kindFromName(std::string_view name);
/// Guesses the format from content: Talos (a top-level `machine:`, or
/// `kind: RegistryMirrorConfig`), k3s (`mirrors:` at the top), hosts.toml (`[host.` or `server =`),
/// registries.conf (`[[registry]]`). Unknown when none fits.
FileKind sniffKind(std::string_view text);

/// Talos machine config documents: legacy `machine.registries.mirrors` and Talos 1.12+
/// `RegistryMirrorConfig` documents (same name replaces the legacy entry). Other documents are
/// ignored. `lines`: start line of each document, as parseDocuments() gives them.
std::vector<Mirror> fromTalosDocuments(const std::vector<json>& docs,
                                       const std::vector<size_t>& lines, const std::string& source);
/// Parses Talos YAML text (multi-document) and reads its mirrors.
Result<std::vector<Mirror>> parseTalos(std::string_view text, const std::string& source);

/// A containerd hosts.toml. `registry` is the upstream the file configures (the `<host>` of
/// `hosts.d/<host>/hosts.toml`; "_default" for every registry); "" when unknown, then taken from
/// `server`.
Result<std::vector<Mirror>> parseHostsToml(std::string_view text, const std::string& source,
                                           const std::string& registry);

/// k3s/RKE2 registries.yaml content (`mirrors.<host>.endpoint[]`), already parsed.
/// `defaultEndpointDisabled`: k3s `disable-default-registry-endpoint`.
std::vector<Mirror> fromK3sRegistries(const json& doc, bool defaultEndpointDisabled,
                                      const std::string& source, const std::string& field,
                                      size_t line);
Result<std::vector<Mirror>> parseK3sRegistries(std::string_view text, const std::string& source,
                                               bool defaultEndpointDisabled);

/// k3s/RKE2 `disable-default-registry-endpoint` (true or "true") in a config.yaml text; false when
/// absent or unreadable.
bool k3sDefaultEndpointDisabled(std::string_view configYaml);

/// CRI-O / containers registries.conf (v2: `[[registry]]`, `[[registry.mirror]]`).
Result<std::vector<Mirror>> parseCrioConf(std::string_view text, const std::string& source);

/// Parses `text` as `kind` (sniffed when Unknown). Files of no known format give an error.
/// `registry`: for hosts.toml, the upstream host when known. `k3sDefaultDisabled`: for
/// registries.yaml.
Result<std::vector<Mirror>> parseMirrorText(std::string_view text, const std::string& source,
                                            FileKind kind, const std::string& registry = "",
                                            bool k3sDefaultDisabled = false);

/// Splits a URL or CRI-O location into scheme, lower-case host[:port] and path.
Endpoint splitUrl(const std::string& url);

/// True when `host` ("registry-1.docker.io:443") is the registry `registry` itself
/// ("docker.io" and its API host registry-1.docker.io, index.docker.io). For "*" or "_default",
/// well-known public registries count.
bool isUpstreamHost(const std::string& registry, const std::string& host);

/// The API host of a registry name ("docker.io" -> "registry-1.docker.io").
std::string apiHost(const std::string& registry);

}  // namespace stateguard::registry
