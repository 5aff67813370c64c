// stateguardctl csi ledger: read the CSI sidecar's ledger, and the two deliberate, audited
// overrides of its protection: clearing a quarantine and forgetting a volume's history.

#include <unistd.h>

#include <cstdlib>
#include <iomanip>
#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/audit.h"
#include "core/k8s.h"
#include "core/kube_client.h"
#include "core/timeutil.h"
#include "csi-sidecar/ledger.h"
#include "csi-sidecar/pv_ledger.h"

namespace stateguard::cli {

namespace {

using csi::Ledger;
using csi::LedgerEntry;

constexpr const char* kUsage =
    R"(usage: stateguardctl csi ledger list  [--ledger-dir DIR] [-o table|json]
       stateguardctl csi ledger show  --volume ID [--ledger-dir DIR] [--kubeconfig FILE]
       stateguardctl csi ledger clear-quarantine --volume ID --reason TEXT
                     [--ledger-dir DIR] [--kubeconfig FILE] [--audit-log FILE|-]
       stateguardctl csi ledger forget --volume ID --reason TEXT
                     [--ledger-dir DIR] [--kubeconfig FILE] [--audit-log FILE|-]

The ledger of stateguard-csi records, per volume, every filesystem it has held; a volume whose
device later reads as blank is never formatted, and one found with another filesystem after a
stage is quarantined (every publish refused). These commands run on the node (the ledger
directory, default /var/lib/stateguard/ledger) and, with --kubeconfig, also change the copy on
the PersistentVolume (annotation stateguard.io/volume-ledger), which other nodes read.

