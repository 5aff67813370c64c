// The parsers that build the mirror model (registry/mirrors.h), one per format. YAML goes
// through core/json_yaml (yaml-cpp); TOML through toml++ (Debian libtomlplusplus-dev), which
// reports the line and column of every node and of parse errors.

#include "registry/mirrors.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <map>

namespace stateguard::registry {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

/// A string field, "" when absent or not a string (input from outside: any type may be there).
std::string textAt(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

bool boolAt(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return it != obj.end() && it->is_boolean() && it->get<bool>();
}

/// k3s: a path other than "", "/" or "/v2" makes the path the API root.
bool k3sOverrides(const std::string& path) {
  return !(path.empty() || path == "/" || path == "/v2" || path == "/v2/");
}

/// Where a TOML node starts.
size_t lineOf(const toml::node& n) { return static_cast<size_t>(n.source().begin.line); }

/// The TOML parse error as "file:line:column: what".
Error tomlError(const toml::parse_error& e, const std::string& source) {
  return makeError(source + ":" + std::to_string(e.source().begin.line) + ":" +
                   std::to_string(e.source().begin.column) +
                   ": invalid TOML: " + std::string(e.description()));
}

/// Talos `skipFallback: true` (1.9+): no fallback to the upstream, and Talos moves the LAST
/// endpoint into containerd's `server`, so nothing is tried after it.
void skipFallback(Mirror& out) {
  out.upstreamLast = false;
  out.noFallbackBecause = "skipFallback: true";
  if (!out.endpoints.empty()) out.endpoints.back().isServer = true;
}

/// Talos legacy `machine.registries.mirrors.<name>`.
Mirror talosLegacy(const std::string& name, const json& m, const std::string& source, size_t line) {
  Mirror out;
  out.format = Format::Talos;
  out.registry = name;
  out.where = "machine.registries.mirrors." + name;
  out.source = source;
  out.line = line;
  // ONE overridePath per mirror, applied to every endpoint of its list.
  const bool override = boolAt(m, "overridePath");
  if (m.contains("endpoints") && m["endpoints"].is_array()) {
    for (const auto& u : m["endpoints"]) {
      if (!u.is_string()) continue;
      Endpoint e = splitUrl(u.get<std::string>());
      e.overridePath = override;
      e.line = line;
      out.endpoints.push_back(std::move(e));
    }
  }
  if (boolAt(m, "skipFallback")) skipFallback(out);
  return out;
}

/// Talos 1.12+ `RegistryMirrorConfig` document.
Mirror talosMirrorDoc(const json& doc, const std::string& source, size_t line) {
  Mirror out;
  out.format = Format::Talos;
  out.registry = textAt(doc, "name");
  out.where = "RegistryMirrorConfig " + out.registry;
  out.source = source;
  out.line = line;
  if (doc.contains("endpoints") && doc["endpoints"].is_array()) {
    for (const auto& ep : doc["endpoints"]) {
      if (!ep.is_object() || !ep.contains("url") || !ep["url"].is_string()) continue;
      Endpoint e = splitUrl(ep["url"].get<std::string>());
      e.overridePath = boolAt(ep, "overridePath");  // per endpoint here
      e.line = line;
      out.endpoints.push_back(std::move(e));
    }
  }
  if (boolAt(doc, "skipFallback")) skipFallback(out);
  return out;
}

/// The strings of a TOML array (or a lone string).
std::vector<std::string> tomlStrings(const toml::node* n) {
  std::vector<std::string> out;
  if (n == nullptr) return out;
  if (auto s = n->value<std::string>()) return {*s};
  if (const auto* a = n->as_array()) {
    for (const auto& item : *a)
      if (auto s = item.value<std::string>()) out.push_back(*s);
  }
  return out;
}

/// Applies containerd's per-host settings (capabilities, override_path) to `e`.
void hostSettings(const toml::table& t, Endpoint& e) {
  if (const toml::node* caps = t.get("capabilities")) {
    const auto list = tomlStrings(caps);
    e.pull = std::find(list.begin(), list.end(), "pull") != list.end();
    e.resolve = std::find(list.begin(), list.end(), "resolve") != list.end();
  }
  if (auto o = t["override_path"].value<bool>()) e.overridePath = *o;
}

}  // namespace

const char* formatName(Format f) {
  switch (f) {
    case Format::Talos:
      return "Talos";
    case Format::Containerd:
      return "containerd";
    case Format::K3s:
      return "k3s/RKE2";
    case Format::Crio:
      return "CRI-O";
  }
  return "?";
}

Endpoint splitUrl(const std::string& url) {
  Endpoint e;
  e.url = url;
  std::string rest = url;
  const auto scheme = rest.find("://");
  if (scheme != std::string::npos) {
    e.scheme = lower(rest.substr(0, scheme));
    rest = rest.substr(scheme + 3);
  }
  const auto slash = rest.find('/');
  e.host = lower(rest.substr(0, slash));
  if (slash != std::string::npos) e.path = rest.substr(slash);
  return e;
}

std::string apiHost(const std::string& registry) {
  return registry == "docker.io" ? "registry-1.docker.io" : registry;
}

bool isUpstreamHost(const std::string& registry, const std::string& hostPort) {
  std::string host = lower(hostPort);
  if (host.ends_with(":443")) host.resize(host.size() - 4);
  static const std::vector<std::string> kDocker = {"docker.io", "registry-1.docker.io",
                                                   "index.docker.io"};
  const auto isDocker = [&] {
    return std::find(kDocker.begin(), kDocker.end(), host) != kDocker.end();
  };
  if (registry == "*" || registry == "_default" || registry.empty()) {
    static const std::vector<std::string> kPublic = {
        "ghcr.io",           "quay.io",        "registry.k8s.io",     "k8s.gcr.io",       "gcr.io",
        "mcr.microsoft.com", "public.ecr.aws", "registry.gitlab.com", "docker.elastic.co"};
    return isDocker() || std::find(kPublic.begin(), kPublic.end(), host) != kPublic.end();
  }
  if (lower(registry) == "docker.io") return isDocker();
  return host == lower(registry);
}

FileKind kindFromName(std::string_view name) {
  const auto slash = name.rfind('/');
  const std::string_view base = slash == std::string_view::npos ? name : name.substr(slash + 1);
  if (base == "hosts.toml" || base.ends_with(".hosts.toml")) return FileKind::HostsToml;
  if (base == "registries.yaml" || base == "registries.yml") return FileKind::K3sRegistries;
  if (base == "registries.conf" || base.ends_with(".conf")) return FileKind::CrioConf;
  return FileKind::Unknown;
}

FileKind sniffKind(std::string_view text) {
  // Line starts only: cheap, and good enough to choose a parser (which then says what is wrong).
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.starts_with("kind: RegistryMirrorConfig")) return FileKind::Talos;
    if (line.starts_with("machine:")) return FileKind::Talos;
    if (line.starts_with("[[registry]]")) return FileKind::CrioConf;
    if (line.starts_with("[host.") || line.starts_with("server =") || line.starts_with("server="))
      return FileKind::HostsToml;
    if (line.starts_with("mirrors:")) return FileKind::K3sRegistries;
  }
  return FileKind::Unknown;
}

