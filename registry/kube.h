#pragma once
// Registry mirror configurations carried by Kubernetes objects: ConfigMaps and Secrets holding
// one of the file formats, Cluster API Talos objects (TalosConfig, TalosConfigTemplate,
// TalosControlPlane) and Rancher provisioning.cattle.io/v1 Clusters.

#include <string>
#include <vector>

#include "registry/mirrors.h"

namespace stateguard::registry {

/// The label that marks a ConfigMap or Secret whose every key is a mirror configuration (keys are
/// otherwise chosen by name: hosts.toml, <host>.hosts.toml, registries.yaml, registries.conf,
/// controlplane.yaml, worker.yaml).
inline constexpr const char* kDefaultConfigLabel = "stateguard.io/registry-config";

/// What an object carries.
struct ObjectMirrors {
  bool carriesConfig = false;  ///< a key, patch or field held a mirror configuration
  std::vector<Mirror> mirrors;
  std::vector<std::string> errors;  ///< unreadable parts, with key and line
};

/// Reads the mirrors an object of `group` (the request's API group) carries. Cheap for objects
/// that carry none: key names and labels are looked at before anything is parsed.
ObjectMirrors mirrorsOfObject(const json& obj, const std::string& group,
                              const std::string& configLabel);

/// Decodes standard base64 (Secret data); nullopt-like empty result with ok=false on bad input.
Result<std::string> decodeBase64(const std::string& in);

}  // namespace stateguard::registry
