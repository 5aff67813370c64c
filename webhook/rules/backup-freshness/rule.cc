// backup-freshness: before a change that can lose a volume's data (or, for a cluster upgrade,
// etcd), the newest successful backup must be younger than the policy's maxAge. Looked up in the
// cluster state (the watch cache: no API call per admission): Velero Backups that cover the
// claim's namespace, Longhorn Backups of its volume, VolumeSnapshots of the claim, and k3s/RKE2
// ETCDSnapshotFiles for etcd. Failed, partially failed, unfinished and object-only backups do not
// count. Guarded operations (parameter guardedOperations):
//   pv-delete            PersistentVolume DELETE while Bound or with reclaim policy Delete
//   pvc-delete           PersistentVolumeClaim DELETE that destroys its volume
//   statefulset-delete   StatefulSet DELETE with persistentVolumeClaimRetentionPolicy
//                        whenDeleted: Delete (its bound claims go with it)
//   statefulset-template StatefulSet UPDATE of spec.template (new image, new config) of an app
//                        with volumeClaimTemplates: the new version touches the old data
//   upgrade-plan         system-upgrade-controller Plan CREATE: k3s/RKE2 upgrades restart etcd
// The deletions are the ones pv-delete, pvc-delete and statefulset-claims refuse: this rule is
// what still stands between a break-glass deletion and a volume nobody can restore. Warn by
// default; enforce makes "back up first" a requirement.

#include <algorithm>

#include "core/backups.h"
#include "core/k8s.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

constexpr const char* kId = "backup-freshness";
constexpr const char* kDefaultMaxAge = "24h";

/// One volume the request puts at risk.
struct AtRisk {
  ObjectPtr claim;   ///< the claim (from the state, or built from a PV's claimRef)
  std::string what;  ///< "claim shop/data-db-0 (PV pvc-123, 10Gi)"
};

bool guarded(const RuleContext& ctx, std::string_view op) {
  const auto it = ctx.params.find("guardedOperations");
  if (it == ctx.params.end() || !it->is_array()) return true;
  return std::any_of(it->begin(), it->end(), [&](const json& v) {
    return v.is_string() && v.get_ref<const std::string&>() == op;
  });
}

/// A claim for the backup lookup: the state's object when it has one, else what the PV says.
ObjectPtr claimFor(const ClusterState& state, const std::string& ns, const std::string& name,
                   const std::string& pv) {
  if (!name.empty()) {
    if (ObjectPtr c = state.get("PersistentVolumeClaim", ns, name)) return c;
  }
  return std::make_shared<const json>(
      json{{"metadata", {{"namespace", ns}, {"name", name.empty() ? "(no claim)" : name}}},
           {"spec", {{"volumeName", pv}}}});
}

/// What a warning names: "monitoring/grafana" for a claim, the PV's name for a volume without
/// a claim (`isPv`).
std::string volumeLabel(const json& claim, bool* isPv) {
  const std::string name = k8s::name(claim);
  *isPv = name == "(no claim)";
  if (*isPv) return k8s::str(claim, "/spec/volumeName");
  return k8s::ref(claim);
}

/// The warning kubectl prints: "no backup within 1d: claim shop/data-db-0 (newest 9d old)",
/// "... claims shop/data-db-0 (newest 9d old), shop/data-db-1 (none found)": which volumes, and
/// for each whether no backup was found at all or how old the newest good one is. As many as fit
/// the engine's 119 characters after the rule's tag; the rest are counted ("and 2 more").
std::string freshnessWarning(const std::string& limitText, const std::vector<std::string>& brief,
                             bool pv) {
  constexpr size_t kRoom = 119 - std::string_view("stateguard backup-freshness: ").size();
  const std::string head = "no backup within " + limitText + ": " +
                           (pv                  ? "PV "
                            : brief.size() == 1 ? "claim "
                                                : "claims ");
  std::string w;
  for (size_t shown = brief.size(); shown > 0; --shown) {
    w = head + joinCapped(std::vector<std::string>(brief.begin(), brief.begin() + shown), shown);
    if (shown < brief.size()) w += " and " + std::to_string(brief.size() - shown) + " more";
    if (w.size() <= kRoom) break;
  }
  return w;
}

/// A pointer to an object the request owns, for as long as the request lives (no copy).
ObjectPtr borrowed(const json& obj) { return ObjectPtr(ObjectPtr(), &obj); }

