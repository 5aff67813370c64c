#include "webhook/scan.h"

#include <algorithm>
#include <cctype>
#include <deque>
#include <set>
#include <tuple>

#include "core/backups.h"
#include "core/k8s.h"
#include "core/quarantine.h"
#include "webhook/admission.h"
#include "webhook/engine.h"
#include "webhook/orphans.h"
#include "webhook/registry.h"
#include "webhook/rules/common.h"

namespace stateguard::scan {
namespace {

const std::vector<std::pair<std::string, std::string>> kStateChecks = {
    {"backup-stale", "bound claim (or etcd) without a successful backup newer than maxAge"},
    {"volume-quarantined", "PersistentVolume quarantined by stateguard-csi, or ledger unreadable"},
    {"pv-released", "Released PersistentVolume: its claim is gone, its data is not"},
    {"pv-unclaimed", "PersistentVolume Available for longer than --available-for"},
    {"claim-unused", "PersistentVolumeClaim no Pod mounts"},
    {"provisioner-own-storage", "storage provisioner whose Pods mount storage it provisions"},
    {"statefulset-retention",
     "StatefulSet whose claim retention policy deletes bound claims on delete or scale-down"},
};

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

int severityRank(const std::string& s) { return s == "error" ? 0 : s == "warning" ? 1 : 2; }

std::string severityOf(Mode mode) { return mode == Mode::Enforce ? "error" : "warning"; }

/// Every object judged as its creation, through the webhook's engine.
void judgeObjects(const ClusterState& state, const ClusterState& configuration,
                  const Policy& policy, Clock::time_point now, std::vector<Finding>& out,
                  size_t& objects) {
  Engine engine(allRules());
  UserInfo user;
  // Who set an annotation is not known after the fact (break-glass-annotation's notice names it).
  user.username = "(its author; scan cannot tell)";
  user.groups = policy.breakGlass.groups;
  // Rules read the cache (`state`); objects of configurationKinds() come from `configuration`.
  std::vector<std::pair<const ResourceKind*, const ClusterState*>> sources;
  for (const ResourceKind& rk : watchedKinds()) sources.emplace_back(&rk, &state);
  std::set<std::string> keys;
  for (const ResourceKind& rk : configurationKinds()) {
    // Every version of a resource is held under one key: judge its objects once.
    if (keys.insert(rk.storeKey()).second) sources.emplace_back(&rk, &configuration);
  }
  for (const auto& [kind, from] : sources) {
    const ResourceKind& rk = *kind;
    // One decoded object at a time: a scan of 100,000 Pods must not hold them all decoded.
    from->forEach(rk.storeKey(), [&](const ObjectPtr& o) {
      ++objects;
      json obj = *o;
      if (!obj.contains("kind")) obj["kind"] = rk.kind;
      if (!obj.contains("apiVersion")) obj["apiVersion"] = rk.apiVersion();
      const std::string apiVersion = k8s::str(obj, "/apiVersion");
      const AdmissionRequest req =
          applyRequest(obj, nullptr, user, "", "scan-" + std::to_string(objects));
      const Decision d = engine.review(req, state, policy, now);
      for (const RuleVerdict& v : d.verdicts) {
        // An existing backup of a quarantined volume may well be the good copy taken before
        // the wipe: backup-quarantine is for new ones; volume-quarantined reports the volume.
        if (v.verdict == "audit" || v.rule == "backup-quarantine") continue;
        const std::string severity = v.verdict == "deny"   ? "error"
                                     : v.verdict == "warn" ? "warning"
                                                           : "note";
        std::string message = v.message;
        if (v.verdict == "break-glass")
          message = "a break-glass annotation in force overrides this rule: " + message;
        if (v.rule == "break-glass-annotation" && v.verdict == "deny")
          message +=
              " An annotation left on an existing object overrides nothing until it is "
              "valid; if no override is needed any more, remove it: kubectl annotate " +
              lower(rk.kind) + " " + req.name + (req.ns.empty() ? "" : " -n " + req.ns) + " " +
              policy.breakGlass.annotation + "-";
        out.push_back(
            {v.rule, rk.kind, req.ns, req.name, severity, std::move(message), apiVersion});
      }
    });
  }
}

/// The object, or for a namespaced one its Namespace, carries kExpendableAnnotation with a
/// reason ("false" and "" are no reason).
bool expendable(const ClusterState& state, const json& obj) {
  auto marked = [](const json& o) {
    const auto v = k8s::annotation(o, kExpendableAnnotation);
    return v && !v->empty() && *v != "false";
  };
  if (marked(obj)) return true;
  const std::string ns = k8s::namespaceOf(obj);
  const ObjectPtr nsObj = ns.empty() ? nullptr : state.get("Namespace", "", ns);
  return nsObj && marked(*nsObj);
}

/// How to say that a claim's or PV's data is not needed, for messages.
std::string expendableHint(const std::string& resource, const std::string& ns,
                           const std::string& name) {
  return "If the data is not needed, say so and this is no longer reported: kubectl annotate " +
         resource + " " + name + (ns.empty() ? "" : " -n " + ns) + " " + kExpendableAnnotation +
         "='<why>'.";
}

std::string claimLabel(const json& pvc) {
  const std::string pv = k8s::str(pvc, "/spec/volumeName");
  return "claim " + k8s::ref(pvc) + " (" + (pv.empty() ? "" : "PV " + pv + ", ") +
         rules::claimSize(pvc) + ")";
}

/// What a stale or missing copy means, and what to do; `newest` is the newest good copy or null.
std::string staleText(const std::string& subject, const backups::Copy* newest,
                      const backups::Copy* failed, Clock::time_point now,
                      const std::string& limitText) {
  std::string m = subject + ": ";
  if (newest == nullptr || !newest->time) {
    m += "no successful backup found";
  } else {
    m += "the newest successful backup is " + newest->label() + " from " +
         formatRfc3339(*newest->time) + " (" + backups::age(*newest->time, now) +
         "), older than the policy's maxAge " + limitText;
  }
  if (failed != nullptr)
    m += "; a newer " + failed->label() + " did not count (" + failed->state +
         (failed->note.empty() ? "" : ": " + failed->note) + ")";
  return m;
}

void checkBackups(const ClusterState& state, const Policy& policy, Clock::time_point now,
                  bool etcdSnapshotsServed, Report& report) {
  std::vector<Finding>& out = report.findings;
  const Mode mode = policy.modeOf("backup-freshness");
  if (mode == Mode::Off) return;
  const json& params = policy.paramsOf("backup-freshness");
  const auto maxAge =
      parseDuration(params.is_object() && params.contains("maxAge") && params["maxAge"].is_string()
                        ? params["maxAge"].get<std::string>()
                        : "24h")
          .value_or(std::chrono::hours(24));
  const std::string limitText = formatDuration(maxAge);
  for (const ObjectPtr& pvc : state.list("PersistentVolumeClaim")) {
    if (!rules::claimBound(*pvc) || expendable(state, *pvc)) continue;
    const backups::ClaimBackups found = backups::forClaim(state, *pvc);
    const backups::Copy* good = found.newestGood();
    BackupAge& age = report.backups.emplace_back(
        BackupAge{k8s::namespaceOf(*pvc), k8s::name(*pvc), std::nullopt});
    if (good != nullptr && good->time)
      age.age = std::chrono::duration_cast<std::chrono::seconds>(now - *good->time);
    if (good != nullptr && good->time && now - *good->time <= maxAge) continue;
    std::string m = staleText(claimLabel(*pvc), good, found.newerFailure(), now, limitText);
    m += ". If this volume is lost now, " +
         std::string(good == nullptr ? "its data is gone"
                                     : "everything written since that backup is gone") +
         ". Find out why backups stopped or never covered it (`stateguardctl backups` lists what "
         "stateguard sees: Velero Backups, Longhorn Backups, VolumeSnapshots, and the schedules "
         "keeping them), then take one and wait until it completes (Velero: velero backup create "
         "--include-namespaces " +
         k8s::namespaceOf(*pvc) +
         " --wait; Longhorn: back up the volume; or a VolumeSnapshot) and give it a schedule. " +
         expendableHint("pvc", k8s::namespaceOf(*pvc), k8s::name(*pvc));
    out.push_back({"backup-stale", "PersistentVolumeClaim", k8s::namespaceOf(*pvc), k8s::name(*pvc),
                   severityOf(mode), std::move(m)});
  }
  const std::vector<backups::Copy> snaps = backups::etcdSnapshots(state);
  if (snaps.empty() && !etcdSnapshotsServed) return;
  const backups::Copy* good = backups::newestGood(snaps);
  if (good != nullptr && good->time && now - *good->time <= maxAge) return;
  std::string m = staleText("etcd (k3s/RKE2 ETCDSnapshotFiles)", good, backups::newerFailure(snaps),
                            now, limitText);
  m += ". If the control plane's datastore is lost or an upgrade goes wrong, the cluster can only "
       "be restored to that point. Check the servers' etcd-snapshot schedule (--etcd-snapshot-"
       "schedule-cron) and the snapshot directory or S3 target, then take one: k3s etcd-snapshot "
       "save (rke2 etcd-snapshot save) on a server, and check it becomes readyToUse.";
  out.push_back({"backup-stale", "ETCDSnapshotFile", "", good ? good->name : "(none)",
                 severityOf(mode), std::move(m)});
}

void checkQuarantines(const ClusterState& state, std::vector<Finding>& out) {
  for (const ObjectPtr& pv : state.list("PersistentVolume")) {
    auto q = quarantine::of(*pv);
    if (!q) continue;
    const std::string claimNs = k8s::str(*pv, "/spec/claimRef/namespace");
    const std::string claimName = k8s::str(*pv, "/spec/claimRef/name");
    const std::string claim = claimName.empty() ? "" : " (claim " + claimNs + "/" + claimName + ")";
    if (!q->unreadable.empty()) {
      out.push_back(
          {"volume-quarantined", "PersistentVolume", "", q->pv, "warning",
           q->unreadable + claim +
               ": stateguard-csi keeps the volume's filesystem history there; nodes that cannot "
               "read it refuse to stage the volume, and a quarantine in it cannot be seen. Look "
               "at the node's ledger (`stateguardctl csi ledger show --volume " +
               (q->volumeId.empty() ? "<volume handle>" : q->volumeId) +
               " --kubeconfig <file>` on the node that last used it) and restore the annotation "
               "from it; do not delete the annotation to silence this."});
      continue;
    }
    out.push_back(
        {"volume-quarantined", "PersistentVolume", "", q->pv, "error",
         "PersistentVolume " + q->pv + claim + " is quarantined by stateguard-csi " +
             q->describe() +
             ". The device no longer holds the filesystem the volume had (wiped, reformatted, "
             "or another disk behind the same handle), so the volume's data is not there: "
             "Pods using it cannot start (every stage and publish is refused), and rule "
             "backup-quarantine refuses backups and snapshots of it so that the last good copies "
             "are not rotated out. Recover the data first (restore from the newest good backup "
             "— `stateguardctl backups` names it — or find the original disk), then lift the "
             "quarantine: " +
             q->clearCommand() + "."});
  }
}

void checkOrphans(const ClusterState& state, Clock::time_point now,
                  std::chrono::seconds availableFor, const std::string& availableText,
                  std::vector<Finding>& out) {
  const Orphans found = findOrphans(state, now, availableFor, {});
  for (const json& p : found.pvs) {
    const std::string name = p["name"].get<std::string>();
    ObjectPtr pv = state.get("PersistentVolume", "", name);
    if (pv && expendable(state, *pv)) continue;
    const std::string phase = p["phase"].get<std::string>();
    const std::string reclaim = p["reclaimPolicy"].get<std::string>();
    const std::string backend = p["backend"].get<std::string>();
    std::string m = "PersistentVolume " + name + " (" + p["size"].get<std::string>() +
                    ", reclaim policy " + reclaim + (backend.empty() ? "" : ", " + backend) +
                    ", age " + p["age"].get<std::string>() + ") is " + phase;
    if (phase == "Released") {
      const std::string former = pv ? k8s::str(*pv, "/spec/claimRef/namespace") + "/" +
                                          k8s::str(*pv, "/spec/claimRef/name")
                                    : "";
      m += ": its claim" + (former.size() > 1 ? " " + former : "") +
           " was deleted, the data is still on the backend and nothing can use it. ";
      m += reclaim == "Delete"
               ? "With reclaim policy Delete, Kubernetes deletes the backend volume (this one is "
                 "still here: the deletion may have failed). If the data is needed, set "
                 "persistentVolumeReclaimPolicy: Retain on it now. "
               : "";
      m += "If the data is needed, bind a new claim to it (remove spec.claimRef from the PV, then "
           "create a claim with spec.volumeName: " +
           name +
           "); if it is not, back it up or confirm it is expendable and delete the PV and its "
           "backend volume deliberately. " +
           expendableHint("pv", "", name);
      out.push_back({"pv-released", "PersistentVolume", "", name, "warning", std::move(m)});
    } else {
      m += " and no claim has bound it for over " + availableText +
           ": it holds storage nobody uses. If it was pre-provisioned for a claim, check the "
           "claim's storageClassName, size and access modes match it; otherwise delete it.";
      out.push_back({"pv-unclaimed", "PersistentVolume", "", name, "note", std::move(m)});
    }
  }
  for (const json& c : found.claims) {
    const std::string ref = c["claim"].get<std::string>();
    const auto slash = ref.find('/');
    const ObjectPtr pvc =
        state.get("PersistentVolumeClaim", ref.substr(0, slash), ref.substr(slash + 1));
    if (pvc && expendable(state, *pvc)) continue;
    const std::string volume = c["volume"].get<std::string>();
    out.push_back(
        {"claim-unused", "PersistentVolumeClaim", ref.substr(0, slash), ref.substr(slash + 1),
         "note",
         "claim " + ref + " (" + c["phase"].get<std::string>() +
             (volume.empty() ? "" : ", volume " + volume) +
             ") is mounted by no Pod: its storage serves nobody right now. A StatefulSet scaled "
             "down or a stopped app keeps its claims on purpose; if the app is gone, take a "
             "backup (or confirm the data is expendable) and delete the claim deliberately. " +
             expendableHint("pvc", ref.substr(0, slash), ref.substr(slash + 1))});
  }
  for (const json& p : found.provisioners) {
    const std::string pod = p["pod"].get<std::string>();
    const auto slash = pod.find('/');
    out.push_back(
        {"provisioner-own-storage", "Pod", pod.substr(0, slash), pod.substr(slash + 1), "warning",
         "Pod " + pod + " (provisioner of StorageClass " + p["storageClass"].get<std::string>() +
             ") mounts claim " + p["claim"].get<std::string>() +
             " of that StorageClass: if this storage breaks, the provisioner that "
             "could repair it cannot start. Move its state to other storage (a "
             "hostPath or local volume, or another StorageClass)."});
  }
}

void checkStatefulSets(const ClusterState& state, std::vector<Finding>& out) {
  for (const ObjectPtr& sts : state.list("StatefulSet")) {
    const std::string whenDeleted =
        k8s::str(*sts, "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted");
    const std::string whenScaled =
        k8s::str(*sts, "/spec/persistentVolumeClaimRetentionPolicy/whenScaled");
    if (whenDeleted != "Delete" && whenScaled != "Delete") continue;
    const std::string ns = k8s::namespaceOf(*sts);
    std::vector<std::string> claims;
    bool destroyed = false;
    for (const ObjectPtr& c :
         rules::statefulSetClaims(state, ns, k8s::name(*sts), rules::claimTemplateNames(*sts))) {
      if (!rules::claimBound(*c)) continue;
      auto lost = rules::volumeDestroyedWithClaim(*c, state);
      destroyed |= lost.has_value();
      claims.push_back(k8s::name(*c) + " (" + rules::claimSize(*c) +
                       (lost ? ", " + lost->why + ": the volume is destroyed with it" : "") + ")");
    }
    if (claims.empty()) continue;
    std::string when = whenDeleted == "Delete" && whenScaled == "Delete"
                           ? "whenDeleted and whenScaled are Delete"
                       : whenDeleted == "Delete" ? "whenDeleted is Delete"
                                                 : "whenScaled is Delete";
    std::string action = whenDeleted == "Delete" && whenScaled == "Delete"
                             ? "deleting it or scaling it down"
                         : whenDeleted == "Delete" ? "deleting it"
                                                   : "scaling it down";
    out.push_back(
        {"statefulset-retention", "StatefulSet", ns, k8s::name(*sts),
         destroyed ? "error" : "warning",
         "StatefulSet " + k8s::ref(*sts) + ": persistentVolumeClaimRetentionPolicy " + when +
             ", so " + action +
             " makes Kubernetes delete its bound claims: " + rules::joinCapped(claims, 10) +
             ". Rule statefulset-claims refuses such requests where the webhook reaches, but the "
             "setting still deletes the claims wherever it does not (an excluded namespace, a "
             "policy with the rule off, the same manifests applied to another cluster). "
             "Set Retain and delete claims deliberately when "
             "their data is no longer needed: kubectl patch statefulset " +
             k8s::name(*sts) + " -n " + ns +
             " --type merge -p '{\"spec\":{\"persistentVolumeClaimRetentionPolicy\":"
             "{\"whenDeleted\":\"Retain\",\"whenScaled\":\"Retain\"}}}'"});
  }
}

}  // namespace

std::string Finding::object() const { return kind + " " + (ns.empty() ? "" : ns + "/") + name; }

size_t Report::count(const std::string& severity) const {
  return static_cast<size_t>(std::count_if(
      findings.begin(), findings.end(), [&](const Finding& f) { return f.severity == severity; }));
}

Report run(const ClusterState& state, const Policy& policy, Clock::time_point now,
           const Options& options) {
  Report report;
  judgeObjects(state, options.configuration != nullptr ? *options.configuration : state, policy,
               now, report.findings, report.objects);
  checkBackups(state, policy, now, options.etcdSnapshotsServed, report);
  checkQuarantines(state, report.findings);
  checkOrphans(state, now, options.availableFor, options.availableText, report.findings);
  checkStatefulSets(state, report.findings);
  for (Finding& f : report.findings) {
    for (const ResourceKind& rk : watchedKinds()) {
      if (!f.apiVersion.empty()) break;
      if (f.kind == rk.kind) f.apiVersion = rk.apiVersion();
    }
  }
  std::stable_sort(
      report.findings.begin(), report.findings.end(), [](const Finding& a, const Finding& b) {
        return std::make_tuple(severityRank(a.severity), a.kind, a.ns, a.name, a.rule) <
               std::make_tuple(severityRank(b.severity), b.kind, b.ns, b.name, b.rule);
      });
  return report;
}

const std::vector<std::pair<std::string, std::string>>& stateChecks() { return kStateChecks; }

namespace {

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first
/// (v1 > v1beta3 > v1beta1 > v1alpha1), as the API server orders a CRD's versions.
std::tuple<int, int, int> versionRank(const std::string& v) {
  int major = 0, minor = 0;
  std::string stage;
  size_t i = 1;
  while (i < v.size() && std::isdigit(static_cast<unsigned char>(v[i])))
    major = major * 10 + (v[i++] - '0');
  while (i < v.size() && std::isalpha(static_cast<unsigned char>(v[i]))) stage += v[i++];
  while (i < v.size() && std::isdigit(static_cast<unsigned char>(v[i])))
    minor = minor * 10 + (v[i++] - '0');
  const int level = stage.empty() ? 2 : stage == "beta" ? 1 : 0;
  return {level, major, minor};
}

std::string resourceOf(const ResourceKind& rk) {
  const std::string path = rk.apiPath;
  return path.substr(path.rfind('/') + 1);
}

/// Every page of `path` (50 at a time) into `batch` under `listing.key`, except objects whose
/// namespace/name is already in `seen`. False when it did not list to the end: a 404 or 403 on
/// the first page (not served; `listing.forbidden` for a 403) or a failure (`listing.error`).
bool listPages(KubeClient& client, const ResourceKind& rk, const std::string& path,
               ConfigurationListing& listing, ObjectStore::Batch& batch,
               std::set<std::string>& seen) {
  constexpr int64_t kPage = 50;
  std::string token;
  while (true) {
    KubeResponse page = client.list(path, kPage, token);
    if (token.empty() && (page.status == 404 || page.status == 403)) {
      listing.forbidden = page.status == 403;  // RBAC does not depend on the version
      return false;
    }
    if (!page.ok()) {
      listing.error = page.error;
      return false;
    }
    json items = page.body.is_object() && page.body.contains("items")
                     ? std::move(page.body["items"])
                     : json();
    if (!items.is_array() && !items.is_null()) {
      listing.error = "list " + path + ": items is not a list";
      return false;
    }
    if (items.is_array()) {
      for (json& item : items) {
        if (!item.is_object()) continue;
        json obj = std::move(item);
        if (!obj.contains("kind")) obj["kind"] = rk.kind;
        if (!obj.contains("apiVersion")) obj["apiVersion"] = rk.apiVersion();
        if (!seen.insert(k8s::str(obj, "/metadata/namespace") + "/" +
                         k8s::str(obj, "/metadata/name"))
                 .second)
          continue;
        batch.add(listing.key, std::move(obj));
      }
    }
    token = k8s::str(page.body, "/metadata/continue");
    if (token.empty()) return true;
  }
}

}  // namespace

const std::vector<ResourceKind>& configurationKinds() {
  // Built once from the rules; the ResourceKinds point into `text`, which is never freed.
  static const std::vector<ResourceKind>* kinds = [] {
    auto* text = new std::deque<std::string>();
    auto keep = [text](std::string s) { return text->emplace_back(std::move(s)).c_str(); };
    struct Entry {
      RuleTarget target;
      std::string key;
    };
    std::vector<Entry> entries;
    std::set<std::tuple<std::string, std::string, std::string>> seen;
    for (const RulePtr& rule : allRules()) {
      for (const RuleTarget& t : rule->info().targets) {
        const auto& ops = t.operations;
        if (!t.subResource.empty() || std::find(ops.begin(), ops.end(), "CREATE") == ops.end())
          continue;
        if ((t.group.empty() && t.resource == "secrets") || t.group == "upgrade.cattle.io" ||
            (t.group == "longhorn.io" && t.resource == "snapshots"))
          continue;  // see configurationKinds() in scan.h
        const bool watched =
            std::any_of(watchedKinds().begin(), watchedKinds().end(), [&](const ResourceKind& rk) {
              return rk.group() == t.group && resourceOf(rk) == t.resource;
            });
        if (watched || !seen.insert({t.group, t.version, t.resource}).second) continue;
        entries.push_back({t, t.group.empty() ? t.kind : t.kind + "." + t.group});
      }
    }
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      if (a.key != b.key) return a.key < b.key;
      return versionRank(a.target.version) > versionRank(b.target.version);
    });
    auto* out = new std::vector<ResourceKind>();
    for (const Entry& e : entries) {
      const RuleTarget& t = e.target;
      const std::string path = t.group.empty()
                                   ? "/api/" + t.version + "/" + t.resource
                                   : "/apis/" + t.group + "/" + t.version + "/" + t.resource;
      // Crossplane's managed resources are cluster-scoped; the rest are namespaced.
      const bool crossplane =
          t.group.ends_with(".upbound.io") || t.group.ends_with(".crossplane.io");
      out->push_back({keep(t.kind), keep(path), !crossplane, keep(e.key), true});
    }
    return out;
  }();
  return *kinds;
}

