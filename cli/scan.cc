// stateguardctl scan: the hazards that already exist. Every rule judges every object of the
// cluster state as if it were created now (through the engine the webhook and `lint` use), and
// the state checks no request carries: stale backups (what `backups` computes, against the
// policy's maxAge), volumes stateguard-csi has quarantined, what `orphans` finds, and
// StatefulSets whose claim retention policy would delete bound claims. docs/scan.md.

#include <algorithm>
#include <cctype>
#include <iostream>
#include <string_view>
#include <tuple>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/orphans.h"
#include "core/backups.h"
#include "core/k8s.h"
#include "csi-sidecar/pv_ledger.h"
#include "webhook/engine.h"
#include "webhook/registry.h"
#include "webhook/rules/backup-quarantine/quarantine.h"
#include "webhook/rules/common.h"

namespace stateguard::cli {
namespace {

static_assert(std::string_view(csi::kLedgerAnnotation) ==
                  std::string_view(rules::quarantine::kLedgerAnnotation),
              "the webhook reads the quarantine from the annotation the CSI sidecar writes");

constexpr const char* kUsage =
    R"(usage: stateguardctl scan (--cluster-state FILE | --kubeconfig FILE) [--policy FILE]
                          [--available-for DURATION] [-o table|json|sarif]

Judges what already exists. Every rule judges every object (PersistentVolumes, claims,
namespaces, StatefulSets, Pods, StorageClasses, Services, backups and snapshots) as if it were
created now, under --policy (default: the built-in policy). A break-glass annotation is judged
as if set by a member of the policy's break-glass groups: one still in force is reported as a
note, an expired or malformed one as a finding. Then the checks no request carries:

  backup-stale                a bound claim whose newest successful backup is older than the
                              policy's backup-freshness maxAge, or that has none (and the same
                              for k3s/RKE2 etcd snapshots when there are any)
  volume-quarantined          a PersistentVolume stateguard-csi has quarantined (its device
                              holds a filesystem it never had), or whose ledger is unreadable
  pv-released                 a Released PersistentVolume: its claim is gone, its data is not
  pv-unclaimed                a PersistentVolume Available for longer than --available-for
                              (default 24h)
  claim-unused                a claim no Pod mounts
  provisioner-own-storage     a storage provisioner whose own Pods mount claims of the
                              StorageClass it provisions
  statefulset-retention       a StatefulSet whose persistentVolumeClaimRetentionPolicy deletes
                              its bound claims when it is deleted or scaled down

Output: a table (default), JSON, or SARIF 2.1.0 (like `lint -o sarif`). Each finding has a
rule, the object's kind and namespace/name, a severity (error, warning, note) and a message
saying what is at risk and how to fix it.
Exit 0 nothing found, 1 any finding, 2 unusable input or usage.
Example: stateguardctl scan --kubeconfig ~/.kube/config -o json
)";

/// The checks of this command that are not webhook rules, for SARIF's rule list.
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

struct ScanFinding {
  std::string rule;
  std::string kind;
  std::string ns;
  std::string name;
  std::string severity;  ///< error | warning | note
  std::string message;

  std::string object() const { return kind + " " + (ns.empty() ? "" : ns + "/") + name; }
};

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

int severityRank(const std::string& s) { return s == "error" ? 0 : s == "warning" ? 1 : 2; }

std::string severityOf(Mode mode) { return mode == Mode::Enforce ? "error" : "warning"; }

/// Every object judged as its creation, through the webhook's engine.
void judgeObjects(const ClusterState& state, const Policy& policy, Clock::time_point now,
                  std::vector<ScanFinding>& out, size_t& objects) {
  Engine engine(allRules());
  UserInfo user;
  // Who set an annotation is not known after the fact (break-glass-annotation's notice names it).
  user.username = "(its author; scan cannot tell)";
  user.groups = policy.breakGlass.groups;
  for (const ResourceKind& rk : watchedKinds()) {
    for (const ObjectPtr& o : state.list(rk.storeKey())) {
      ++objects;
      json obj = *o;
      if (!obj.contains("kind")) obj["kind"] = rk.kind;
      if (!obj.contains("apiVersion")) obj["apiVersion"] = rk.apiVersion();
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
        out.push_back({v.rule, rk.kind, req.ns, req.name, severity, std::move(message)});
      }
    }
  }
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

