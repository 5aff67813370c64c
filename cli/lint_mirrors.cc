// stateguardctl lint on registry mirror configuration files (lint_mirrors.h): format by name or
// content, the policy's modes for the registry-* rules, locations for YAML findings.

#include "cli/lint_mirrors.h"

#include <filesystem>

#include "core/json_yaml.h"
#include "registry/checks.h"
#include "registry/kube.h"

namespace stateguard::cli {
namespace {

std::string baseName(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

/// The registry a hosts.toml configures: the directory it sits in (`hosts.d/docker.io/`,
/// `certs.d/_default/`), or "" when that directory is not named like a registry host.
std::string hostsTomlRegistry(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().filename().string();
  if (dir == "_default" || dir.find('.') != std::string::npos ||
      dir.find(':') != std::string::npos || dir == "localhost")
    return dir;
  return "";
}

/// k3s `disable-default-registry-endpoint` in the config.yaml next to a registries.yaml
/// (/etc/rancher/k3s/ holds both).
bool siblingDisablesDefault(const std::string& path) {
  const auto config = std::filesystem::path(path).parent_path() / "config.yaml";
  std::error_code ec;
  if (path == "-" || !std::filesystem::exists(config, ec)) return false;
  auto text = readFile(config.string());
  if (!text.ok()) return false;
  return registry::k3sDefaultEndpointDisabled(text.value());
}

/// 1-based line of the first line at or after `from` that contains `needle`, else `from`.
size_t findLine(const std::string& text, const std::string& needle, size_t from) {
  size_t line = 1;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (line >= from &&
        std::string_view(text).substr(pos, end - pos).find(needle) != std::string_view::npos)
      return line;
    pos = end + 1;
    ++line;
  }
  return from;
}

}  // namespace

bool isMirrorFileName(const std::string& name) {
  const registry::FileKind k = registry::kindFromName(name);
  return k == registry::FileKind::HostsToml || name == "registries.conf";
}

MirrorLintResult lintMirrorFile(const std::string& file, const std::string& text,
                                const Policy& policy) {
  MirrorLintResult out;
  const std::string source = file == "-" ? "stdin" : file;
  if (baseName(file) == "config.yaml" && file != "-") {
    // k3s's own config beside a registries.yaml (/etc/rancher/k3s/): read with it, not alone.
    std::error_code ec;
    if (std::filesystem::exists(std::filesystem::path(file).parent_path() / "registries.yaml",
                                ec)) {
      out.handled = true;
      return out;
    }
  }
  registry::FileKind kind = registry::kindFromName(baseName(file));
  if (kind == registry::FileKind::Unknown) kind = registry::sniffKind(text);
  if (kind == registry::FileKind::Unknown) return out;
  out.handled = true;
  const std::string reg = kind == registry::FileKind::HostsToml ? hostsTomlRegistry(file) : "";
  const bool disabled = kind == registry::FileKind::K3sRegistries && siblingDisablesDefault(file);
  auto parsed = registry::parseMirrorText(text, source, kind, reg, disabled);
  if (!parsed.ok()) {
    out.error = parsed.error();
    return out;
  }
  std::vector<registry::Mirror> mirrors = std::move(parsed).value();
  out.mirrors = mirrors.size();
  // YAML locations: the parsers know where each document starts; point at the lines that name
  // the mirror and each endpoint.
  if (kind == registry::FileKind::Talos || kind == registry::FileKind::K3sRegistries) {
    for (auto& m : mirrors) {
      const size_t start = m.line == 0 ? 1 : m.line;
      m.line = findLine(text, m.registry == "*" ? "\"*\"" : m.registry, start);
      for (auto& e : m.endpoints) e.line = findLine(text, e.url, start);
    }
  }

  struct Check {
    const char* rule;
    std::vector<registry::MirrorFinding> findings;
  };
  const registry::CheckOptions opts =
      registry::optionsFromParams(policy.paramsOf("registry-no-fallback"));
  const Check checks[] = {
      {"registry-no-fallback", registry::checkNoFallback(mirrors, opts)},
      {"registry-broken-fallback", registry::checkBrokenFallback(mirrors)},
      {"registry-cluster-dns", registry::checkClusterDns(mirrors)},
  };
  for (const auto& c : checks) {
    const Mode mode = policy.modeOf(c.rule);
    if (mode == Mode::Off || mode == Mode::Audit) continue;
    for (const auto& f : c.findings) {
      out.findings.push_back({f.line, registry::fileKindName(kind), c.rule,
                              mode == Mode::Enforce ? "error" : "warning", f.message});
    }
  }
  return out;
}

}  // namespace stateguard::cli
