#pragma once
// stateguardctl lint on registry mirror configurations that are not Kubernetes objects: Talos
// machine configs and RegistryMirrorConfig documents, containerd hosts.toml (and
// hosts.d/<host>/hosts.toml trees), k3s/RKE2 registries.yaml, CRI-O registries.conf. The same
// checks as the webhook's registry-* rules (registry/checks.h), with the policy's modes.

#include <string>
#include <vector>

#include "core/policy.h"

namespace stateguard::cli {

/// One finding on a mirror configuration file.
struct MirrorLintFinding {
  size_t line = 0;
  std::string object;  ///< "docker.io mirror (machine.registries.mirrors.docker.io)"
  std::string rule;
  std::string level;  ///< "error" (the rule enforces) | "warning"
  std::string message;
};

/// The outcome for one file.
struct MirrorLintResult {
  bool handled = false;  ///< the file is a mirror configuration (else: read it as manifests)
  std::string error;     ///< unreadable: "file:line[:column]: what"
  size_t mirrors = 0;
  std::vector<MirrorLintFinding> findings;
};

/// True for file names a directory walk must pick up besides *.yaml/*.yml/*.json: hosts.toml,
/// registries.conf.
bool isMirrorFileName(const std::string& name);

/// Lints `text` (read from `file`) when it is a mirror configuration, by name or by content.
MirrorLintResult lintMirrorFile(const std::string& file, const std::string& text,
                                const Policy& policy);

}  // namespace stateguard::cli
