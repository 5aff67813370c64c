#pragma once
// The judgement of rule backup-lifecycle, shared with `stateguardctl lint`, which also reads raw
// lifecycle JSON (as given to `aws s3api put-bucket-lifecycle-configuration`) and takes the
// etcd-manager store paths from kops Cluster specs.

#include <string>
#include <vector>

#include "webhook/rule.h"

namespace stateguard::rules::lifecycle {

/// Where the lifecycle rules come from, for messages.
struct Source {
  std::string what;   ///< "ACK Bucket infra/kops-state", "S3 lifecycle configuration x.json"
  std::string field;  ///< "spec.lifecycle.rules", "Rules"
  std::string ref;    ///< short name for the warning: "infra/kops-state", "x.json"
};

/// The rule's protectedPrefixes parameter (etcd-manager's control/ paths by default).
std::vector<std::string> protectedPaths(const json& params);

/// AWS API JSON rules (`Rules[]` with `ID`, `Filter.Prefix`, `Expiration.Days`, ...) in the
/// spelling of the Kubernetes objects (`id`, `filter.prefix`, `expiration.days`).
json fromAwsJson(const json& rules);

/// A kops Cluster's etcd-manager control paths inside its bucket
/// ("prod.k8s.local/backups/etcd/main/control/"), from spec.etcdClusters[].backups.backupStore
/// or spec.configBase.
std::vector<std::string> kopsControlPaths(const json& cluster);

/// One violation per Enabled, expiring rule in `rules` (not in `oldRules`) whose prefix covers a
/// protected path. `hint` ends each message (how to override).
std::vector<Finding> judge(const json& rules, const json& oldRules, const Source& src,
                           const std::vector<std::string>& protectedPaths, const std::string& hint);

}  // namespace stateguard::rules::lifecycle