const char* fileKindName(FileKind k) {
  switch (k) {
    case FileKind::Talos:
      return "Talos machine config";
    case FileKind::HostsToml:
      return "containerd hosts.toml";
    case FileKind::K3sRegistries:
      return "k3s registries.yaml";
    case FileKind::CrioConf:
      return "CRI-O registries.conf";
    case FileKind::Unknown:
      break;
  }
  return "unknown";
}

std::vector<Mirror> fromTalosDocuments(const std::vector<json>& docs,
                                       const std::vector<size_t>& lines,
                                       const std::string& source) {
  std::vector<Mirror> legacy;
  std::vector<Mirror> documents;
  for (size_t i = 0; i < docs.size(); ++i) {
    const json& doc = docs[i];
    const size_t line = i < lines.size() ? lines[i] : 0;
    if (!doc.is_object()) continue;
    if (textAt(doc, "kind") == "RegistryMirrorConfig") {
      documents.push_back(talosMirrorDoc(doc, source, line));
      continue;
    }
    const json* mirrors = nullptr;
    if (doc.contains("machine") && doc["machine"].is_object() &&
        doc["machine"].contains("registries") && doc["machine"]["registries"].is_object() &&
        doc["machine"]["registries"].contains("mirrors"))
      mirrors = &doc["machine"]["registries"]["mirrors"];
    if (mirrors == nullptr || !mirrors->is_object()) continue;
    for (const auto& [name, m] : mirrors->items()) {
      if (m.is_object()) legacy.push_back(talosLegacy(name, m, source, line));
    }
  }
  // A RegistryMirrorConfig replaces the legacy entry of the same name.
  std::vector<Mirror> out;
  for (auto& m : legacy) {
    const bool replaced = std::any_of(documents.begin(), documents.end(),
                                      [&](const Mirror& d) { return d.registry == m.registry; });
    if (!replaced) out.push_back(std::move(m));
  }
  for (auto& d : documents) out.push_back(std::move(d));
  return out;
}