  list               every volume in the node's ledger: identity, device, quarantine
  show               one volume, node file and PersistentVolume annotation (JSON)
  clear-quarantine   after recovering the data: let the volume be published again
  forget             drop the volume's history, so a blank device may be formatted; only
                     when the volume must start empty on purpose
  --reason TEXT      required for changes; written to the audit log with the user
  --audit-log FILE   where the change is recorded (default: - = stdout)

Examples:
  stateguardctl csi ledger list
  stateguardctl csi ledger clear-quarantine --volume pvc-3f1c --reason "restored from backup 42"
)";

constexpr char kDefaultLedgerDir[] = "/var/lib/stateguard/ledger";

std::string userName() {
  if (const char* u = std::getenv("USER"); u && *u) return u;
  return "uid " + std::to_string(::getuid());
}

struct Pv {
  KubeClientPtr client;
  std::string name;
  std::optional<LedgerEntry> entry;
  std::string resourceVersion;
};

/// The PersistentVolume whose CSI volume handle is `volumeId`, through --kubeconfig.
Result<std::optional<Pv>> findPv(const Flags& f, const std::string& volumeId) {
  if (!f.has("kubeconfig")) return std::optional<Pv>();
  auto config = loadKubeconfig(f.get("kubeconfig"));
  if (!config) return makeError(config.error());
  auto client = KubeClient::create(config.value());
  if (!client) return makeError(client.error());
  auto list = client.value()->get("/api/v1/persistentvolumes");
  if (!list) return makeError(list.error());
  for (const json& pv : list.value().value("items", json::array())) {
    if (k8s::str(pv, "/spec/csi/volumeHandle") != volumeId) continue;
    auto entry = csi::entryFromPv(pv);
    if (!entry) return makeError(entry.error());
    return std::optional<Pv>(Pv{client.value(), k8s::name(pv), entry.value(),
                                k8s::str(pv, "/metadata/resourceVersion")});
  }
  return makeError("no PersistentVolume has CSI volume handle " + volumeId);
}

int list(const Flags& f, const Ledger& ledger) {
  auto entries = ledger.list();
  if (!entries) {
    std::cerr << "stateguardctl: " << entries.error() << "\n";
    return 2;
  }
  if (f.get("o", "table") == "json") {
    json out = json::array();
    for (const auto& e : entries.value()) out.push_back(csi::toJson(e));
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (entries->empty()) {
    std::cout << "no volumes in " << ledger.dir() << "\n";
    return 0;
  }
  std::cout << std::left << std::setw(28) << "VOLUME" << std::setw(20) << "PV" << std::setw(44)
            << "FILESYSTEM"
            << "STATE\n";
  bool quarantined = false;
  for (const auto& e : entries.value()) {
    const auto* cur = e.current();
    std::string fsText = cur ? cur->type + " " + cur->uuid : "(never formatted)";
    std::string state = e.quarantine ? "QUARANTINED since " + e.quarantine->since : "ok";
    quarantined = quarantined || e.quarantine.has_value();
    std::cout << std::setw(28) << e.volumeId << std::setw(20) << (e.pvName.empty() ? "-" : e.pvName)
              << std::setw(44) << fsText << state << "\n";
  }
  return quarantined ? 1 : 0;
}

int change(const Flags& f, const Ledger& ledger, const std::string& action) {
  const std::string volume = f.get("volume");
  const std::string reason = f.get("reason");
  if (volume.empty()) return usageError(kUsage, action + " needs --volume");
  if (reason.empty()) {
    return usageError(kUsage, action +
                                  " needs --reason: it overrides stateguard's protection of "
                                  "the volume's data and is audited");
  }
  auto local = ledger.load(volume);
  if (!local) {
    std::cerr << "stateguardctl: " << local.error() << "\n";
    return 2;
  }
  auto pv = findPv(f, volume);
  if (!pv) {
    std::cerr << "stateguardctl: " << pv.error() << "\n";
    return 2;
  }
  if (!local.value() && !(pv.value() && pv.value()->entry)) {
    std::cerr << "stateguardctl: volume " << volume << " has no ledger entry in " << ledger.dir()
              << (f.has("kubeconfig") ? " nor on its PersistentVolume" : "") << "\n";
    return 2;
  }
  auto audit = AuditLog::open(f.get("audit-log", "-"));
  if (!audit) {
    std::cerr << "stateguardctl: " << audit.error() << "\n";
    return 2;
  }
  json before = json::object();
  if (local.value()) before["node"] = csi::toJson(*local.value());
  if (pv.value() && pv.value()->entry) before["pv"] = csi::toJson(*pv.value()->entry);

  if (action == "clear-quarantine") {
    if (local.value()) {
      LedgerEntry e = *local.value();
      e.quarantine.reset();
      e.updated = nowRfc3339();
      if (Status s = ledger.store(e); !s) {
        std::cerr << "stateguardctl: " << s.error() << "\n";
        return 2;
      }
    }
    if (pv.value() && pv.value()->entry) {
      LedgerEntry e = *pv.value()->entry;
      e.quarantine.reset();
      e.updated = nowRfc3339();
      json patch{{"metadata",
                  {{"resourceVersion", pv.value()->resourceVersion},
                   {"annotations", {{csi::kLedgerAnnotation, csi::toJson(e).dump()}}}}}};
      KubeResponse r =
          pv.value()->client->mergePatch("/api/v1/persistentvolumes/" + pv.value()->name, patch);
      if (!r.ok()) {
        std::cerr << "stateguardctl: " << r.error << " (the node's ledger is already cleared)\n";
        return 2;
      }
    }
  } else {
    if (auto removed = ledger.remove(volume); !removed) {
      std::cerr << "stateguardctl: " << removed.error() << "\n";
      return 2;
    }
    if (pv.value() && pv.value()->entry) {
      json patch{{"metadata",
                  {{"resourceVersion", pv.value()->resourceVersion},
                   {"annotations", {{csi::kLedgerAnnotation, nullptr}}}}}};
      KubeResponse r =
          pv.value()->client->mergePatch("/api/v1/persistentvolumes/" + pv.value()->name, patch);
      if (!r.ok()) {
        std::cerr << "stateguardctl: " << r.error << " (the node's ledger is already removed)\n";
        return 2;
      }
    }
  }
  audit.value()->write(json{{"time", nowRfc3339()},
                            {"component", "stateguardctl"},
                            {"action", "csi-ledger-" + action},
                            {"volumeId", volume},
                            {"pv", pv.value() ? pv.value()->name : ""},
                            {"user", userName()},
                            {"reason", reason},
                            {"before", before}});
  std::cerr << "stateguardctl: " << action << " done for volume " << volume
            << (action == "forget"
                    ? ": its history is gone; a blank device will now be formatted on the next "
                      "stage"
                    : ": it can be published again")
            << "\n";
  return 0;
}

}  // namespace

int runCsi(int argc, char** argv) {
  if (wantsHelp(argc, argv)) {
    std::cout << kUsage;
    return 0;
  }
  if (argc < 4 || std::string(argv[2]) != "ledger") {
    return usageError(kUsage, "expected: csi ledger list|show|clear-quarantine|forget");
  }
  const std::string action = argv[3];
  auto flags = parseFlags(argc, argv, 4,
                          {"ledger-dir", "volume", "reason", "kubeconfig", "audit-log", "o"}, {});
  if (!flags) return usageError(kUsage, flags.error());
  const Flags& f = flags.value();
  if (!f.positional.empty()) return usageError(kUsage, "unexpected argument " + f.positional[0]);
  Ledger ledger(f.get("ledger-dir", kDefaultLedgerDir));
  if (action == "list") return list(f, ledger);
  if (action == "show") {
    if (!f.has("volume")) return usageError(kUsage, "show needs --volume");
    auto local = ledger.load(f.get("volume"));
    if (!local) {
      std::cerr << "stateguardctl: " << local.error() << "\n";
      return 2;
    }
    auto pv = findPv(f, f.get("volume"));
    if (!pv) {
      std::cerr << "stateguardctl: " << pv.error() << "\n";
      return 2;
    }
    json out{{"node", local.value() ? csi::toJson(*local.value()) : json(nullptr)}};
    if (pv.value()) {
      out["pvName"] = pv.value()->name;
      out["pv"] = pv.value()->entry ? csi::toJson(*pv.value()->entry) : json(nullptr);
    }
    std::cout << out.dump(2) << "\n";
    return local.value() || (pv.value() && pv.value()->entry) ? 0 : 1;
  }
  if (action == "clear-quarantine" || action == "forget") return change(f, ledger, action);
  return usageError(
      kUsage, "unknown action " + action + "; expected list, show, clear-quarantine or forget");
}

}  // namespace stateguard::cli
