#include "webhook/controllers.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "core/k8s.h"

namespace stateguard {
namespace {

bool oneOf(const std::string& user, const std::vector<std::string>& identities) {
  return std::find(identities.begin(), identities.end(), user) != identities.end();
}

bool deleting(const json& obj) { return !k8s::str(obj, "/metadata/deletionTimestamp").empty(); }

bool sameAt(const json& a, const json& b, const char* pointer) {
  return k8s::at(a, pointer) == k8s::at(b, pointer);
}

/// The cached object, or when `pending(cached)` says the state the controller acts in has not
/// reached the cache, the live one: a lagging cache must not refuse a controller.
template <typename Pending>
ObjectPtr lookUp(const ClusterState& state, const std::string& kind, const std::string& ns,
                 const std::string& name, Pending pending) {
  ObjectPtr cached = state.get(kind, ns, name);
  if (!pending(cached)) return cached;
  auto live = state.liveView();
  if (!live) return cached;
  ObjectPtr fresh = live->get(kind, ns, name);
  return live->error().empty() ? fresh : cached;
}

/// pv-protection / pvc-protection: the finalizer goes from an object being deleted, and nothing
/// else changes.
std::optional<std::string> protectionFinalizer(const AdmissionRequest& req,
                                               const ControllerIdentities& ids) {
  const bool pv = req.kind == "PersistentVolume";
  if (!oneOf(req.user.username, pv ? ids.pvProtection : ids.pvcProtection)) return std::nullopt;
  const std::string finalizer = pv ? "kubernetes.io/pv-protection" : "kubernetes.io/pvc-protection";
  if (!deleting(req.oldObject)) return std::nullopt;
  std::vector<std::string> expected = k8s::finalizers(req.oldObject);
  auto it = std::find(expected.begin(), expected.end(), finalizer);
  if (it == expected.end()) return std::nullopt;
  expected.erase(it);
  if (k8s::finalizers(req.object) != expected) return std::nullopt;
  for (const char* p :
       {"/spec", "/metadata/annotations", "/metadata/labels", "/metadata/ownerReferences"}) {
    if (!sameAt(req.object, req.oldObject, p)) return std::nullopt;
  }
  return req.user.username + " removes " + finalizer + " from " + req.describe() +
         ", which is being deleted: its controller does so only once nothing " +
         (pv ? "is bound to it" : "uses it") + "; the deletion itself was judged";
}

/// The namespace controller empties a namespace that is being deleted.
std::optional<std::string> namespaceCleanup(const AdmissionRequest& req, const ClusterState& state,
                                            const ControllerIdentities& ids) {
  // A Namespace request carries its own name as namespace; the controller never deletes one.
  if (req.ns.empty() || req.kind == "Namespace" || !oneOf(req.user.username, ids.namespaceCleanup))
    return std::nullopt;
  auto terminating = [](const ObjectPtr& ns) {
    return ns && (deleting(*ns) || k8s::str(*ns, "/status/phase") == "Terminating");
  };
  ObjectPtr ns =
      lookUp(state, "Namespace", "", req.ns, [&](const ObjectPtr& o) { return !terminating(o); });
  if (!terminating(ns)) return std::nullopt;
  return req.user.username + " deletes " + req.describe() + " while emptying Namespace " + req.ns +
         ", which is being deleted; the namespace's deletion was judged";
}

/// The garbage collector deletes a claim whose every owner is a StatefulSet or a pod that is gone
/// (or being deleted, or replaced by another object of the same name).
std::optional<std::string> ownerlessClaim(const AdmissionRequest& req, const ClusterState& state,
                                          const ControllerIdentities& ids) {
  if (req.kind != "PersistentVolumeClaim" || !oneOf(req.user.username, ids.garbageCollector))
    return std::nullopt;
  const json& owners = k8s::at(req.oldObject, "/metadata/ownerReferences");
  if (!owners.is_array() || owners.empty()) return std::nullopt;
  std::vector<std::string> gone;
  for (const json& ref : owners) {
    const std::string kind = k8s::str(ref, "/kind");
    const std::string apiVersion = k8s::str(ref, "/apiVersion");
    const bool known =
        (kind == "StatefulSet" && apiVersion == "apps/v1") || (kind == "Pod" && apiVersion == "v1");
    if (!known) return std::nullopt;
    const std::string name = k8s::str(ref, "/name");
    const std::string uid = k8s::str(ref, "/uid");
    auto alive = [&](const ObjectPtr& o) {
      return o && !deleting(*o) && (uid.empty() || k8s::str(*o, "/metadata/uid") == uid);
    };
    if (alive(lookUp(state, kind, req.ns, name, alive))) return std::nullopt;
    gone.push_back(kind + " " + name);
  }
  std::string list;
  for (const auto& g : gone) list += (list.empty() ? "" : ", ") + g;
  return req.user.username + " deletes " + req.describe() + " because its owner (" + list +
         ") is gone; the owner's deletion or scale-down was judged";
}

/// The StatefulSet controller makes a StatefulSet (or one of its pods) the owner of a claim,
/// changing nothing else, because that StatefulSet's claim retention policy says Delete (which
/// statefulset-claims judged when it was set).
std::optional<std::string> retentionOwner(const AdmissionRequest& req, const ClusterState& state,
                                          const ControllerIdentities& ids) {
  if (req.kind != "PersistentVolumeClaim" || !oneOf(req.user.username, ids.statefulSet))
    return std::nullopt;
  for (const char* p :
       {"/spec", "/metadata/annotations", "/metadata/labels", "/metadata/finalizers"}) {
    if (!sameAt(req.object, req.oldObject, p)) return std::nullopt;
  }
  const json& before = k8s::at(req.oldObject, "/metadata/ownerReferences");
  const json& after = k8s::at(req.object, "/metadata/ownerReferences");
  if (!after.is_array() || after == before) return std::nullopt;
  auto retainsByDelete = [](const ObjectPtr& sts) {
    return sts &&
           (k8s::str(*sts, "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted") == "Delete" ||
            k8s::str(*sts, "/spec/persistentVolumeClaimRetentionPolicy/whenScaled") == "Delete");
  };
  for (const json& ref : after) {
    if (before.is_array() && std::find(before.begin(), before.end(), ref) != before.end()) continue;
    std::string sts;
    if (k8s::str(ref, "/kind") == "StatefulSet" && k8s::str(ref, "/apiVersion") == "apps/v1") {
      sts = k8s::str(ref, "/name");
    } else if (k8s::str(ref, "/kind") == "Pod" && k8s::str(ref, "/apiVersion") == "v1") {
      ObjectPtr pod = lookUp(state, "Pod", req.ns, k8s::str(ref, "/name"),
                             [](const ObjectPtr& o) { return !o; });
      const json& podOwners = pod ? k8s::at(*pod, "/metadata/ownerReferences") : json();
      if (podOwners.is_array()) {
        for (const json& o : podOwners) {
          if (k8s::str(o, "/kind") == "StatefulSet") sts = k8s::str(o, "/name");
        }
      }
    }
    if (sts.empty()) return std::nullopt;
    if (!retainsByDelete(lookUp(state, "StatefulSet", req.ns, sts,
                                [&](const ObjectPtr& o) { return !retainsByDelete(o); })))
      return std::nullopt;
  }
  return req.user.username + " sets the owners of " + req.describe() +
         " as its StatefulSet's claim retention policy (Delete) says; that policy was judged";
}

/// The reclaimer deletes a Released PV whose reclaim policy Delete has destroyed the backend.
std::optional<std::string> reclaimedVolume(const AdmissionRequest& req,
                                           const ControllerIdentities& ids) {
  if (req.kind != "PersistentVolume" || !oneOf(req.user.username, ids.volumeReclaim))
    return std::nullopt;
  const json& pv = req.oldObject;
  if (k8s::pvReclaimPolicy(pv) != "Delete" || k8s::pvPhase(pv) != "Released") return std::nullopt;
  return req.user.username + " deletes " + req.describe() +
         " after its reclaim policy Delete ran (Released); the claim's deletion was judged";
}

}  // namespace

std::optional<std::string> controllerExemption(const AdmissionRequest& req,
                                               const ClusterState& state,
                                               const ControllerIdentities& ids) {
  if (!req.subResource.empty()) return std::nullopt;
  if (req.operation == "UPDATE") {
    if (req.kind != "PersistentVolume" && req.kind != "PersistentVolumeClaim") return std::nullopt;
    if (auto pass = protectionFinalizer(req, ids)) return pass;
    return retentionOwner(req, state, ids);
  }
  if (req.operation != "DELETE") return std::nullopt;
  if (auto pass = namespaceCleanup(req, state, ids)) return pass;
  if (auto pass = ownerlessClaim(req, state, ids)) return pass;
  if (auto pass = reclaimedVolume(req, ids)) return pass;
  return std::nullopt;
}

}  // namespace stateguard