Result<std::vector<Mirror>> parseTalos(std::string_view text, const std::string& source) {
  std::vector<size_t> lines;
  auto docs = parseDocuments(text, source, &lines);
  if (!docs.ok()) return makeError(docs.error());
  return fromTalosDocuments(docs.value(), lines, source);
}

Result<std::vector<Mirror>> parseHostsToml(std::string_view text, const std::string& source,
                                           const std::string& registry) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return tomlError(e, source);
  }
  Mirror m;
  m.format = Format::Containerd;
  m.source = source;
  m.where = registry.empty() ? source : "hosts.d/" + registry + "/hosts.toml";
  m.line = 1;
  std::string server;
  size_t serverLine = 0;
  if (const toml::node* s = root.get("server")) {
    if (auto v = s->value<std::string>()) {
      server = *v;
      serverLine = lineOf(*s);
    } else {
      return makeError(source + ":" + std::to_string(lineOf(*s)) + ": server must be a string");
    }
  }
  m.registry = !registry.empty() ? registry : splitUrl(server).host;
  if (const toml::node* hostNode = root.get("host")) {
    const toml::table* hosts = hostNode->as_table();
    if (hosts == nullptr)
      return makeError(source + ":" + std::to_string(lineOf(*hostNode)) +
                       ": host must be a table of [host.\"URL\"] tables");
    // toml++ keeps keys sorted; containerd tries hosts in file order.
    std::vector<std::pair<size_t, Endpoint>> ordered;
    for (const auto& [key, value] : *hosts) {
      Endpoint e = splitUrl(std::string(key.str()));
      e.line = static_cast<size_t>(key.source().begin.line);
      if (e.line == 0) e.line = lineOf(value);
      if (const auto* t = value.as_table()) hostSettings(*t, e);
      ordered.emplace_back(e.line, std::move(e));
    }
    std::stable_sort(ordered.begin(), ordered.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [line, e] : ordered) m.endpoints.push_back(std::move(e));
  }
  if (!server.empty()) {
    // `server` replaces the upstream as the last resort; the top-level settings apply to it.
    Endpoint e = splitUrl(server);
    hostSettings(root, e);
    e.isServer = true;
    e.line = serverLine;
    m.endpoints.push_back(std::move(e));
    m.upstreamLast = false;
    m.noFallbackBecause = "server = \"" + server + "\"";
  }
  return std::vector<Mirror>{std::move(m)};
}

std::vector<Mirror> fromK3sRegistries(const json& doc, bool defaultEndpointDisabled,
                                      const std::string& source, const std::string& field,
                                      size_t line) {
  std::vector<Mirror> out;
  if (!doc.is_object() || !doc.contains("mirrors") || !doc["mirrors"].is_object()) return out;
  for (const auto& [name, cfg] : doc["mirrors"].items()) {
    Mirror m;
    m.format = Format::K3s;
    m.registry = name;
    m.where = field + "mirrors." + name;
    m.source = source;
    m.line = line;
    const json endpoints = cfg.is_object() ? cfg.value("endpoint", json::array()) : json();
    if (endpoints.is_array()) {
      for (const auto& u : endpoints) {
        if (!u.is_string()) continue;
        Endpoint e = splitUrl(u.get<std::string>());
        e.overridePath = k3sOverrides(e.path);
        e.line = line;
        m.endpoints.push_back(std::move(e));
      }
    }
    if (defaultEndpointDisabled) {
      m.upstreamLast = false;
      m.noFallbackBecause = "disable-default-registry-endpoint: true";
    }
    out.push_back(std::move(m));
  }
  return out;
}

