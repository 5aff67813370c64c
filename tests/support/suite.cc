#include "tests/support/suite.h"

#include <chrono>
#include <filesystem>
#include <regex>
#include <stdexcept>

#include "core/timeutil.h"
#include "tests/support/process.h"

namespace stateguard::testing {
namespace {

struct KindInfo {
  const char* kind;
  const char* group;
  const char* version;
  const char* resource;
};
constexpr KindInfo kKinds[] = {
    {"PersistentVolume", "", "v1", "persistentvolumes"},
    {"PersistentVolumeClaim", "", "v1", "persistentvolumeclaims"},
    {"Namespace", "", "v1", "namespaces"},
    {"Pod", "", "v1", "pods"},
    {"StatefulSet", "apps", "v1", "statefulsets"},
    {"StorageClass", "storage.k8s.io", "v1", "storageclasses"},
    {"ConfigMap", "", "v1", "configmaps"},
    {"Deployment", "apps", "v1", "deployments"},
    {"ValidatingWebhookConfiguration", "admissionregistration.k8s.io", "v1",
     "validatingwebhookconfigurations"},
    {"RecurringJob", "longhorn.io", "v1beta2", "recurringjobs"},
    {"Schedule", "velero.io", "v1", "schedules"},
    {"Backup", "velero.io", "v1", "backups"},
    {"Backup", "longhorn.io", "v1beta2", "backups"},
    {"Snapshot", "longhorn.io", "v1beta2", "snapshots"},
    {"VolumeSnapshot", "snapshot.storage.k8s.io", "v1", "volumesnapshots"},
    {"Bucket", "s3.services.k8s.aws", "v1alpha1", "buckets"},
    {"Bucket", "s3.aws.crossplane.io", "v1beta1", "buckets"},
    {"BucketLifecycleConfiguration", "s3.aws.upbound.io", "v1beta1",
     "bucketlifecycleconfigurations"},
    {"Plan", "upgrade.cattle.io", "v1", "plans"},
    {"Secret", "", "v1", "secrets"},
    {"TalosConfig", "bootstrap.cluster.x-k8s.io", "v1alpha3", "talosconfigs"},
    {"TalosConfigTemplate", "bootstrap.cluster.x-k8s.io", "v1alpha3", "talosconfigtemplates"},
    {"TalosControlPlane", "controlplane.cluster.x-k8s.io", "v1alpha3", "taloscontrolplanes"},
    {"Cluster", "provisioning.cattle.io", "v1", "clusters"},
};

/// The kind's API mapping; a kind in several groups (Bucket) by the object's apiVersion group.
const KindInfo& kindInfo(const std::string& kind, const std::string& apiVersion = "") {
  for (const auto& k : kKinds) {
    if (kind == k.kind && !std::string(k.group).empty() &&
        apiVersion.rfind(std::string(k.group) + "/", 0) == 0)
      return k;
  }
  for (const auto& k : kKinds) {
    if (kind == k.kind) return k;
  }
  throw std::runtime_error("suite: no API mapping for kind " + kind);
}

/// ${NOW+2h}, ${NOW-30m}, ${NOW+3d}: times relative to when the suite is loaded.
void substituteTimes(json& v) {
  if (v.is_string()) {
    static const std::regex re(R"(\$\{NOW([+-])(\d+)([smhd])\})");
    std::string s = v.get<std::string>();
    std::smatch m;
    while (std::regex_search(s, m, re)) {
      long n = std::stol(m[2]);
      long mult = m[3] == "s" ? 1 : m[3] == "m" ? 60 : m[3] == "h" ? 3600 : 86400;
      auto t = Clock::now() + std::chrono::seconds(n * mult * (m[1] == "+" ? 1 : -1));
      s = m.prefix().str() + formatRfc3339(t) + m.suffix().str();
    }
    v = s;
  } else if (v.is_structured()) {
    for (auto& item : v) substituteTimes(item);
  }
}

json resolveObject(const json& spec, const json& state, const std::string& where) {
  if (spec.is_null()) return nullptr;
  if (!spec.is_object() || !spec.contains("ref")) return spec;
  // {ref: Kind/[namespace/]name, merge: {...}}: a state object, optionally merge-patched.
  const std::string ref = spec["ref"].get<std::string>();
  auto slash = ref.find('/');
  const std::string kind = ref.substr(0, slash);
  const std::string rest = ref.substr(slash + 1);
  json found;
  for (const auto& obj : state) {
    std::string ns = obj["metadata"].value("namespace", "");
    std::string key = ns.empty() ? obj["metadata"].value("name", "")
                                 : ns + "/" + obj["metadata"].value("name", "");
    if (obj.value("kind", "") == kind && key == rest) found = obj;
  }
  if (found.is_null())
    throw std::runtime_error(where + ": ref " + ref + " is not in the suite's state");
  if (spec.contains("merge")) found.merge_patch(spec["merge"]);
  return found;
}

}  // namespace

json makeReview(const std::string& uid, const std::string& operation, const json& object,
                const json& oldObject, const json& user, bool dryRun, const json& options,
                const std::string& subResource, const std::string& kindOverride) {
  const json& current = object.is_null() ? oldObject : object;
  std::string kind = kindOverride.empty() ? current.value("kind", "") : kindOverride;
  json req;
  req["uid"] = uid;
  if (kind == "Scale") {
    req["kind"] = {{"group", "autoscaling"}, {"version", "v1"}, {"kind", "Scale"}};
    req["resource"] = {{"group", "apps"}, {"version", "v1"}, {"resource", "statefulsets"}};
  } else {
    const KindInfo& k = kindInfo(kind, current.value("apiVersion", ""));
    // The object's own version when it names the kind's group (longhorn.io/v1beta1).
    std::string version = k.version;
    const std::string apiVersion = current.value("apiVersion", "");
    const std::string prefix = std::string(k.group).empty() ? "" : std::string(k.group) + "/";
    if (kindOverride.empty() && apiVersion.size() > prefix.size() &&
        apiVersion.rfind(prefix, 0) == 0 &&
        apiVersion.find('/', prefix.size()) == std::string::npos)
      version = apiVersion.substr(prefix.size());
    req["kind"] = {{"group", k.group}, {"version", version}, {"kind", k.kind}};
    req["resource"] = {{"group", k.group}, {"version", version}, {"resource", k.resource}};
  }
  req["requestKind"] = req["kind"];
  req["requestResource"] = req["resource"];
  if (!subResource.empty()) req["subResource"] = subResource;
  req["name"] = current["metadata"].value("name", "");
  std::string ns = current["metadata"].value("namespace", "");
  if (!ns.empty()) req["namespace"] = ns;
  req["operation"] = operation;
  req["userInfo"] =
      user.is_null() ? json{{"username", "alice@example.com"}, {"groups", {"system:authenticated"}}}
                     : user;
  req["object"] = object;
  req["oldObject"] = oldObject;
  req["dryRun"] = dryRun;
  json opts = options.is_null() ? json::object() : options;
  if (operation == "DELETE") {
    opts["kind"] = "DeleteOptions";
    opts["apiVersion"] = "meta.k8s.io/v1";
  } else if (operation == "CREATE") {
    opts["kind"] = "CreateOptions";
    opts["apiVersion"] = "meta.k8s.io/v1";
  } else {
    opts["kind"] = "UpdateOptions";
    opts["apiVersion"] = "meta.k8s.io/v1";
  }
  req["options"] = opts;
  return {{"apiVersion", "admission.k8s.io/v1"}, {"kind", "AdmissionReview"}, {"request", req}};
}

Suite loadSuite(const std::string& path) {
  auto docs = parseDocuments(readText(path), path);
  if (!docs.ok()) throw std::runtime_error(docs.error());
  if (docs->size() != 1) throw std::runtime_error(path + ": expected one YAML document");
  json doc = docs->front();
  substituteTimes(doc);
  Suite suite;
  suite.path = path;
  suite.rule = doc.value("rule", "");
  if (suite.rule.empty()) throw std::runtime_error(path + ": missing rule:");
  if (doc.contains("state")) suite.state = doc["state"];
  if (!doc.contains("cases") || !doc["cases"].is_array())
    throw std::runtime_error(path + ": missing cases:");
  int n = 0;
  for (const auto& c : doc["cases"]) {
    SuiteCase sc;
    sc.name = c.value("name", "case " + std::to_string(n));
    const std::string where = path + " case \"" + sc.name + "\"";
    json object = resolveObject(c.value("object", json(nullptr)), suite.state, where);
    json oldObject = resolveObject(c.value("oldObject", json(nullptr)), suite.state, where);
    std::string op = c.value("operation", "");
    if (op.empty()) throw std::runtime_error(where + ": missing operation");
    sc.review = makeReview(suite.rule + "-" + std::to_string(n), op, object, oldObject,
                           c.value("user", json(nullptr)), c.value("dryRun", false),
                           c.value("options", json(nullptr)), c.value("subResource", ""),
                           c.value("kind", ""));
    sc.policy = c.value("policy", json(nullptr));
    if (!c.contains("expect")) throw std::runtime_error(where + ": missing expect:");
    const json& e = c["expect"];
    sc.expect.allowed = e.value("allowed", true);
    sc.expect.verdict = e.value("verdict", "");
    auto strings = [&](const char* key) {
      std::vector<std::string> out;
      if (!e.contains(key)) return out;
      if (e[key].is_string()) return std::vector<std::string>{e[key].get<std::string>()};
      for (const auto& s : e[key]) out.push_back(s.get<std::string>());
      return out;
    };
    sc.expect.messages = strings("message");
    sc.expect.warnings = strings("warnings");
    sc.expect.noWarnings = e.value("noWarnings", false);
    suite.cases.push_back(std::move(sc));
    ++n;
  }
  return suite;
}

std::vector<Suite> loadSuites() {
  std::vector<Suite> out;
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::directory_iterator(sourcePath("webhook/rules"))) {
    if (entry.is_directory() && std::filesystem::exists(entry.path() / "suite.yaml")) {
      paths.push_back((entry.path() / "suite.yaml").string());
    }
  }
  std::sort(paths.begin(), paths.end());
  for (const auto& p : paths) out.push_back(loadSuite(p));
  return out;
}