void checkBackups(const ClusterSource& source, const Policy& policy, Clock::time_point now,
                  std::vector<ScanFinding>& out) {
  const Mode mode = policy.modeOf("backup-freshness");
  if (mode == Mode::Off) return;
  const json& params = policy.paramsOf("backup-freshness");
  const auto maxAge =
      parseDuration(params.is_object() && params.contains("maxAge") && params["maxAge"].is_string()
                        ? params["maxAge"].get<std::string>()
                        : "24h")
          .value_or(std::chrono::hours(24));
  const std::string limitText = formatDuration(maxAge);
  const ClusterState& state = *source.state;
  for (const ObjectPtr& pvc : state.list("PersistentVolumeClaim")) {
    if (!rules::claimBound(*pvc)) continue;
    const backups::ClaimBackups found = backups::forClaim(state, *pvc);
    const backups::Copy* good = found.newestGood();
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
         " --wait; Longhorn: back up the volume; or a VolumeSnapshot) and give it a schedule.";
    out.push_back({"backup-stale", "PersistentVolumeClaim", k8s::namespaceOf(*pvc), k8s::name(*pvc),
                   severityOf(mode), std::move(m)});
  }
  const std::vector<backups::Copy> snaps = backups::etcdSnapshots(state);
  const bool expected =
      !snaps.empty() || (source.cache && !source.cache->stats("ETCDSnapshotFile").absent);
  if (!expected) return;
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

void checkQuarantines(const ClusterState& state, std::vector<ScanFinding>& out) {
  for (const ObjectPtr& pv : state.list("PersistentVolume")) {
    auto q = rules::quarantine::of(*pv);
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
                  std::vector<ScanFinding>& out) {
  const Orphans found = findOrphans(state, now, availableFor, {});
  for (const json& p : found.pvs) {
    const std::string name = p["name"].get<std::string>();
    const std::string phase = p["phase"].get<std::string>();
    const std::string reclaim = p["reclaimPolicy"].get<std::string>();
    const std::string backend = p["backend"].get<std::string>();
    std::string m = "PersistentVolume " + name + " (" + p["size"].get<std::string>() +
                    ", reclaim policy " + reclaim + (backend.empty() ? "" : ", " + backend) +
                    ", age " + p["age"].get<std::string>() + ") is " + phase;
    if (phase == "Released") {
      ObjectPtr pv = state.get("PersistentVolume", "", name);
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
           "backend volume deliberately.";
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
    const std::string volume = c["volume"].get<std::string>();
    out.push_back(
        {"claim-unused", "PersistentVolumeClaim", ref.substr(0, slash), ref.substr(slash + 1),
         "note",
         "claim " + ref + " (" + c["phase"].get<std::string>() +
             (volume.empty() ? "" : ", volume " + volume) +
             ") is mounted by no Pod: its storage serves nobody right now. A StatefulSet scaled "
             "down or a stopped app keeps its claims on purpose; if the app is gone, take a "
             "backup (or confirm the data is expendable) and delete the claim deliberately."});
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

void checkStatefulSets(const ClusterState& state, std::vector<ScanFinding>& out) {
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

json findingJson(const ScanFinding& f) {
  return {{"rule", f.rule}, {"kind", f.kind},         {"namespace", f.ns},
          {"name", f.name}, {"severity", f.severity}, {"message", f.message}};
}

json toSarif(const std::vector<ScanFinding>& findings, const std::string& stateFile) {
  json results = json::array();
  for (const auto& f : findings) {
    json location = {{"logicalLocations",
                      json::array({{{"fullyQualifiedName",
                                     f.kind + "/" + (f.ns.empty() ? "" : f.ns + "/") + f.name},
                                    {"kind", "resource"}}})}};
    if (!stateFile.empty())
      location["physicalLocation"] = {{"artifactLocation", {{"uri", stateFile}}}};
    results.push_back(
        {{"ruleId", f.rule},
         {"level", f.severity},
         {"message",
          {{"text", f.message.find(f.name) != std::string::npos ? f.message
                                                                : f.object() + ": " + f.message}}},
         {"locations", json::array({location})}});
  }
  return sarifLog(results, kStateChecks);
}

}  // namespace

int runScan(int argc, char** argv) {
  if (wantsHelp(argc, argv)) {
    std::cout << kUsage;
    return 0;
  }
  auto flags = parseFlags(
      argc, argv, 2, {"cluster-state", "kubeconfig", "policy", "available-for", "output", "o"}, {});
  if (!flags.ok()) return usageError(kUsage, flags.error());
  const Flags& f = flags.value();
  const std::string format = f.get("output", f.get("o", "table"));
  if (format != "table" && format != "json" && format != "sarif")
    return usageError(kUsage, "-o must be table, json or sarif");
  if (!f.positional.empty())
    return usageError(kUsage, "unexpected argument " + f.positional.front());
  if (f.has("cluster-state") == f.has("kubeconfig"))
    return usageError(kUsage, "give exactly one of --cluster-state FILE or --kubeconfig FILE");
  const std::string availableText = f.get("available-for", "24h");
  const auto availableFor = parseDuration(availableText);
  if (!availableFor)
    return usageError(kUsage, "--available-for must be a duration like 30m, 12h or 7d");
  auto policy = loadPolicyFlag(f);
  if (!policy.ok()) return usageError(kUsage, policy.error());

  auto source = openClusterSource(f);
  if (!source.ok()) return usageError(kUsage, source.error());
  const ClusterState& state = *source->state;

  const auto now = Clock::now();
  std::vector<ScanFinding> findings;
  size_t objects = 0;
  judgeObjects(state, policy.value(), now, findings, objects);
  checkBackups(source.value(), policy.value(), now, findings);
  checkQuarantines(state, findings);
  checkOrphans(state, now, *availableFor, availableText, findings);
  checkStatefulSets(state, findings);
  source->stop();

  std::stable_sort(
      findings.begin(), findings.end(), [](const ScanFinding& a, const ScanFinding& b) {
        return std::make_tuple(severityRank(a.severity), a.kind, a.ns, a.name, a.rule) <
               std::make_tuple(severityRank(b.severity), b.kind, b.ns, b.name, b.rule);
      });
  size_t errors = 0, warnings = 0, notes = 0;
  for (const auto& x : findings)
    ++(x.severity == "error" ? errors : x.severity == "warning" ? warnings : notes);

  if (format == "sarif") {
    std::cout << toSarif(findings, f.get("cluster-state")).dump(2) << "\n";
  } else if (format == "json") {
    json list = json::array();
    for (const auto& x : findings) list.push_back(findingJson(x));
    std::cout << json{{"summary",
                       {{"objects", objects},
                        {"findings", findings.size()},
                        {"errors", errors},
                        {"warnings", warnings},
                        {"notes", notes}}},
                      {"findings", list}}
                     .dump(2)
              << "\n";
  } else if (findings.empty()) {
    std::cout << "No hazards found in " << objects << " object(s).\n";
  } else {
    std::vector<std::vector<std::string>> rows = {{"#", "SEVERITY", "RULE", "KIND", "OBJECT"}};
    for (size_t i = 0; i < findings.size(); ++i) {
      const auto& x = findings[i];
      rows.push_back({std::to_string(i + 1), x.severity, x.rule, x.kind,
                      (x.ns.empty() ? "" : x.ns + "/") + x.name});
    }
    printTable(std::cout, rows);
    std::cout << "\n";
    for (size_t i = 0; i < findings.size(); ++i)
      std::cout << "[" << i + 1 << "] " << terminalSafe(findings[i].message) << "\n\n";
    std::cout << findings.size() << " finding(s) in " << objects << " object(s): " << errors
              << " error(s), " << warnings << " warning(s), " << notes << " note(s)\n";
  }
  return findings.empty() ? 0 : 1;
}

}  // namespace stateguard::cli
