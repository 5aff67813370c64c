// stateguardctl orphans: what holds storage but serves nobody (seed incident 4: ~5,500 backend
// volumes for ~100 claims), and provisioners that keep their own state on the storage they
// provision (Heketi on the Gluster it manages).

#include "webhook/orphans.h"

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

}  // namespace

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