std::string checkResponse(const SuiteCase& c, const json& reviewResponse) {
  std::string problems;
  const json& resp = reviewResponse.value("response", json::object());
  if (resp.value("uid", "") != c.review["request"]["uid"]) problems += "uid not echoed; ";
  bool allowed = resp.value("allowed", false);
  if (allowed != c.expect.allowed) {
    problems += std::string("expected ") + (c.expect.allowed ? "allowed" : "denied") + ", got " +
                (allowed ? "allowed" : "denied") + "; ";
  }
  std::string message;
  if (resp.contains("status")) message = resp["status"].value("message", "");
  for (const auto& m : c.expect.messages) {
    if (message.find(m) == std::string::npos) problems += "message lacks \"" + m + "\"; ";
  }
  std::vector<std::string> warnings;
  if (resp.contains("warnings")) warnings = resp["warnings"].get<std::vector<std::string>>();
  for (const auto& w : warnings) {
    if (w.size() >= 120) problems += "warning over 120 characters: " + w + "; ";
  }
  for (const auto& want : c.expect.warnings) {
    bool found = false;
    for (const auto& w : warnings) found = found || w.find(want) != std::string::npos;
    if (!found) problems += "no warning contains \"" + want + "\"; ";
  }
  if (c.expect.noWarnings && !warnings.empty())
    problems += "unexpected warning: " + warnings.front() + "; ";
  if (!problems.empty()) problems += "full response: " + reviewResponse.dump();
  return problems;
}

}  // namespace stateguard::testing
