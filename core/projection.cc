#include "core/projection.h"

#include <atomic>

namespace stateguard {

namespace {

std::atomic<bool> enabled{true};

/// Keeps only `keys` of an object (nothing when it is not one).
void keepOnly(json& object, std::initializer_list<const char*> keys) {
  if (!object.is_object()) return;
  json kept = json::object();
  for (const char* key : keys) {
    auto it = object.find(key);
    if (it != object.end()) kept[key] = std::move(*it);
  }
  object = std::move(kept);
}

void projectPod(json& pod) {
  keepOnly(pod, {"apiVersion", "kind", "metadata", "spec", "status"});
  if (auto meta = pod.find("metadata"); meta != pod.end()) {
    // uid and deletionTimestamp: a claim whose owner Pod is gone (webhook/controllers.cc).
    keepOnly(*meta, {"name", "namespace", "uid", "labels", "ownerReferences", "deletionTimestamp"});
    if (auto owners = meta->find("ownerReferences"); owners != meta->end() && owners->is_array()) {
      for (auto& o : *owners) keepOnly(o, {"apiVersion", "kind", "name", "uid", "controller"});
    }
  }
  if (auto spec = pod.find("spec"); spec != pod.end() && spec->is_object()) {
    keepOnly(*spec, {"volumes", "containers", "initContainers", "nodeName"});
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
  if (auto status = pod.find("status"); status != pod.end()) keepOnly(*status, {"phase"});
}

}  // namespace

void setCacheProjection(bool on) { enabled.store(on); }

void projectForCache(const std::string& kind, json& object) {
  if (!enabled.load(std::memory_order_relaxed) || !object.is_object()) return;
  if (auto meta = object.find("metadata"); meta != object.end() && meta->is_object()) {
    meta->erase("managedFields");
    if (auto ann = meta->find("annotations"); ann != meta->end() && ann->is_object()) {
      ann->erase("kubectl.kubernetes.io/last-applied-configuration");
      if (ann->empty()) meta->erase("annotations");
    }
  }
  if (kind == "Pod") projectPod(object);
}

}  // namespace stateguard
