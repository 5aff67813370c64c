// backup-quarantine: no backup or snapshot of a volume stateguard-csi has quarantined. A volume is
// quarantined when its device turned up with a filesystem it never had (wiped, reformatted, or
// another disk behind the same handle); a backup taken now copies that content, and once the
// schedule's retention rotates the older copies out, the last good one is gone (seed incident 1:
// the blank volume replaced the only good backup). Refused on CREATE:
//   - Longhorn Snapshot (spec.volume) and Backup (label backup-volume, which Longhorn's own
//     webhook sets, or longhornvolume, or status.volumeName) of a quarantined volume;
//   - VolumeSnapshot whose source.persistentVolumeClaimName is bound to a quarantined PV;
//   - Velero Backup that takes a claim bound to a quarantined PV (its namespaces, resources and
//     label selector, as backup-freshness reads them; a backup without volume data is fine).
// The quarantine is read from the PV annotation stateguard.io/volume-ledger
// (core/quarantine.h). A backup naming a volume the state does not know is allowed.

#include "core/backups.h"
#include "core/k8s.h"
#include "core/quarantine.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

constexpr const char* kId = "backup-quarantine";

/// One quarantined volume the request would copy.
struct Hit {
  quarantine::State q;
  std::string claim;  ///< "namespace/name", "" when the PV has no claim
};

std::optional<Hit> hitFor(const ObjectPtr& pv) {
  if (!pv) return std::nullopt;
  auto q = quarantine::of(*pv);
  // An unreadable ledger annotation is `stateguardctl scan`'s to report; it does not stop
  // backups.
  if (!q || !q->unreadable.empty()) return std::nullopt;
  const std::string ns = k8s::str(*pv, "/spec/claimRef/namespace");
  const std::string name = k8s::str(*pv, "/spec/claimRef/name");
  return Hit{*q, name.empty() ? "" : ns + "/" + name};
}

std::optional<Hit> hitForClaim(const ClusterState& state, const json& pvc) {
  const std::string pv = k8s::str(pvc, "/spec/volumeName");
  if (pv.empty()) return std::nullopt;
  auto hit = hitFor(state.get("PersistentVolume", "", pv));
  if (hit) hit->claim = k8s::ref(pvc);
  return hit;
}

std::string longhornVolumeOfBackup(const json& backup) {
  for (const char* key : {"backup-volume", "longhornvolume"}) {
    if (auto v = k8s::label(backup, key); v && !v->empty()) return *v;
  }
  return k8s::str(backup, "/status/volumeName");
}

std::string describeHit(const Hit& h) {
  return "PV " + h.q.pv + (h.claim.empty() ? "" : " (claim " + h.claim + ")") +
         (h.q.volumeId.empty() || h.q.volumeId == h.q.pv ? "" : ", volume " + h.q.volumeId) +
         ", quarantined " + h.q.describe();
}

/// Rule backup-quarantine (see file comment).
class BackupQuarantine : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        kId,
        "backup or snapshot CREATE of a volume stateguard-csi has quarantined (it would copy "
        "the wrong content over the last good copies)",
        Mode::Enforce,
        json{{"maxListed", 5}},
        {{"longhorn.io", "v1beta2", "backups", "Backup", {"CREATE"}},
         {"longhorn.io", "v1beta2", "snapshots", "Snapshot", {"CREATE"}},
         {"snapshot.storage.k8s.io", "v1", "volumesnapshots", "VolumeSnapshot", {"CREATE"}},
         {"velero.io", "v1", "backups", "Backup", {"CREATE"}}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const AdmissionRequest& req = ctx.request;
    const json& obj = req.object;
    std::vector<Hit> hits;
    std::string what;
    if (req.group == "longhorn.io" && req.kind == "Snapshot") {
      what = "Longhorn Snapshot";
      if (auto h =
              hitFor(quarantine::pvForLonghornVolume(ctx.state, k8s::str(obj, "/spec/volume"))))
        hits.push_back(*h);
    } else if (req.group == "longhorn.io" && req.kind == "Backup") {
      what = "Longhorn Backup";
      if (auto h = hitFor(quarantine::pvForLonghornVolume(ctx.state, longhornVolumeOfBackup(obj))))
        hits.push_back(*h);
    } else if (req.kind == "VolumeSnapshot") {
      what = "VolumeSnapshot";
      const std::string claim = k8s::str(obj, "/spec/source/persistentVolumeClaimName");
      if (ObjectPtr pvc =
              claim.empty() ? nullptr : ctx.state.get("PersistentVolumeClaim", req.ns, claim)) {
        if (auto h = hitForClaim(ctx.state, *pvc)) hits.push_back(*h);
      }
    } else if (req.group == "velero.io" && req.kind == "Backup") {
      what = "Velero Backup";
      const json& spec = k8s::at(obj, "/spec");
      if (k8s::at(spec, "/snapshotVolumes") == json(false) &&
          k8s::at(spec, "/defaultVolumesToFsBackup") != json(true))
        return {};  // objects only: no volume data is copied
      for (const ObjectPtr& pvc : ctx.state.list("PersistentVolumeClaim")) {
        if (!backups::veleroCovers(spec, *pvc)) continue;
        if (auto h = hitForClaim(ctx.state, *pvc)) hits.push_back(*h);
      }
    }
    if (hits.empty()) return {};

    std::vector<std::string> listed;
    for (const Hit& h : hits) listed.push_back(describeHit(h));
    const size_t cap = static_cast<size_t>(std::max(1, ctx.params.value("maxListed", 5)));
    const std::string name =
        k8s::name(obj).empty() ? k8s::str(obj, "/metadata/generateName") + "*" : k8s::name(obj);
    const std::string subject = what + " " + (req.ns.empty() ? "" : req.ns + "/") + name;
    std::string message =
        "Creating " + subject + " would copy " +
        (hits.size() == 1 ? "a volume" : std::to_string(hits.size()) + " volumes") +
        " that stateguard-csi has quarantined: " + joinCapped(listed, cap) +
        ". A quarantined volume's device holds a filesystem the volume never had "
        "(wiped, reformatted, or another disk behind the same handle). A backup "
        "of it stores that content, and as the schedule's retention rotates "
        "older backups out, it can replace the last good copy of the real data. "
        "Recover the data first (restore from the newest good backup, or find "
        "the original disk), then lift the quarantine: " +
        hits.front().q.clearCommand() + ", and back up again. ";
    if (req.kind == "Backup" && req.group == "velero.io")
      message +=
          "To back up the rest now, exclude the quarantined claims' namespaces "
          "(--exclude-namespaces) or label them out. ";
    message += breakGlassHint(ctx, kId);
    return {violation(std::move(message), what + " " + name + ": volume " + hits.front().q.pv +
                                              " is quarantined (stateguard-csi)")};
  }
};

}  // namespace

RulePtr makeBackupQuarantine() { return std::make_unique<BackupQuarantine>(); }

}  // namespace stateguard::rules
