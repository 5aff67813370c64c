// backup-lifecycle: an S3 lifecycle rule that expires objects under an etcd-manager (kops) backup
// store's control/ path. etcd-manager keeps `control/etcd-cluster-spec` and
// `control/etcd-cluster-created` beside the backups (`<cluster>/backups/etcd/<main|events>/`); a
// rule meant to expire old snapshots that also covers control/ deletes them, backups stop, and
// the next restart seeds a new empty etcd cluster. Read from ACK and Crossplane (Upbound and
// classic) S3 objects. Destructive: denied by default.

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "core/k8s.h"
#include "webhook/rules/backup-lifecycle/lifecycle.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

constexpr const char* kId = "backup-lifecycle";

/// etcd-manager's layout: `*/` stands for the state store path and cluster name.
const std::vector<std::string> kDefaultProtected = {"*/backups/etcd/main/control/",
                                                    "*/backups/etcd/events/control/"};

/// Crossplane Upbound v1beta1/v1beta2 nest blocks as one-element lists, the others as objects.
const json& one(const json& v) {
  static const json kNull;
  if (v.is_array()) return v.empty() ? kNull : v.front();
  return v;
}

/// A string field, "" when absent or not a string.
std::string text(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

bool nonEmpty(const json& v) {
  return (v.is_array() || v.is_object()) ? !v.empty() : (v.is_string() && !v.empty());
}

/// `a` is a prefix of `b`, or `b` of `a`: some key starts with both.
bool compatible(const std::string& a, const std::string& b) {
  return a.size() <= b.size() ? b.compare(0, a.size(), a) == 0 : a.compare(0, b.size(), b) == 0;
}

/// The control path a lifecycle prefix reaches under the protected path `entry`, as concrete as
/// the prefix makes it ("c1/backups/etcd/main/control/"), or nullopt. A leading `*/` in `entry`
/// matches zero or more whole path segments (the state store path and cluster name), none of them
/// equal to the segment that follows it, so `c1/backups/etcd/main/2024-` does not reach
/// `c1/backups/etcd/main/control/` through a `backups` folder further down; anything else is
/// literal.
std::optional<std::string> covers(const std::string& prefix, const std::string& entry) {
  if (entry.rfind("*/", 0) != 0) {
    if (compatible(prefix, entry)) return entry;
    return std::nullopt;
  }
  const std::string rest = entry.substr(2);
  const std::string first = rest.substr(0, rest.find('/'));
  if (prefix.empty()) return "<cluster>/" + rest;
  // The prefix must reach into the protected part (e.g. "<cluster>/backups/etcd/main"): a
  // prefix that ends before it ("logs/", "<cluster>/") could hold a store only by naming
  // convention, and denying every such rule on every bucket would refuse ordinary log expiry.
  // Stores at a known path are listed in the policy without the wildcard.
  size_t i = 0;
  while (i < prefix.size()) {
    if (compatible(prefix.substr(i), rest)) return prefix.substr(0, i) + rest;
    const size_t slash = prefix.find('/', i);
    if (slash == std::string::npos) return std::nullopt;
    if (prefix.compare(i, slash - i, first) == 0) return std::nullopt;  // the wildcard stops here
    i = slash + 1;
  }
  return std::nullopt;
}

/// Where an object kind keeps its lifecycle rules.
struct Place {
  lifecycle::Source source;
  const char* pointer;  ///< "/spec/lifecycle/rules"
};

/// AWS API key ("NoncurrentDays", "ID") in the Kubernetes objects' spelling ("noncurrentDays",
/// "id").
std::string camel(const std::string& key) {
  if (key == "ID") return "id";
  std::string out = key;
  if (!out.empty()) out[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(out[0])));
  return out;
}

json camelKeys(const json& v) {
  if (v.is_array()) {
    json out = json::array();
    for (const auto& item : v) out.push_back(camelKeys(item));
    return out;
  }
  if (!v.is_object()) return v;
  json out = json::object();
  for (const auto& [key, value] : v.items()) out[camel(key)] = camelKeys(value);
  return out;
}