Result<std::vector<Mirror>> parseK3sRegistries(std::string_view text, const std::string& source,
                                               bool defaultEndpointDisabled) {
  std::vector<size_t> lines;
  auto docs = parseDocuments(text, source, &lines);
  if (!docs.ok()) return makeError(docs.error());
  std::vector<Mirror> out;
  for (size_t i = 0; i < docs->size(); ++i) {
    auto ms = fromK3sRegistries((*docs)[i], defaultEndpointDisabled, source, "",
                                i < lines.size() ? lines[i] : 0);
    for (auto& m : ms) out.push_back(std::move(m));
  }
  return out;
}

bool k3sDefaultEndpointDisabled(std::string_view configYaml) {
  auto docs = parseDocuments(configYaml, "config.yaml");
  if (!docs.ok()) return false;
  for (const auto& d : docs.value()) {
    if (!d.is_object()) continue;
    const auto it = d.find("disable-default-registry-endpoint");
    if (it != d.end() && ((it->is_boolean() && it->get<bool>()) ||
                          (it->is_string() && it->get<std::string>() == "true")))
      return true;
  }
  return false;
}

Result<std::vector<Mirror>> parseCrioConf(std::string_view text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return tomlError(e, source);
  }
  std::vector<Mirror> out;
  const toml::array* regs = root["registry"].as_array();
  if (regs == nullptr) return out;
  for (const auto& regNode : *regs) {
    const toml::table* reg = regNode.as_table();
    if (reg == nullptr) continue;
    const std::string location = (*reg)["location"].value_or(std::string());
    std::string prefix = (*reg)["prefix"].value_or(location);
    Mirror m;
    m.format = Format::Crio;
    m.registry = splitUrl(prefix).host;
    m.where = "[[registry]] prefix = \"" + prefix + "\"";
    m.source = source;
    m.line = lineOf(*reg);
    const bool digestOnly = (*reg)["mirror-by-digest-only"].value_or(false);
    if (const toml::array* mirrors = (*reg)["mirror"].as_array()) {
      for (const auto& mn : *mirrors) {
        const toml::table* mt = mn.as_table();
        if (mt == nullptr) continue;
        Endpoint e = splitUrl((*mt)["location"].value_or(std::string()));
        e.line = lineOf(*mt);
        const std::string pullFrom = (*mt)["pull-from-mirror"].value_or(std::string("all"));
        // A digest-only mirror never resolves a tag; CRI-O asks the next source.
        if (digestOnly || pullFrom == "digest-only") e.resolve = false;
        if (pullFrom == "tag-only") e.pull = true;
        m.endpoints.push_back(std::move(e));
      }
    }
    // After the mirrors CRI-O pulls from the primary location, unless the registry is blocked.
    m.upstreamLast = false;
    if ((*reg)["blocked"].value_or(false)) {
      m.noFallbackBecause = "blocked = true";
    } else {
      Endpoint e = splitUrl(location.empty() ? prefix : location);
      e.isServer = true;
      e.line = m.line;
      m.endpoints.push_back(std::move(e));
      m.noFallbackBecause = "";
    }
    out.push_back(std::move(m));
  }
  return out;
}

Result<std::vector<Mirror>> parseMirrorText(std::string_view text, const std::string& source,
                                            FileKind kind, const std::string& registry,
                                            bool k3sDefaultDisabled) {
  if (kind == FileKind::Unknown) kind = sniffKind(text);
  switch (kind) {
    case FileKind::Talos:
      return parseTalos(text, source);
    case FileKind::HostsToml:
      return parseHostsToml(text, source, registry);
    case FileKind::K3sRegistries:
      return parseK3sRegistries(text, source, k3sDefaultDisabled);
    case FileKind::CrioConf:
      return parseCrioConf(text, source);
    case FileKind::Unknown:
      break;
  }
  return makeError(source +
                   ": not a registry mirror configuration (Talos machine config, hosts.toml, "
                   "registries.yaml or registries.conf)");
}

}  // namespace stateguard::registry
