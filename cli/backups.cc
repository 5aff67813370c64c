// stateguardctl backups: "when was the last good backup?" per claim and for etcd, from a cluster
// or a saved state file (the same lookup rule backup-freshness uses), and an inspection of a
// locally mirrored etcd-manager (kops) backup store: control files present and readable, newest
// snapshot. Exit 1 when anything is stale or uncovered, for cron and CI.

#include "core/backups.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/k8s.h"
#include "core/kube_client.h"
#include "core/watch_cache.h"
#include "webhook/rules/common.h"

namespace stateguard::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage =
    R"(usage: stateguardctl backups [--cluster-state FILE | --kubeconfig FILE] [--etcd-manager-store DIR]
                             [--max-age DURATION] [--namespace NS] [-o table|json]

Per bound PersistentVolumeClaim: the newest successful backup (Velero Backup, Longhorn Backup,
VolumeSnapshot), its age, the schedules keeping it (Longhorn RecurringJob, Velero Schedule), and
whether it is ok, STALE (older than --max-age, default 24h) or UNCOVERED (none at all). For etcd:
the newest ready k3s/RKE2 ETCDSnapshotFile. Failed, PartiallyFailed, unfinished and object-only
backups do not count; a newer one that failed is named.

--etcd-manager-store DIR inspects a local copy of a kops etcd-manager backup store (e.g. made
with `aws s3 sync s3://<state-store>/<cluster>/backups/etcd DIR`): for each etcd cluster under it
(main, events), the control files (control/etcd-cluster-spec, control/etcd-cluster-created) and
the newest backup's time from its _etcd_backup.meta.

Give at least one of --cluster-state, --kubeconfig, --etcd-manager-store.
Exit 0 all fresh, 1 anything stale, uncovered or missing, 2 unusable input.
Example: stateguardctl backups --kubeconfig ~/.kube/config --max-age 36h -o json
)";

/// One etcd-manager cluster folder (".../backups/etcd/main").
struct StoreReport {
  std::string path;
  /// "" when both control files are present and readable, else "CONTROL FILES MISSING" or
  /// "CONTROL FILES UNREADABLE" (the cluster spec is there but etcd-manager cannot parse it).
  std::string controlFault;
  std::vector<std::string> problems;  ///< control-file problems, each a full sentence
  std::string spec;                   ///< "3 members, etcd 3.5.9" when readable
  size_t backups = 0;                 ///< backups with a readable meta and data file
  std::vector<std::string> broken;    ///< backups that do not count, with why
  std::string newest;                 ///< folder name of the newest good backup
  std::optional<Clock::time_point> newestTime;
};

/// JSON or a discarded value (never throws).
json parseLoose(const std::string& text) { return json::parse(text, nullptr, false); }

/// A protojson int64 is a string; older writers used numbers.
std::optional<long long> jsonInt(const json& v) {
  if (v.is_number_integer()) return v.get<long long>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    return std::stoll(s);
  }
  return std::nullopt;
}