std::vector<ConfigurationListing> listConfiguration(KubeClient& client,
                                                    const std::vector<std::string>& configLabels,
                                                    ObjectStore& into) {
  std::vector<ConfigurationListing> out;
  const std::vector<ResourceKind>& kinds = configurationKinds();
  for (size_t first = 0; first < kinds.size();) {
    ConfigurationListing listing;
    listing.key = kinds[first].storeKey();
    size_t end = first;
    while (end < kinds.size() && kinds[end].storeKey() == listing.key) ++end;
    // Newest version first; a 404 means this version (or the whole CRD) is not served.
    for (size_t v = first;
         v < end && !listing.served && !listing.forbidden && listing.error.empty(); ++v) {
      const ResourceKind& rk = kinds[v];
      // ConfigMaps: one list per label the rules read, an object carrying two kept once; with
      // no label (every registry rule off) none is judged.
      std::vector<std::string> paths;
      if (rk.group().empty() && resourceOf(rk) == "configmaps") {
        for (const std::string& label : configLabels)
          paths.push_back(std::string(rk.apiPath) + "?labelSelector=" + urlEncode(label));
      } else {
        paths.push_back(rk.apiPath);
      }
      ObjectStore::Batch batch;
      std::set<std::string> seen;
      bool complete = true;
      for (size_t i = 0; i < paths.size() && complete; ++i)
        complete = listPages(client, rk, paths[i], listing, batch, seen);
      if (complete) {
        listing.served = true;
        listing.apiVersion = rk.apiVersion();
        listing.objects = batch.size();
        into.replaceAll(listing.key, std::move(batch));
      }
    }
    // Not served or not readable: nothing of it exists for us. A failed list keeps what was held.
    if (!listing.served && listing.error.empty())
      into.replaceAll(listing.key, ObjectStore::Batch{});
    out.push_back(std::move(listing));
    first = end;
  }
  return out;
}

}  // namespace stateguard::scan