std::string describeClaim(const json& pvc) {
  const std::string pv = k8s::str(pvc, "/spec/volumeName");
  return "claim " + k8s::ref(pvc) + " (" + (pv.empty() ? "" : "PV " + pv + ", ") + claimSize(pvc) +
         ")";
}

/// A StatefulSet's pod template without what `kubectl rollout restart` changes.
json templateForCompare(const json& sts) {
  json t = k8s::at(sts, "/spec/template");
  if (t.is_object() && t.contains("metadata") && t["metadata"].contains("annotations") &&
      t["metadata"]["annotations"].is_object()) {
    t["metadata"]["annotations"].erase("kubectl.kubernetes.io/restartedAt");
    if (t["metadata"]["annotations"].empty()) t["metadata"].erase("annotations");
  }
  return t;
}

/// The bound claims of a StatefulSet, described.
std::vector<AtRisk> boundStatefulSetClaims(const ClusterState& state, const json& sts) {
  std::vector<AtRisk> out;
  for (const ObjectPtr& c :
       statefulSetClaims(state, k8s::namespaceOf(sts), k8s::name(sts), claimTemplateNames(sts))) {
    if (claimBound(*c)) out.push_back({c, describeClaim(*c)});
  }
  return out;
}

/// Rule backup-freshness (see file comment).
class BackupFreshness : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        kId,
        "no successful backup newer than maxAge before a deletion of data, a stateful app's "
        "pod-template change, or a cluster upgrade Plan",
        Mode::Warn,
        json{{"maxAge", kDefaultMaxAge},
             {"guardedOperations",
              {"pv-delete", "pvc-delete", "statefulset-delete", "statefulset-template",
               "upgrade-plan"}}},
        {{"", "v1", "persistentvolumes", "PersistentVolume", {"DELETE"}},
         {"", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", {"DELETE"}},
         {"apps", "v1", "statefulsets", "StatefulSet", {"DELETE", "UPDATE"}},
         {"upgrade.cattle.io", "v1", "plans", "Plan", {"CREATE"}}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const AdmissionRequest& req = ctx.request;
    const auto maxAgeIt = ctx.params.find("maxAge");
    const auto maxAge = parseDuration(maxAgeIt != ctx.params.end() && maxAgeIt->is_string()
                                          ? maxAgeIt->get_ref<const std::string&>()
                                          : kDefaultMaxAge);
    const auto limit = maxAge.value_or(std::chrono::hours(24));
    const std::string limitText = formatDuration(limit);

    if (req.kind == "Plan") {
      if (!guarded(ctx, "upgrade-plan")) return {};
      return etcdFinding(ctx, limit, limitText);
    }

    std::string action;
    std::vector<AtRisk> risky;
    if (req.kind == "PersistentVolume" && req.operation == "DELETE") {
      if (!guarded(ctx, "pv-delete")) return {};
      const json& pv = req.oldObject;
      const bool bound = k8s::pvPhase(pv) == "Bound";
      if (!bound && k8s::pvReclaimPolicy(pv) != "Delete") return {};
      const std::string ns = k8s::str(pv, "/spec/claimRef/namespace");
      const std::string name = k8s::str(pv, "/spec/claimRef/name");
      ObjectPtr claim = claimFor(ctx.state, ns, name, k8s::name(pv));
      action = "Deleting PersistentVolume " + k8s::name(pv) +
               (bound ? " (Bound)" : " (reclaim policy Delete: the backend volume is destroyed)");
      risky.push_back(
          {claim, "PV " + k8s::name(pv) + (name.empty() ? "" : " of claim " + ns + "/" + name)});
    } else if (req.kind == "PersistentVolumeClaim" && req.operation == "DELETE") {
      if (!guarded(ctx, "pvc-delete")) return {};
      auto lost = volumeDestroyedWithClaim(req.oldObject, ctx.state);
      if (!lost) return {};
      action = "Deleting PersistentVolumeClaim " + lost->claim + " (" + lost->why +
               ": its volume is destroyed)";
      risky.push_back({borrowed(req.oldObject), describeClaim(req.oldObject)});
    } else if (req.kind == "StatefulSet" && req.operation == "DELETE") {
      if (!guarded(ctx, "statefulset-delete")) return {};
      const json& sts = req.oldObject;
      if (k8s::str(sts, "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted") != "Delete")
        return {};
      action = "Deleting StatefulSet " + k8s::ref(sts) +
               " (whenDeleted: Delete: its claims are deleted with it)";
      risky = boundStatefulSetClaims(ctx.state, sts);
    } else if (req.kind == "StatefulSet" && req.operation == "UPDATE") {
      if (!guarded(ctx, "statefulset-template")) return {};
      const json& sts = req.object;
      if (claimTemplateNames(sts).empty() || !req.oldObject.is_object()) return {};
      if (templateForCompare(sts) == templateForCompare(req.oldObject)) return {};
      action = "Changing the pod template of StatefulSet " + k8s::ref(sts) +
               " (the new version starts on the existing data)";
      risky = boundStatefulSetClaims(ctx.state, sts);
    } else {
      return {};
    }
    if (risky.empty()) return {};

    std::vector<std::string> stale;  // for the message
    std::vector<std::string> brief;  // for the warning
    bool pvOnly = false;
    for (const AtRisk& r : risky) {
      const backups::ClaimBackups found = backups::forClaim(ctx.state, *r.claim);
      const backups::Copy* good = found.newestGood();
      if (good != nullptr && good->time && ctx.now - *good->time <= limit) continue;
      std::string line = r.what + ": ";
      const std::string label = volumeLabel(*r.claim, &pvOnly);
      if (good == nullptr) {
        line += "no successful backup found";
        brief.push_back(label + " (none found)");
      } else {
        line += "newest successful backup is " + good->label() + " from " +
                formatRfc3339(*good->time) + " (" + backups::age(*good->time, ctx.now) + ")";
        brief.push_back(label + " (newest " + backups::age(*good->time, ctx.now) + ")");
      }
      if (const backups::Copy* failed = found.newerFailure()) {
        line += "; a newer " + failed->label() + " did not count (" + failed->state +
                (failed->note.empty() ? "" : ": " + failed->note) + ")";
      }
      stale.push_back(line);
    }
    if (stale.empty()) return {};

    const std::string count =
        std::to_string(stale.size()) + (stale.size() == 1 ? " volume has" : " volumes have");
    std::string warning = freshnessWarning(limitText, brief, pvOnly);
    // Built in one buffer: this runs on every guarded deletion the webhook sees.
    std::string message;
    message.reserve(1200);
    message += action;
    message += ", but ";
    message += count;
    message += " no successful backup newer than ";
    message += limitText;
    message += " (policy maxAge): ";
    message += joinCapped(stale, 5);
    message +=
        ". If this goes wrong, the data is gone or only as recent as that. Take a backup now and "
        "wait until it completes (Velero: velero backup create --include-namespaces <ns> --wait; "
        "Longhorn: create a backup of the volume; or a VolumeSnapshot), then retry. stateguard "
        "looked at Velero Backups, Longhorn Backups and VolumeSnapshots; `stateguardctl backups` "
        "lists what it sees. ";
    message += breakGlassHint(ctx, kId);
    return {violation(std::move(message), std::move(warning))};
  }

 private:
  std::vector<Finding> etcdFinding(const RuleContext& ctx, std::chrono::seconds limit,
                                   const std::string& limitText) const {
    const std::vector<backups::Copy> snaps = backups::etcdSnapshots(ctx.state);
    const backups::Copy* good = backups::newestGood(snaps);
    if (good != nullptr && good->time && ctx.now - *good->time <= limit) return {};
    const std::string plan = "Plan " + k8s::ref(ctx.request.object);
    std::string found = good == nullptr
                            ? "no successful etcd snapshot (ETCDSnapshotFile) was found"
                            : "the newest successful etcd snapshot is " + good->label() + " from " +
                                  formatRfc3339(*good->time) + " (" +
                                  backups::age(*good->time, ctx.now) + ")";
    if (const backups::Copy* failed = backups::newerFailure(snaps))
      found += "; a newer " + failed->label() + " did not count (" + failed->note + ")";
    return {violation(
        "Creating upgrade " + plan +
            " restarts the control plane and etcd on every server it "
            "selects, but " +
            found + " (policy maxAge " + limitText +
            "). If the upgrade goes wrong, the cluster can only be restored to that point. Take "
            "an etcd snapshot first (k3s etcd-snapshot save / rke2 etcd-snapshot save on a "
            "server), check it is readyToUse, then create the Plan. " +
            breakGlassHint(ctx, kId),
        "upgrade " + plan +
            (good == nullptr ? ": no etcd snapshot found at all"
                             : ": newest etcd snapshot " + backups::age(*good->time, ctx.now)) +
            " (need one within " + limitText + ")")};
  }
};

}  // namespace

RulePtr makeBackupFreshness() { return std::make_unique<BackupFreshness>(); }

}  // namespace stateguard::rules