StoreReport inspectStore(const fs::path& base) {
  StoreReport r;
  r.path = base.string();
  const fs::path control = base / "control";
  const fs::path specFile = control / "etcd-cluster-spec";
  const fs::path createdFile = control / "etcd-cluster-created";
  if (auto spec = readFile(specFile.string()); spec.ok()) {
    const json parsed = parseLoose(spec.value());
    const json* obj = parsed.is_object() ? &parsed : nullptr;
    auto members = obj ? jsonInt(obj->value("memberCount", json())) : std::nullopt;
    const std::string version = obj ? k8s::str(*obj, "/etcdVersion") : "";
    if (!members || version.empty()) {
      r.controlFault = "CONTROL FILES UNREADABLE";
      r.problems.push_back(
          specFile.string() +
          " is not a readable cluster spec (want JSON with memberCount and etcdVersion): "
          "etcd-manager fails on it and takes no backups. Restore it from a backup's "
          "_etcd_backup.meta clusterSpec.");
    } else {
      r.spec =
          std::to_string(*members) + (*members == 1 ? " member" : " members") + ", etcd " + version;
    }
  } else {
    r.problems.push_back(
        specFile.string() +
        " is missing: etcd-manager finds \"no cluster spec set - must seed new cluster\", stops "
        "taking backups, and the next restart will seed a new empty cluster. Restore the file "
        "(its content is the clusterSpec of the newest _etcd_backup.meta) before any etcd "
        "restart, then restart the etcd-manager leader.");
  }
  if (auto created = readFile(createdFile.string()); created.ok()) {
    if (created->empty()) {
      r.problems.push_back(createdFile.string() +
                           " is empty: etcd-manager refuses it (\"marker file was unexpectedly "
                           "empty\"). Write {\"timestamp\":<unix nanoseconds>} into it.");
    }
  } else {
    r.problems.push_back(
        createdFile.string() +
        " is missing: the next restart will seed a new empty cluster and move the current data "
        "directory to data-trashcan/. Restore the file ({\"timestamp\":<unix nanoseconds>}) "
        "before any etcd restart.");
  }

  if (!r.problems.empty() && r.controlFault.empty()) r.controlFault = "CONTROL FILES MISSING";

  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(base, ec)) {
    if (!entry.is_directory() || entry.path().filename() == "control") continue;
    const std::string name = entry.path().filename().string();
    const fs::path metaFile = entry.path() / "_etcd_backup.meta";
    auto meta = readFile(metaFile.string());
    if (!meta.ok()) continue;  // not a backup folder
    const json parsed = parseLoose(meta.value());
    auto ts = parsed.is_object() ? jsonInt(parsed.value("timestamp", json())) : std::nullopt;
    if (!ts) {
      r.broken.push_back(name + ": _etcd_backup.meta has no readable timestamp");
      continue;
    }
    if (!fs::exists(entry.path() / "etcd.backup.gz")) {
      r.broken.push_back(name + ": etcd.backup.gz is missing");
      continue;
    }
    ++r.backups;
    const Clock::time_point t{std::chrono::seconds(*ts)};
    if (!r.newestTime || t > *r.newestTime) {
      r.newestTime = t;
      r.newest = name;
    }
  }
  std::sort(r.broken.begin(), r.broken.end());
  return r;
}

/// Folders under `dir` that are etcd-manager backup bases: they hold control/, or sit at
/// backups/etcd/<name>. `dir` itself may be one.
void findStores(const fs::path& dir, int depth, std::vector<fs::path>& out) {
  std::error_code ec;
  const bool atEtcd = dir.parent_path().filename() == "etcd" &&
                      dir.parent_path().parent_path().filename() == "backups";
  if (fs::is_directory(dir / "control", ec) || atEtcd) {
    out.push_back(dir);
    return;
  }
  if (depth <= 0) return;
  std::vector<fs::path> children;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory()) children.push_back(e.path());
  std::sort(children.begin(), children.end());
  for (const auto& c : children) findStores(c, depth - 1, out);
}

json copyJson(const backups::Copy& c, Clock::time_point now) {
  json j = {{"source", c.source}, {"name", c.name}, {"state", c.state}};
  if (c.time) {
    j["time"] = formatRfc3339(*c.time);
    j["age"] = backups::age(*c.time, now);
  }
  if (!c.note.empty()) j["note"] = c.note;
  return j;
}

/// "a newer Velero Backup velero/x did not count (PartiallyFailed: some items failed: ...)",
/// from copyJson's form.
std::string failureNote(const json& copy) {
  return "a newer " + copy["source"].get<std::string>() + " " + copy["name"].get<std::string>() +
         " did not count (" + copy["state"].get<std::string>() +
         (copy.contains("note") ? ": " + copy["note"].get<std::string>() : "") + ")";
}

std::string status(const backups::Copy* good, Clock::time_point now, std::chrono::seconds maxAge) {
  if (good == nullptr || !good->time) return "UNCOVERED";
  return now - *good->time > maxAge ? "STALE" : "ok";
}

}  // namespace

