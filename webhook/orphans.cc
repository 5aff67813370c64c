// What holds storage but serves nobody (seed incident 4: ~5,500 backend volumes for ~100
// claims), and provisioners that keep their own state on the storage they provision (Heketi on the
// Gluster it manages): what `stateguardctl orphans` prints and the scans report.

#include "webhook/orphans.h"

#include <set>

#include "core/k8s.h"

namespace stateguard {
namespace {

/// Names a PV points at in its backend: CSI volume handle and in-tree identifiers.
std::vector<std::string> backendNames(const json& pv) {
  std::vector<std::string> out;
  for (const char* ptr : {"/spec/csi/volumeHandle", "/spec/glusterfs/path", "/spec/rbd/image",
                          "/spec/awsElasticBlockStore/volumeID", "/spec/gcePersistentDisk/pdName",
                          "/spec/azureDisk/diskName", "/spec/cinder/volumeID", "/spec/iscsi/iqn"}) {
    if (auto v = k8s::str(pv, ptr); !v.empty()) out.push_back(v);
  }
  return out;
}

/// Claims mounted by some Pod, as "namespace/name".
std::set<std::string> claimsInUse(const ClusterState& state) {
  std::set<std::string> used;
  state.forEach("Pod", [&](const ObjectPtr& pod) {
    const json& vols = k8s::at(*pod, "/spec/volumes");
    if (!vols.is_array()) return;
    for (const auto& v : vols) {
      if (auto c = k8s::str(v, "/persistentVolumeClaim/claimName"); !c.empty()) {
        used.insert(k8s::namespaceOf(*pod) + "/" + c);
      }
    }
  });
  return used;
}

/// The Pods that run a StorageClass's provisioner: containers whose args name the provisioner
/// (CSI --drivername/--provisioner), or, for Heketi-backed Gluster, Pods named after the host in
/// parameters.resturl in that Service's namespace.
std::vector<ObjectPtr> provisionerPods(const json& sc, const ClusterState& state) {
  const std::string provisioner = k8s::str(sc, "/provisioner");
  std::string restHost;  // "heketi" from http://heketi.glusterfs.svc:8080
  std::string restNs;
  if (auto url = k8s::str(sc, "/parameters/resturl"); !url.empty()) {
    std::string host = url.substr(url.find("://") == std::string::npos ? 0 : url.find("://") + 3);
    host = host.substr(0, host.find_first_of(":/"));
    restHost = host.substr(0, host.find('.'));
    if (auto dot = host.find('.'); dot != std::string::npos) {
      restNs = host.substr(dot + 1, host.find('.', dot + 1) - dot - 1);
    }
  }
  std::vector<ObjectPtr> out;
  for (const auto& pod : state.list("Pod")) {
    bool match = false;
    if (!restHost.empty() && k8s::name(*pod).rfind(restHost, 0) == 0 &&
        (restNs.empty() || k8s::namespaceOf(*pod) == restNs)) {
      match = true;
    }
    const json& containers = k8s::at(*pod, "/spec/containers");
    if (!match && containers.is_array() && !provisioner.empty()) {
      for (const auto& c : containers) {
        const json& args = k8s::at(c, "/args");
        if (!args.is_array()) continue;
        for (const auto& a : args) {
          if (a.is_string() && a.get<std::string>().find(provisioner) != std::string::npos &&
              (a.get<std::string>().find("--drivername") != std::string::npos ||
               a.get<std::string>().find("--provisioner") != std::string::npos)) {
            match = true;
          }
        }
      }
    }
    if (match) out.push_back(pod);
  }
  return out;
}

std::string claimStorageClass(const json& pvc, const ClusterState& state) {
  std::string sc = k8s::str(pvc, "/spec/storageClassName");
  if (!sc.empty()) return sc;
  if (auto pv = state.get("PersistentVolume", "", k8s::str(pvc, "/spec/volumeName"))) {
    return k8s::str(*pv, "/spec/storageClassName");
  }
  return "";
}

}  // namespace

Orphans findOrphans(const ClusterState& state, Clock::time_point now,
                    std::chrono::seconds availableFor, const std::vector<std::string>& backend) {
  Orphans out;
  json &pvs = out.pvs, &claims = out.claims, &volumes = out.volumes,
       &provisioners = out.provisioners;
  std::set<std::string> referenced;
  for (const auto& pv : state.list("PersistentVolume")) {
    for (const auto& n : backendNames(*pv)) referenced.insert(n);
    referenced.insert(k8s::name(*pv));
    const std::string phase = k8s::pvPhase(*pv);
    auto created = parseRfc3339(k8s::str(*pv, "/metadata/creationTimestamp"));
    const bool stale = phase == "Available" && created && now - *created > availableFor;
    if (phase == "Released" || stale) {
      pvs.push_back(
          {{"name", k8s::name(*pv)},
           {"phase", phase},
           {"size", k8s::pvCapacity(*pv)},
           {"reclaimPolicy", k8s::pvReclaimPolicy(*pv)},
           {"backend", k8s::pvBackendVolume(*pv)},
           {"age", created ? formatDuration(
                                 std::chrono::duration_cast<std::chrono::seconds>(now - *created))
                           : "unknown"}});
    }
  }
  const auto used = claimsInUse(state);
  for (const auto& pvc : state.list("PersistentVolumeClaim")) {
    if (used.count(k8s::ref(*pvc))) continue;
    claims.push_back({{"claim", k8s::ref(*pvc)},
                      {"phase", k8s::str(*pvc, "/status/phase")},
                      {"volume", k8s::str(*pvc, "/spec/volumeName")},
                      {"storageClass", claimStorageClass(*pvc, state)}});
  }
  for (const auto& name : backend) {
    if (!referenced.count(name)) volumes.push_back(name);
  }
  for (const auto& sc : state.list("StorageClass")) {
    for (const auto& pod : provisionerPods(*sc, state)) {
      const json& vols = k8s::at(*pod, "/spec/volumes");
      if (!vols.is_array()) continue;
      for (const auto& v : vols) {
        const std::string claim = k8s::str(v, "/persistentVolumeClaim/claimName");
        if (claim.empty()) continue;
        auto pvc = state.get("PersistentVolumeClaim", k8s::namespaceOf(*pod), claim);
        if (pvc && claimStorageClass(*pvc, state) == k8s::name(*sc)) {
          provisioners.push_back({{"storageClass", k8s::name(*sc)},
                                  {"provisioner", k8s::str(*sc, "/provisioner")},
                                  {"pod", k8s::ref(*pod)},
                                  {"claim", k8s::namespaceOf(*pod) + "/" + claim}});
        }
      }
    }
  }
  return out;
}

}  // namespace stateguard
