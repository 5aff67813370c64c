// stateguardctl scan: the hazards that already exist (webhook/scan.h finds them), as a table,
// JSON or SARIF. docs/scan.md.

#include "webhook/scan.h"

#include <iostream>
#include <string_view>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/quarantine.h"
#include "csi-sidecar/pv_ledger.h"
#include "webhook/rules/registry_mirrors.h"

namespace stateguard::cli {
namespace {

static_assert(std::string_view(csi::kLedgerAnnotation) ==
                  std::string_view(quarantine::kLedgerAnnotation),
              "the webhook reads the quarantine from the annotation the CSI sidecar writes");

constexpr const char* kUsage =
    R"(usage: stateguardctl scan (--cluster-state FILE | --kubeconfig FILE) [--policy FILE]
                          [--available-for DURATION] [-o table|json|sarif]

Judges what already exists. Every rule judges every object (PersistentVolumes, claims,
namespaces, StatefulSets, Pods, StorageClasses, Services, backups and snapshots) as if it were
created now, under --policy (default: the built-in policy), and so does the configuration
that decides whether data survives: S3 lifecycle rules on ACK and Crossplane buckets, Longhorn
RecurringJobs, Velero Schedules, registry mirrors in Talos Cluster API objects, Rancher Clusters
and ConfigMaps (over --kubeconfig only ConfigMaps labelled stateguard.io/registry-config, or the
configLabel each registry rule of the policy reads, are listed). A break-glass annotation is judged
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

json findingJson(const scan::Finding& f) {
  return {{"rule", f.rule}, {"kind", f.kind},         {"namespace", f.ns},
          {"name", f.name}, {"severity", f.severity}, {"message", f.message}};
}

json toSarif(const std::vector<scan::Finding>& findings, const std::string& stateFile) {
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
  return sarifLog(results, scan::stateChecks());
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

  // A state file holds the configuration kinds too; from a cluster they are listed below, not
  // watched (the webhook's RBAC grants only list on them, and every version of a resource would
  // be watched under one store key).
  std::vector<ResourceKind> kinds = watchedKinds();
  if (f.has("cluster-state"))
    kinds.insert(kinds.end(), scan::configurationKinds().begin(), scan::configurationKinds().end());
  auto source = openClusterSource(f, kinds);
  if (!source.ok()) return usageError(kUsage, source.error());
  const ClusterState& state = *source->state;

  scan::Options options;
  // The cache does not watch the configuration kinds: list them once, as the webhook's scan does.
  ObjectStore configuration;
  if (source->cache) {
    auto config = loadKubeconfig(f.get("kubeconfig"));
    if (!config.ok()) return usageError(kUsage, config.error());
    auto client = KubeClient::create(config.value());
    if (!client.ok()) return usageError(kUsage, client.error());
    const auto labels = rules::configLabelsOf(policy.value());
    for (const auto& l : scan::listConfiguration(*client.value(), labels, configuration)) {
      if (!l.error.empty()) {
        source->stop();
        return usageError(kUsage, "could not list " + l.key + ": " + l.error);
      }
    }
    options.configuration = &configuration;
  }
  options.availableFor = *availableFor;
  options.availableText = availableText;
  options.etcdSnapshotsServed = source->cache && !source->cache->stats("ETCDSnapshotFile").absent;
  const scan::Report report = scan::run(state, policy.value(), Clock::now(), options);
  source->stop();
  const std::vector<scan::Finding>& findings = report.findings;
  const size_t objects = report.objects;
  const size_t errors = report.count("error"), warnings = report.count("warning"),
               notes = report.count("note");

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