int runBackups(int argc, char** argv) {
  if (wantsHelp(argc, argv)) {
    std::cout << kUsage;
    return 0;
  }
  auto flags = parseFlags(
      argc, argv, 2,
      {"cluster-state", "kubeconfig", "etcd-manager-store", "max-age", "namespace", "output", "o"},
      {});
  if (!flags.ok()) return usageError(kUsage, flags.error());
  const Flags& f = flags.value();
  const std::string format = f.get("output", f.get("o", "table"));
  if (format != "table" && format != "json") return usageError(kUsage, "-o must be table or json");
  if (!f.positional.empty())
    return usageError(kUsage, "unexpected argument " + f.positional.front());
  if (f.has("cluster-state") && f.has("kubeconfig"))
    return usageError(kUsage, "give one of --cluster-state FILE or --kubeconfig FILE, not both");
  if (!f.has("cluster-state") && !f.has("kubeconfig") && !f.has("etcd-manager-store"))
    return usageError(kUsage,
                      "give --cluster-state FILE, --kubeconfig FILE or --etcd-manager-store DIR");
  const std::string maxAgeText = f.get("max-age", "24h");
  const auto maxAge = parseDuration(maxAgeText);
  if (!maxAge) return usageError(kUsage, "--max-age must be a duration like 30m, 36h or 7d");

  std::vector<fs::path> stores;
  if (f.has("etcd-manager-store")) {
    const fs::path dir = f.get("etcd-manager-store");
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      return usageError(kUsage, "--etcd-manager-store " + dir.string() + ": not a directory");
    findStores(dir, 6, stores);
    if (stores.empty()) {
      std::cerr << "stateguardctl backups: " << dir.string()
                << ": no etcd-manager backup store found (looked for control/ folders and "
                   "backups/etcd/<cluster> folders up to 6 levels down)\n";
      return 2;
    }
  }

  // Backup state plus the schedules that keep it.
  std::vector<ResourceKind> kinds = watchedKinds();
  for (const auto& k : backupScheduleKinds()) kinds.push_back(k);
  ClusterSource source;  // stays empty with only --etcd-manager-store
  if (f.has("cluster-state") || f.has("kubeconfig")) {
    auto opened = openClusterSource(f, kinds);
    if (!opened.ok()) return usageError(kUsage, opened.error());
    source = opened.value();
  }
  const ClusterState* state = source.state.get();

  const auto now = Clock::now();
  size_t ok = 0, stale = 0, uncovered = 0;
  auto tally = [&](const std::string& st) {
    ++(st == "ok" ? ok : st == "STALE" ? stale : uncovered);
  };
  json claims = json::array();
  json etcd = nullptr;
  if (state) {
    for (const ObjectPtr& pvc : state->list("PersistentVolumeClaim", f.get("namespace", ""))) {
      if (!rules::claimBound(*pvc)) continue;
      const backups::ClaimBackups found = backups::forClaim(*state, *pvc);
      const backups::Copy* good = found.newestGood();
      const std::string st = status(good, now, *maxAge);
      tally(st);
      json row = {{"claim", found.claim},
                  {"volume", found.pv},
                  {"status", st},
                  {"retention", backups::retentionFor(*state, *pvc)}};
      row["newestGood"] = good ? copyJson(*good, now) : json(nullptr);
      if (const backups::Copy* failed = found.newerFailure())
        row["newerFailure"] = copyJson(*failed, now);
      claims.push_back(std::move(row));
    }
    const std::vector<backups::Copy> snaps = backups::etcdSnapshots(*state);
    // With a live cluster, an installed ETCDSnapshotFile CRD without snapshots is uncovered;
    // from a file, no snapshots may just mean a cluster without embedded etcd.
    const bool expected =
        !snaps.empty() || (source.cache && !source.cache->stats("ETCDSnapshotFile").absent);
    if (expected) {
      const backups::Copy* good = backups::newestGood(snaps);
      const std::string st = status(good, now, *maxAge);
      tally(st);
      etcd = {{"source", "ETCDSnapshotFile"}, {"status", st}, {"snapshots", snaps.size()}};
      etcd["newestGood"] = good ? copyJson(*good, now) : json(nullptr);
      if (const backups::Copy* failed = backups::newerFailure(snaps))
        etcd["newerFailure"] = copyJson(*failed, now);
    }
  }
  source.stop();

  json storeRows = json::array();
  for (const auto& dir : stores) {
    const StoreReport r = inspectStore(dir);
    const std::string st = !r.controlFault.empty()         ? r.controlFault
                           : !r.newestTime                 ? "UNCOVERED"
                           : now - *r.newestTime > *maxAge ? "STALE"
                                                           : "ok";
    tally(st);
    json row = {{"store", r.path},
                {"status", st},
                {"problems", r.problems},
                {"backups", r.backups},
                {"brokenBackups", r.broken}};
    if (!r.spec.empty()) row["clusterSpec"] = r.spec;
    if (r.newestTime)
      row["newest"] = {{"name", r.newest},
                       {"time", formatRfc3339(*r.newestTime)},
                       {"age", backups::age(*r.newestTime, now)}};
    storeRows.push_back(std::move(row));
  }

  const int exitCode = stale + uncovered == 0 ? 0 : 1;
  if (format == "json") {
    std::cout << json{{"maxAge", maxAgeText},
                      {"summary", {{"ok", ok}, {"stale", stale}, {"uncovered", uncovered}}},
                      {"claims", claims},
                      {"etcd", etcd},
                      {"etcdManagerStores", storeRows}}
                     .dump(2)
              << "\n";
    return exitCode;
  }

  if (state) {
    std::cout << "Claims (newest successful backup; stale after " << maxAgeText
              << "): " << claims.size() << "\n";
    std::vector<std::vector<std::string>> rows = {
        {"CLAIM", "VOLUME", "NEWEST GOOD BACKUP", "AGE", "STATUS", "RETENTION"}};
    std::vector<std::string> notes;
    for (const auto& c : claims) {
      const json& g = c["newestGood"];
      std::string retention;
      for (const auto& r : c["retention"])
        retention += (retention.empty() ? "" : "; ") + r.get<std::string>();
      rows.push_back(
          {c["claim"].get<std::string>(), c["volume"].get<std::string>(),
           g.is_null() ? "-" : g["source"].get<std::string>() + " " + g["name"].get<std::string>(),
           g.is_null() ? "-" : g.value("age", "?"), c["status"].get<std::string>(),
           retention.empty() ? "none seen" : retention});
      if (c.contains("newerFailure"))
        notes.push_back(c["claim"].get<std::string>() + ": " + failureNote(c["newerFailure"]));
    }
    printTable(std::cout, rows);
    for (const auto& n : notes) std::cout << "  note: " << n << "\n";
    if (etcd.is_null()) {
      std::cout << "etcd: no ETCDSnapshotFile seen (k3s/RKE2 with embedded etcd lists its "
                   "snapshots there; for kops use --etcd-manager-store)\n";
    } else {
      const json& g = etcd["newestGood"];
      std::cout << "etcd (" << etcd["snapshots"].get<size_t>() << " ETCDSnapshotFiles): "
                << (g.is_null() ? "no ready snapshot"
                                : "newest ready " + g["name"].get<std::string>() + " from " +
                                      g["time"].get<std::string>() + " (" +
                                      g["age"].get<std::string>() + ")")
                << "  " << etcd["status"].get<std::string>() << "\n";
      if (etcd.contains("newerFailure"))
        std::cout << "  note: " << failureNote(etcd["newerFailure"]) << "\n";
    }
  }
  for (const auto& s : storeRows) {
    std::cout << "etcd-manager store " << s["store"].get<std::string>() << ": "
              << s["status"].get<std::string>() << "\n";
    if (s.contains("clusterSpec"))
      std::cout << "  control files: present (" << s["clusterSpec"].get<std::string>() << ")\n";
    for (const auto& p : s["problems"]) std::cout << "  " << p.get<std::string>() << "\n";
    if (s.contains("newest")) {
      std::cout << "  newest backup: " << s["newest"]["name"].get<std::string>() << " ("
                << s["newest"]["time"].get<std::string>() << ", "
                << s["newest"]["age"].get<std::string>() << "), " << s["backups"].get<size_t>()
                << " usable backups\n";
    } else {
      std::cout << "  no usable backup\n";
    }
    for (const auto& b : s["brokenBackups"])
      std::cout << "  does not count: " << b.get<std::string>() << "\n";
  }
  std::cout << "Summary: " << ok << " ok, " << stale << " stale, " << uncovered
            << " uncovered or missing\n";
  return exitCode;
}

}  // namespace stateguard::cli
