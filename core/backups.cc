#include "core/backups.h"

#include <algorithm>

#include "core/k8s.h"
#include "core/quarantine.h"
#include "core/timeutil.h"

namespace stateguard::backups {
namespace {

constexpr const char* kLonghornDriver = "driver.longhorn.io";

std::optional<Clock::time_point> timeAt(const json& obj, const char* pointer) {
  const std::string text = k8s::str(obj, pointer);
  if (text.empty()) return std::nullopt;
  return parseRfc3339(text);
}

bool contains(const json& list, const std::string& value) {
  if (!list.is_array()) return false;
  return std::any_of(list.begin(), list.end(),
                     [&](const json& v) { return v.is_string() && v.get<std::string>() == value; });
}

bool emptyList(const json& v) { return !v.is_array() || v.empty(); }

/// A Velero include/exclude list names claims or volumes ("persistentvolumeclaims", "pvc",
/// "persistentvolumes", "pv", or "*").
bool namesClaims(const json& list) {
  return contains(list, "*") || contains(list, "persistentvolumeclaims") || contains(list, "pvc") ||
         contains(list, "persistentvolumes") || contains(list, "pv");
}

void newestFirst(std::vector<Copy>& copies) {
  std::stable_sort(copies.begin(), copies.end(), [](const Copy& a, const Copy& b) {
    if (a.time.has_value() != b.time.has_value()) return a.time.has_value();
    return a.time.has_value() && *a.time > *b.time;
  });
}

/// The Longhorn volume behind a claim (its PV's CSI volumeHandle), or "" for other drivers and
/// claims whose PV is not in the state.
std::string longhornVolumeOf(const ClusterState& state, const json& pvc) {
  const std::string pvName = k8s::str(pvc, "/spec/volumeName");
  if (pvName.empty()) return "";
  ObjectPtr pv = state.get("PersistentVolume", "", pvName);
  if (!pv || k8s::str(*pv, "/spec/csi/driver") != kLonghornDriver) return "";
  return k8s::str(*pv, "/spec/csi/volumeHandle");
}

/// A VolumeSnapshot or ETCDSnapshotFile: both say status.readyToUse, status.creationTime and
/// status.error.message.
Copy snapshotCopy(const char* source, const json& s) {
  const bool ready = k8s::at(s, "/status/readyToUse") == json(true);
  Copy c{
      source, k8s::ref(s), ready ? "ready" : "not ready", false, timeAt(s, "/status/creationTime"),
      ""};
  if (!ready) {
    const std::string err = k8s::str(s, "/status/error/message");
    c.note = err.empty() ? "not readyToUse" : "failed: " + err;
  } else if (!c.time) {
    c.note = "no status.creationTime";
  } else {
    c.good = true;
  }
  return c;
}

}  // namespace

bool veleroCovers(const json& spec, const json& pvc) {
  const std::string ns = k8s::namespaceOf(pvc);
  const json& included = k8s::at(spec, "/includedNamespaces");
  if (!emptyList(included) && !contains(included, "*") && !contains(included, ns)) return false;
  if (contains(k8s::at(spec, "/excludedNamespaces"), ns)) return false;
  const json& resources = k8s::at(spec, "/includedResources");
  if (!emptyList(resources) && !namesClaims(resources)) return false;
  if (namesClaims(k8s::at(spec, "/excludedResources"))) return false;
  const json& match = k8s::at(spec, "/labelSelector/matchLabels");
  if (match.is_object()) {
    for (const auto& [key, value] : match.items()) {
      auto have = k8s::label(pvc, key);
      if (!have || !value.is_string() || *have != value.get<std::string>()) return false;
    }
  }
  return true;
}

const Copy* newestGood(const std::vector<Copy>& copies) {
  for (const auto& c : copies)
    if (c.good) return &c;
  return nullptr;
}

const Copy* newerFailure(const std::vector<Copy>& copies) {
  if (copies.empty() || copies.front().good) return nullptr;
  const Copy* good = newestGood(copies);
  if (good == nullptr || !copies.front().time) return &copies.front();
  return (good->time && *copies.front().time > *good->time) ? &copies.front() : nullptr;
}

const Copy* ClaimBackups::newestGood() const { return backups::newestGood(copies); }

const Copy* ClaimBackups::newerFailure() const { return backups::newerFailure(copies); }

ClaimBackups forClaim(const ClusterState& state, const json& pvc) {
  ClaimBackups out;
  out.claim = k8s::ref(pvc);
  const std::string ns = k8s::namespaceOf(pvc);
  const std::string claimName = k8s::name(pvc);
  out.pv = k8s::str(pvc, "/spec/volumeName");
  out.longhornVolume = longhornVolumeOf(state, pvc);

  for (const ObjectPtr& b : state.list(kVeleroBackup)) {
    const json& spec = k8s::at(*b, "/spec");
    if (!veleroCovers(spec, pvc)) continue;
    Copy c{"Velero Backup",
           k8s::ref(*b),
           k8s::str(*b, "/status/phase"),
           false,
           timeAt(*b, "/status/completionTimestamp"),
           ""};
    if (c.state.empty()) c.state = "New";
    const bool objectsOnly = k8s::at(spec, "/snapshotVolumes") == json(false) &&
                             k8s::at(spec, "/defaultVolumesToFsBackup") != json(true);
    if (c.state != "Completed") {
      c.note = c.state == "PartiallyFailed" ? "some items failed: not a trusted copy"
                                            : "did not complete";
    } else if (objectsOnly) {
      c.note = "objects only: snapshotVolumes is false and defaultVolumesToFsBackup is not set";
    } else if (!c.time) {
      c.note = "no status.completionTimestamp";
    } else {
      c.good = true;
    }
    if (!c.time) c.time = timeAt(*b, "/status/startTimestamp");
    out.copies.push_back(std::move(c));
  }

  if (!out.longhornVolume.empty()) {
    for (const ObjectPtr& b : state.list(kLonghornBackup)) {
      std::string volume = k8s::str(*b, "/status/volumeName");
      if (volume.empty()) volume = k8s::label(*b, "backup-volume").value_or("");
      if (volume != out.longhornVolume) continue;
      Copy c{"Longhorn Backup",
             k8s::ref(*b),
             k8s::str(*b, "/status/state"),
             false,
             timeAt(*b, "/status/backupCreatedAt"),
             ""};
      if (c.state.empty()) c.state = "New";
      if (c.state != "Completed") {
        c.note = c.state == "Error" ? "failed: " + k8s::str(*b, "/status/error") : "not finished";
      } else if (!c.time) {
        c.note = "no status.backupCreatedAt";
      } else {
        c.good = true;
      }
      out.copies.push_back(std::move(c));
    }
  }

  for (const ObjectPtr& s : state.list("VolumeSnapshot", ns)) {
    if (k8s::str(*s, "/spec/source/persistentVolumeClaimName") != claimName) continue;
    out.copies.push_back(snapshotCopy("VolumeSnapshot", *s));
  }
  // Seed 1: a volume that read blank was backed up, and the blank copy replaced the last good
  // one. A copy taken once stateguard-csi had quarantined the volume holds what the device held
  // then, not the volume's data: it is not a good copy, to restore from or to count as fresh.
  if (ObjectPtr pv = out.pv.empty() ? nullptr : state.get("PersistentVolume", "", out.pv)) {
    const auto q = quarantine::of(*pv);
    const auto since = q && q->unreadable.empty() ? parseRfc3339(q->since) : std::nullopt;
    for (Copy& c : out.copies) {
      if (!since || !c.good || !c.time || *c.time < *since) continue;
      c.good = false;
      c.note = "taken after stateguard-csi quarantined the volume (" + q->since +
               "): it holds what the device held then, not the volume's data";
    }
  }
  newestFirst(out.copies);
  return out;
}

std::vector<Copy> etcdSnapshots(const ClusterState& state) {
  std::vector<Copy> out;
  for (const ObjectPtr& s : state.list("ETCDSnapshotFile")) {
    out.push_back(snapshotCopy("ETCDSnapshotFile", *s));
  }
  newestFirst(out);
  return out;
}

std::vector<std::string> retentionFor(const ClusterState& state, const json& pvc) {
  std::vector<std::string> out;
  // Longhorn applies a RecurringJob to a volume named by a job label, through a group label, or
  // through the "default" group when the volume has no recurring-job labels at all; the
  // labels are set on the Longhorn volume or, synced from it, on the claim.
  bool anyLabel = false;
  const json& labels = k8s::at(pvc, "/metadata/labels");
  if (labels.is_object()) {
    for (const auto& [key, value] : labels.items()) {
      if (key.rfind("recurring-job.longhorn.io/", 0) == 0 ||
          key.rfind("recurring-job-group.longhorn.io/", 0) == 0)
        anyLabel = true;
    }
  }
  if (!longhornVolumeOf(state, pvc).empty()) {
    for (const ObjectPtr& job : state.list("RecurringJob")) {
      const std::string task = k8s::str(*job, "/spec/task");
      if (task != "backup" && task != "snapshot" && task != "backup-force-create" &&
          task != "snapshot-force-create")
        continue;
      const std::string jobName = k8s::name(*job);
      bool applies = k8s::label(pvc, "recurring-job.longhorn.io/" + jobName) == "enabled";
      const json& groups = k8s::at(*job, "/spec/groups");
      if (groups.is_array()) {
        for (const auto& g : groups) {
          if (!g.is_string()) continue;
          const std::string group = g.get<std::string>();
          if (k8s::label(pvc, "recurring-job-group.longhorn.io/" + group) == "enabled" ||
              (group == "default" && !anyLabel))
            applies = true;
        }
      }
      if (!applies) continue;
      const json& retain = k8s::at(*job, "/spec/retain");
      out.push_back("Longhorn RecurringJob " + k8s::ref(*job) + " (" + task + ", " +
                    k8s::str(*job, "/spec/cron") + ", keeps " +
                    (retain.is_number() ? retain.dump() : "?") + ")");
    }
  }
  for (const ObjectPtr& sched : state.list("Schedule")) {
    const json& tmpl = k8s::at(*sched, "/spec/template");
    if (!tmpl.is_object() || !veleroCovers(tmpl, pvc)) continue;
    const std::string ttl = k8s::str(*sched, "/spec/template/ttl");
    const bool paused = k8s::at(*sched, "/spec/paused") == json(true);
    out.push_back("Velero Schedule " + k8s::ref(*sched) + " (" +
                  k8s::str(*sched, "/spec/schedule") + ", ttl " + (ttl.empty() ? "default" : ttl) +
                  (paused ? ", PAUSED" : "") + ")");
  }
  return out;
}

std::string age(Clock::time_point t, Clock::time_point now) {
  if (t > now) return "in the future";
  return formatDuration(std::chrono::duration_cast<std::chrono::seconds>(now - t)) + " old";
}

}  // namespace stateguard::backups
