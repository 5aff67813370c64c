#include "core/projection.h"

#include <algorithm>
#include <array>
#include <atomic>

namespace stateguard {

namespace {

std::atomic<bool> enabled{true};

// What a Pod keeps at each level; projectPod and cacheSkipsField read the same lists.
constexpr std::array<const char*, 5> kPodKeys = {"apiVersion", "kind", "metadata", "spec",
                                                 "status"};
// uid and deletionTimestamp: a claim whose owner Pod is gone (webhook/controllers.cc).
constexpr std::array<const char*, 6> kPodMetadataKeys = {
    "name", "namespace", "uid", "labels", "ownerReferences", "deletionTimestamp"};
constexpr std::array<const char*, 4> kPodSpecKeys = {"volumes", "containers", "initContainers",
                                                     "nodeName"};
constexpr std::array<const char*, 1> kPodStatusKeys = {"phase"};
constexpr const char* kLastApplied = "kubectl.kubernetes.io/last-applied-configuration";

template <size_t N>
bool listed(const std::array<const char*, N>& keys, std::string_view key) {
  return std::any_of(keys.begin(), keys.end(), [&](const char* k) { return key == k; });
}

/// Keeps only `keys` of an object (nothing when it is not one).
void keepOnly(json& object, std::span<const char* const> keys) {
  if (!object.is_object()) return;
  json kept = json::object();
  for (const char* key : keys) {
    auto it = object.find(key);
    if (it != object.end()) kept[key] = std::move(*it);
  }
  object = std::move(kept);
}
void keepOnly(json& object, std::initializer_list<const char*> keys) {
  keepOnly(object, std::span<const char* const>(keys.begin(), keys.size()));
}

void projectPod(json& pod) {
  keepOnly(pod, kPodKeys);
  if (auto meta = pod.find("metadata"); meta != pod.end()) {
    keepOnly(*meta, kPodMetadataKeys);
    if (auto owners = meta->find("ownerReferences"); owners != meta->end() && owners->is_array()) {
      for (auto& o : *owners) keepOnly(o, {"apiVersion", "kind", "name", "uid", "controller"});
    }
  }
  if (auto spec = pod.find("spec"); spec != pod.end() && spec->is_object()) {
    keepOnly(*spec, kPodSpecKeys);
    if (auto vols = spec->find("volumes"); vols != spec->end() && vols->is_array()) {
      json claims = json::array();
      for (auto& v : *vols) {
        if (!v.is_object() || !v.contains("persistentVolumeClaim")) continue;
        keepOnly(v, {"name", "persistentVolumeClaim"});
        claims.push_back(std::move(v));
      }
      *vols = std::move(claims);
    }
    for (const char* list : {"containers", "initContainers"}) {
      auto cs = spec->find(list);
      if (cs == spec->end() || !cs->is_array()) continue;
      // args: stateguardctl orphans finds a CSI provisioner's Pods by its --drivername.
      for (auto& c : *cs) keepOnly(c, {"name", "image", "args"});
    }
  }
  if (auto status = pod.find("status"); status != pod.end()) keepOnly(*status, kPodStatusKeys);
}

}  // namespace

void setCacheProjection(bool on) { enabled.store(on); }

void projectForCache(const std::string& kind, json& object) {
  if (!enabled.load(std::memory_order_relaxed) || !object.is_object()) return;
  if (auto meta = object.find("metadata"); meta != object.end() && meta->is_object()) {
    meta->erase("managedFields");
    if (auto ann = meta->find("annotations"); ann != meta->end() && ann->is_object()) {
      ann->erase(kLastApplied);
      if (ann->empty()) meta->erase("annotations");
    }
  }
  if (kind == "Pod") projectPod(object);
}

bool cacheSkipsField(const std::string& kind, std::span<const std::string_view> path) {
  if (!enabled.load(std::memory_order_relaxed) || path.empty()) return false;
  if (path.size() >= 2 && path[0] == "metadata") {
    if (path.size() == 2 && path[1] == "managedFields") return true;
    if (path.size() == 3 && path[1] == "annotations" && path[2] == kLastApplied) return true;
  }
  if (kind != "Pod") return false;
  if (path.size() == 1) return !listed(kPodKeys, path[0]);
  if (path.size() != 2) return false;
  if (path[0] == "metadata") return !listed(kPodMetadataKeys, path[1]);
  if (path[0] == "spec") return !listed(kPodSpecKeys, path[1]);
  if (path[0] == "status") return !listed(kPodStatusKeys, path[1]);
  return false;
}

}  // namespace stateguard
