#pragma once
// Small accessors for Kubernetes objects held as JSON, and quantity helpers.

#include <optional>
#include <string>
#include <vector>

#include "core/json_yaml.h"

namespace stateguard::k8s {

/// metadata.name, metadata.namespace ("" when absent).
std::string name(const json& obj);
std::string namespaceOf(const json& obj);
std::string kind(const json& obj);
/// "namespace/name" or "name" for cluster-scoped objects.
std::string ref(const json& obj);

/// metadata.annotations[key], metadata.labels[key]; nullopt when absent.
std::optional<std::string> annotation(const json& obj, const std::string& key);
std::optional<std::string> label(const json& obj, const std::string& key);
std::vector<std::string> finalizers(const json& obj);

/// Value at a JSON pointer ("/spec/claimRef/name") as a string, "" when absent or not a string.
std::string str(const json& obj, const char* pointer);
/// Value at a JSON pointer, nullptr json when absent.
const json& at(const json& obj, const char* pointer);

/// PV facts the rules share.
std::string pvReclaimPolicy(const json& pv);  ///< "Delete" when unset (dynamic default)
std::string pvPhase(const json& pv);
std::string pvCapacity(const json& pv);      ///< spec.capacity.storage or "unknown size"
std::string pvStorageClass(const json& pv);  ///< spec.storageClassName or "(none)"
/// The backend volume a PV points to: CSI volumeHandle, or the in-tree source, for messages.
std::string pvBackendVolume(const json& pv);

}  // namespace stateguard::k8s
