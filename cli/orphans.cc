// stateguardctl orphans: what holds storage but serves nobody (seed incident 4: ~5,500 backend
// volumes for ~100 claims), and provisioners that keep their own state on the storage they
// provision (Heketi on the Gluster it manages).

#include "cli/orphans.h"

#include <algorithm>
#include <iostream>
#include <set>
#include <sstream>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/k8s.h"
#include "core/kube_client.h"
#include "core/timeutil.h"
#include "core/watch_cache.h"

namespace stateguard::cli {
namespace {

constexpr const char* kUsage =
    R"(usage: stateguardctl orphans (--cluster-state FILE | --kubeconfig FILE) [--backend-volumes FILE]
                             [--available-for DURATION] [-o table|json]

Lists what holds storage but serves nobody:
  - PersistentVolumes with no claim: Released, or Available for longer than --available-for
    (default 24h);
  - claims that no Pod uses;
  - with --backend-volumes, backend volumes no PersistentVolume references. FILE is Longhorn
    volumes.longhorn.io objects (YAML/JSON), or a plain list with one volume per line as a
    storage backend's CLI prints it (a "Name:" field is used when present);
and flags a storage provisioner whose own Pods mount claims of the StorageClass it provisions
(when that storage breaks, the provisioner that could repair it cannot start).

Exit 0 nothing found, 1 findings, 2 unusable input.
Example: stateguardctl orphans --kubeconfig ~/.kube/config --backend-volumes longhorn-volumes.yaml
)";

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

/// Backend volume names from Longhorn Volume objects or a plain list.
Result<std::vector<std::string>> readBackendVolumes(const std::string& path) {
  auto text = readFile(path);
  if (!text.ok()) return makeError(text.error());
  std::vector<std::string> names;
  auto objects = parseObjects(text.value(), path);
  if (objects.ok() && !objects->empty() && !k8s::kind(objects->front().object).empty()) {
    for (const auto& so : objects.value()) {
      if (k8s::kind(so.object) != "Volume") {
        return makeError(path + ": document " + std::to_string(so.document) + " is a " +
                         k8s::kind(so.object) +
                         ", expected Longhorn Volume objects or a plain list of names");
      }
      names.push_back(k8s::name(so.object));
    }
    return names;
  }
  std::istringstream in(text.value());
  std::string line;
  while (std::getline(in, line)) {
    if (auto pos = line.find("Name:"); pos != std::string::npos) {
      std::istringstream rest(line.substr(pos + 5));
      std::string name;
      if (rest >> name) names.push_back(name);
      continue;
    }
    std::istringstream words(line);
    std::string first;
    if (words >> first && first.front() != '#') names.push_back(first);
  }
  return names;
}

/// Claims mounted by some Pod, as "namespace/name".
std::set<std::string> claimsInUse(const ClusterState& state) {
  std::set<std::string> used;
  for (const auto& pod : state.list("Pod")) {
    const json& vols = k8s::at(*pod, "/spec/volumes");
    if (!vols.is_array()) continue;
    for (const auto& v : vols) {
      if (auto c = k8s::str(v, "/persistentVolumeClaim/claimName"); !c.empty()) {
        used.insert(k8s::namespaceOf(*pod) + "/" + c);
      }
    }
  }
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

int runOrphans(int argc, char** argv) {
  if (wantsHelp(argc, argv)) {
    std::cout << kUsage;
    return 0;
  }
  auto flags = parseFlags(
      argc, argv, 2,
      {"cluster-state", "kubeconfig", "backend-volumes", "available-for", "output", "o"}, {});
  if (!flags.ok()) return usageError(kUsage, flags.error());
  const Flags& f = flags.value();
  const std::string format = f.get("output", f.get("o", "table"));
  if (format != "table" && format != "json") return usageError(kUsage, "-o must be table or json");
  if (!f.positional.empty())
    return usageError(kUsage, "unexpected argument " + f.positional.front());
  if (f.has("cluster-state") == f.has("kubeconfig")) {
    return usageError(kUsage, "give exactly one of --cluster-state FILE or --kubeconfig FILE");
  }
  auto availableFor = parseDuration(f.get("available-for", "24h"));
  if (!availableFor)
    return usageError(kUsage, "--available-for must be a duration like 30m, 12h or 7d");

  auto source = openClusterSource(f);
  if (!source.ok()) return usageError(kUsage, source.error());
  const std::shared_ptr<const ClusterState> state = source->state;
  std::vector<std::string> backend;
  if (f.has("backend-volumes")) {
    auto read = readBackendVolumes(f.get("backend-volumes"));
    if (!read.ok()) return usageError(kUsage, read.error());
    backend = std::move(read).value();
  }

  const Orphans found = findOrphans(*state, Clock::now(), *availableFor, backend);
  const json &pvs = found.pvs, &claims = found.claims, &volumes = found.volumes,
             &provisioners = found.provisioners;
  source->stop();

  const size_t findings = found.size();
  if (format == "json") {
    std::cout << json{{"persistentVolumesWithoutClaim", pvs},
                      {"claimsWithoutPod", claims},
                      {"backendVolumesWithoutPV", volumes},
                      {"provisionersOnOwnStorage", provisioners}}
                     .dump(2)
              << "\n";
  } else {
    std::cout << "PersistentVolumes with no claim (Released, or Available for over "
              << f.get("available-for", "24h") << "): " << pvs.size() << "\n";
    for (const auto& p : pvs) {
      std::cout << "  " << p["name"].get<std::string>() << "  " << p["phase"].get<std::string>()
                << "  " << p["size"].get<std::string>() << "  reclaim "
                << p["reclaimPolicy"].get<std::string>() << "  age " << p["age"].get<std::string>()
                << "  " << p["backend"].get<std::string>() << "\n";
    }
    std::cout << "Claims no Pod uses: " << claims.size() << "\n";
    for (const auto& c : claims) {
      std::cout << "  " << c["claim"].get<std::string>() << "  " << c["phase"].get<std::string>()
                << "  volume " << c["volume"].get<std::string>() << "\n";
    }
    if (f.has("backend-volumes")) {
      std::cout << "Backend volumes no PersistentVolume references: " << volumes.size() << " of "
                << backend.size() << "\n";
      for (const auto& v : volumes) std::cout << "  " << v.get<std::string>() << "\n";
    }
    std::cout << "Provisioners keeping their own state on storage they provision: "
              << provisioners.size() << "\n";
    for (const auto& p : provisioners) {
      std::cout
          << "  " << p["pod"].get<std::string>() << " (provisioner of StorageClass "
          << p["storageClass"].get<std::string>() << ") mounts claim "
          << p["claim"].get<std::string>()
          << " of that StorageClass: if this storage breaks, the provisioner that could repair it "
             "cannot start. Move its state to other storage.\n";
    }
  }
  return findings == 0 ? 0 : 1;
}

}  // namespace stateguard::cli