/// "s3://bucket/a/b" -> "a/b" (the key prefix inside the bucket); "" when not an s3:// URL.
std::string keyPath(const std::string& url) {
  if (url.rfind("s3://", 0) != 0) return "";
  const auto slash = url.find('/', 5);
  if (slash == std::string::npos) return "";
  std::string path = url.substr(slash + 1);
  while (!path.empty() && path.back() == '/') path.pop_back();
  return path;
}

}  // namespace

namespace lifecycle {

std::vector<std::string> protectedPaths(const json& params) {
  std::vector<std::string> out;
  const json& param =
      params.contains("protectedPrefixes") ? params["protectedPrefixes"] : json(kDefaultProtected);
  if (param.is_array()) {
    for (const auto& p : param)
      if (p.is_string()) out.push_back(p.get<std::string>());
  }
  return out;
}

json fromAwsJson(const json& rules) { return camelKeys(rules); }

std::vector<std::string> kopsControlPaths(const json& cluster) {
  std::vector<std::string> out;
  const std::string base = keyPath(k8s::str(cluster, "/spec/configBase"));
  const json& etcds = k8s::at(cluster, "/spec/etcdClusters");
  if (!etcds.is_array()) return out;
  for (const auto& e : etcds) {
    const std::string name = k8s::str(e, "/name");
    std::string store = keyPath(k8s::str(e, "/backups/backupStore"));
    if (store.empty() && !base.empty() && !name.empty()) store = base + "/backups/etcd/" + name;
    if (!store.empty()) out.push_back(store + "/control/");
  }
  return out;
}

std::vector<Finding> judge(const json& rules, const json& oldRules, const Source& src,
                           const std::vector<std::string>& protectedPaths,
                           const std::string& hint) {
  if (!rules.is_array()) return {};
  std::vector<Finding> out;
  for (size_t idx = 0; idx < rules.size(); ++idx) {
    const json& r = rules[idx];
    if (!r.is_object() || text(r, "status") != "Enabled") continue;
    if (oldRules.is_array() && std::find(oldRules.begin(), oldRules.end(), r) != oldRules.end())
      continue;

    // What it deletes: current objects (Expiration with days or date), or old versions.
    const json exp = one(r.value("expiration", json()));
    const json nve = one(r.value("noncurrentVersionExpiration", json()));
    std::string action;
    if (exp.is_object() && exp.contains("days") && !exp["days"].is_null()) {
      action =
          "expires objects after " + exp["days"].dump() + (exp["days"] == 1 ? " day" : " days");
    } else if (exp.is_object() && !text(exp, "date").empty()) {
      action = "expires objects on " + text(exp, "date");
    } else if (nve.is_object() && !nve.empty()) {
      action = "expires noncurrent versions" +
               (nve.contains("noncurrentDays") ? " after " + nve["noncurrentDays"].dump() +
                                                     (nve["noncurrentDays"] == 1 ? " day" : " days")
                                               : std::string());
    } else {
      continue;
    }

    // Which keys: filter.prefix, filter.and.prefix, or the legacy top-level prefix.
    const json filter = one(r.value("filter", json()));
    const json andBlock = filter.is_object() ? one(filter.value("and", json())) : json();
    // A tag condition limits it to tagged objects; etcd-manager writes its files untagged.
    if (filter.is_object() && (nonEmpty(filter.value("tag", json())) ||
                               (andBlock.is_object() && nonEmpty(andBlock.value("tags", json())))))
      continue;
    std::string prefix;
    if (filter.is_object() && !text(filter, "prefix").empty()) {
      prefix = text(filter, "prefix");
    } else if (andBlock.is_object() && !text(andBlock, "prefix").empty()) {
      prefix = text(andBlock, "prefix");
    } else {
      prefix = text(r, "prefix");
    }

    std::vector<std::string> hits;
    for (const auto& p : protectedPaths) {
      if (auto path = covers(prefix, p)) hits.push_back(*path);
    }
    if (hits.empty()) continue;

    const std::string name =
        "lifecycle rule " + (!text(r, "id").empty() ? "\"" + text(r, "id") + "\" (" + src.field +
                                                          "[" + std::to_string(idx) + "])"
                                                    : src.field + "[" + std::to_string(idx) + "]");
    const std::string scope = prefix.empty()
                                  ? "has no prefix, so it applies to every object in the bucket"
                                  : "has prefix \"" + prefix + "\"";
    std::string control;
    for (size_t h = 0; h < hits.size(); ++h)
      control += (h == 0 ? "" : h + 1 == hits.size() ? " and " : ", ") + hits[h];
    out.push_back(violation(
        src.what + ": " + name + " " + scope + " and " + action +
            "; that covers etcd-manager's control files under " + control +
            " (etcd-cluster-spec, etcd-cluster-created), which live beside the backups. Once "
            "they expire, etcd-manager silently stops taking backups, and its next restart "
            "finds no control files and seeds a brand-new empty etcd cluster (a kops cluster "
            "lost its etcd this way to a rule meant to expire old snapshots). Fix: give the "
            "rule a prefix that cannot reach control/ (no lifecycle rule on the backups "
            "folder itself; S3 prefixes cannot exclude a subfolder), or drop it and let "
            "etcd-manager prune its own backups with kops "
            "spec.etcdClusters[].manager.backupRetentionDays. " +
            hint,
        // Warnings stay under 120 characters: the object, the rule, what it expires.
        src.ref + ": rule " + (!text(r, "id").empty() ? text(r, "id") : "#" + std::to_string(idx)) +
            " expires etcd-manager control/ files"));
  }
  return out;
}

}  // namespace lifecycle
namespace {

/// Rule backup-lifecycle (see file comment).
class BackupLifecycle : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        kId,
        "S3 lifecycle rule (ACK Bucket, Crossplane BucketLifecycleConfiguration or Bucket) that "
        "expires etcd-manager's control/ files",
        Mode::Enforce,
        json{{"protectedPrefixes", kDefaultProtected}},
        {{"s3.services.k8s.aws", "v1alpha1", "buckets", "Bucket", {"CREATE", "UPDATE"}},
         {"s3.aws.upbound.io",
          "v1beta1",
          "bucketlifecycleconfigurations",
          "BucketLifecycleConfiguration",
          {"CREATE", "UPDATE"}},
         {"s3.aws.upbound.io",
          "v1beta2",
          "bucketlifecycleconfigurations",
          "BucketLifecycleConfiguration",
          {"CREATE", "UPDATE"}},
         {"s3.aws.upbound.io",
          "v1beta3",
          "bucketlifecycleconfigurations",
          "BucketLifecycleConfiguration",
          {"CREATE", "UPDATE"}},
         {"s3.aws.crossplane.io", "v1beta1", "buckets", "Bucket", {"CREATE", "UPDATE"}}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    const json& obj = ctx.request.object;
    Place place;
    if (ctx.request.group == "s3.services.k8s.aws") {
      place = {{"ACK Bucket " + k8s::ref(obj), "spec.lifecycle.rules", k8s::ref(obj)},
               "/spec/lifecycle/rules"};
    } else if (ctx.request.group == "s3.aws.upbound.io") {
      place = {{"Crossplane BucketLifecycleConfiguration " + k8s::ref(obj), "spec.forProvider.rule",
                k8s::ref(obj)},
               "/spec/forProvider/rule"};
    } else if (ctx.request.group == "s3.aws.crossplane.io") {
      place = {{"Crossplane Bucket " + k8s::ref(obj),
                "spec.forProvider.lifecycleConfiguration.rules", k8s::ref(obj)},
               "/spec/forProvider/lifecycleConfiguration/rules"};
    } else {
      return {};
    }
    const json& rules = k8s::at(obj, place.pointer);
    // On UPDATE only new or changed lifecycle rules count: the controllers (ACK, Crossplane)
    // update their objects' metadata all the time, and must not be wedged by a rule that was
    // already there (which this rule, or stateguardctl lint, flagged when it was added).
    const json& oldRules = ctx.request.oldObject.is_object()
                               ? k8s::at(ctx.request.oldObject, place.pointer)
                               : ctx.request.oldObject;
    return lifecycle::judge(rules, oldRules, place.source, lifecycle::protectedPaths(ctx.params),
                            breakGlassHint(ctx, kId));
  }
};

}  // namespace

RulePtr makeBackupLifecycle() { return std::make_unique<BackupLifecycle>(); }

}  // namespace stateguard::rules
