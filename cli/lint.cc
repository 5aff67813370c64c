// stateguardctl lint: every webhook rule applied to manifests, as the creation (or, when the
// object is in the cluster state, the update) of each object — for GitOps CI before a change
// reaches the cluster.

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/lint_mirrors.h"
#include "core/k8s.h"
#include "webhook/engine.h"
#include "webhook/registry.h"
#include "webhook/rules/backup-lifecycle/lifecycle.h"

namespace stateguard::cli {
namespace {

constexpr const char* kUsage =
    R"(usage: stateguardctl lint [--policy FILE] [--cluster-state FILE] [--as USER] [--as-group G]...
                          [--namespace NS] [-o text|json|sarif] [--warn-exit-code N] PATH...|-

Applies every webhook rule to manifests: files, directories (*.yaml, *.yml, *.json, recursively),
multi-document YAML, JSON Lists, or `kustomize build` / `helm template` output on stdin (-).
Registry mirror configurations get the registry-* rules: Talos machine configs, containerd
hosts.toml (hosts.d/<host>/hosts.toml trees), k3s/RKE2 registries.yaml, CRI-O registries.conf.
Each object is judged as its creation, or as an update of the object of the same kind and name
in --cluster-state. Objects without a namespace are placed in --namespace (default "default").

Also read, beside Kubernetes objects:
  - S3 lifecycle configurations as JSON or YAML, as given to or printed by
    `aws s3api put-bucket-lifecycle-configuration` / `get-bucket-lifecycle-configuration`
    (`{"Rules": [...]}`, or `{"Bucket": ..., "LifecycleConfiguration": {"Rules": [...]}}`),
    judged by rule backup-lifecycle;
  - kops Cluster specs (kops.k8s.io): their etcd-manager backup stores' control/ paths are added
    to backup-lifecycle's protected paths for every lifecycle rule in the same run.

Exit 0 clean (warnings allowed), 1 a denial, 2 unreadable input. With --warn-exit-code N,
warnings without a denial exit N (as Kyverno's CLI), so a pipeline can fail on them too.
Example: kustomize build overlays/prod | stateguardctl lint --cluster-state live.json -o sarif -
)";

/// One finding of one rule on one object.
struct LintFinding {
  std::string file;
  size_t document = 0;
  size_t line = 0;
  std::string object;  ///< "Kind namespace/name"
  std::string rule;
  std::string level;  ///< error (denied) | warning
  std::string message;
};

/// Collects manifest files from PATH arguments; directories are walked in name order.
Status collectFiles(const std::string& path, std::vector<std::string>& out) {
  struct stat st {};
  if (path == "-") {
    out.push_back(path);
    return Ok{};
  }
  if (::stat(path.c_str(), &st) != 0) return makeError(path + ": no such file or directory");
  if (!S_ISDIR(st.st_mode)) {
    out.push_back(path);
    return Ok{};
  }
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return makeError(path + ": cannot read the directory");
  std::vector<std::string> names;
  while (dirent* e = ::readdir(dir)) {
    std::string n = e->d_name;
    if (n == "." || n == ".." || n.front() == '.') continue;
    names.push_back(n);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    const std::string child = (path.ends_with("/") ? path : path + "/") + n;
    struct stat cst {};
    if (::stat(child.c_str(), &cst) != 0) continue;
    if (S_ISDIR(cst.st_mode)) {
      auto s = collectFiles(child, out);
      if (!s.ok()) return s;
    } else if (n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json") ||
               isMirrorFileName(n)) {
      out.push_back(child);
    }
  }
  return Ok{};
}

/// The `Rules` of an AWS lifecycle configuration document, or nullptr when `doc` is not one.
const json* awsLifecycleRules(const json& doc) {
  if (!doc.is_object() || doc.contains("apiVersion") || doc.contains("kind")) return nullptr;
  const json* cfg = &doc;
  if (doc.contains("LifecycleConfiguration")) cfg = &doc["LifecycleConfiguration"];
  if (!cfg->is_object()) return nullptr;
  auto it = cfg->find("Rules");
  return it != cfg->end() && it->is_array() ? &*it : nullptr;
}

/// Adds the control paths of every kops Cluster in the input to backup-lifecycle's
/// protectedPrefixes.
void addKopsControlPaths(
    const std::vector<std::pair<std::string, std::vector<SourcedObject>>>& inputs, Policy& policy) {
  auto it = policy.rules.find("backup-lifecycle");
  if (it == policy.rules.end()) return;
  json& prefixes = it->second.params["protectedPrefixes"];
  if (!prefixes.is_array()) prefixes = json::array();
  for (const auto& [file, docs] : inputs) {
    for (const auto& so : docs) {
      if (k8s::kind(so.object) != "Cluster" ||
          k8s::str(so.object, "/apiVersion").rfind("kops.k8s.io/", 0) != 0)
        continue;
      for (const auto& p : rules::lifecycle::kopsControlPaths(so.object)) {
        if (std::find(prefixes.begin(), prefixes.end(), json(p)) == prefixes.end())
          prefixes.push_back(p);
      }
    }
  }
}

/// Rule backup-lifecycle on an AWS lifecycle configuration document.
std::vector<LintFinding> lintAwsLifecycle(const json& rules, const std::string& file,
                                          const SourcedObject& so, const Policy& policy) {
  const Mode mode = policy.modeOf("backup-lifecycle");
  if (mode == Mode::Off || mode == Mode::Audit) return {};
  const std::string name = file == "-" ? "stdin" : file;
  const std::string what = "S3 lifecycle configuration " + name;
  std::vector<LintFinding> out;
  for (const auto& f : rules::lifecycle::judge(
           rules::lifecycle::fromAwsJson(rules), json(), {what, "Rules", name},
           rules::lifecycle::protectedPaths(policy.paramsOf("backup-lifecycle")),
           "This is checked before the configuration reaches the bucket; change the file.")) {
    out.push_back({file, so.document, so.line, what, "backup-lifecycle",
                   mode == Mode::Enforce ? "error" : "warning", f.message});
  }
  return out;
}

std::string sarifLevel(const std::string& level) { return level == "error" ? "error" : "warning"; }

json toSarif(const std::vector<LintFinding>& findings) {
  json results = json::array();
  for (const auto& f : findings) {
    json location = {{"physicalLocation",
                      {{"artifactLocation", {{"uri", f.file == "-" ? "stdin" : f.file}}},
                       {"region", {{"startLine", std::max<size_t>(f.line, 1)}}}}}};
    results.push_back({{"ruleId", f.rule},
                       {"level", sarifLevel(f.level)},
                       {"message", {{"text", f.object + ": " + f.message}}},
                       {"locations", json::array({location})}});
  }
  return sarifLog(results);
}

}  // namespace

int runLint(int argc, char** argv) {
  if (wantsHelp(argc, argv)) {
    std::cout << kUsage;
    return 0;
  }
  auto flags = parseFlags(
      argc, argv, 2,
      {"policy", "cluster-state", "as", "as-group", "namespace", "output", "o", "warn-exit-code"},
      {});
  if (!flags.ok()) return usageError(kUsage, flags.error());
  const Flags& f = flags.value();
  int warnExitCode = 0;
  if (f.has("warn-exit-code")) {
    const std::string code = f.get("warn-exit-code");
    if (code.empty() || code.size() > 3 ||
        code.find_first_not_of("0123456789") != std::string::npos || std::stoi(code) > 255)
      return usageError(kUsage,
                        "--warn-exit-code must be a number from 0 to 255, got \"" + code + "\"");
    warnExitCode = std::stoi(code);
  }
  const std::string format = f.get("output", f.get("o", "text"));
  if (format != "text" && format != "json" && format != "sarif") {
    return usageError(kUsage, "-o must be text, json or sarif");
  }
  if (f.positional.empty()) return usageError(kUsage, "give at least one PATH, or - for stdin");
  auto policy = loadPolicyFlag(f);
  if (!policy.ok()) return usageError(kUsage, policy.error());
  auto state = loadStateFlag(f);
  if (!state.ok()) return usageError(kUsage, state.error());

  UserInfo user;
  user.username = f.get("as", "stateguardctl-lint");
  user.groups = f.all("as-group");
  const std::string defaultNamespace = f.get("namespace", "default");

  std::vector<std::string> files;
  for (const auto& p : f.positional) {
    auto s = collectFiles(p, files);
    if (!s.ok()) {
      std::cerr << "stateguardctl lint: " << s.error() << "\n";
      return 2;
    }
  }

  Engine engine(allRules());
  const auto now = Clock::now();
  std::vector<LintFinding> findings;
  size_t objects = 0;
  bool unreadable = false;
  bool denied = false;
  // Read everything first: kops Cluster specs anywhere in the input name the store paths that
  // every lifecycle rule in the input is judged against.
  std::vector<std::pair<std::string, std::vector<SourcedObject>>> inputs;
  for (const auto& file : files) {
    auto text = readFile(file);
    if (!text.ok()) {
      std::cerr << "stateguardctl lint: " << text.error() << "\n";
      unreadable = true;
      continue;
    }
    // Registry mirror configurations (Talos, hosts.toml, registries.yaml/.conf): lint_mirrors.cc.
    if (auto mirrors = lintMirrorFile(file, text.value(), policy.value()); mirrors.handled) {
      if (!mirrors.error.empty()) {
        std::cerr << "stateguardctl lint: " << mirrors.error << "\n";
        unreadable = true;
        continue;
      }
      objects += mirrors.mirrors;
      for (auto& m : mirrors.findings) {
        denied |= m.level == "error";
        findings.push_back({file, 0, m.line, m.object, m.rule, m.level, m.message});
      }
      continue;
    }
    auto parsed = parseObjects(text.value(), file == "-" ? "stdin" : file);
    if (!parsed.ok()) {
      std::cerr << "stateguardctl lint: " << parsed.error() << "\n";
      unreadable = true;
      continue;
    }
    inputs.emplace_back(file, std::move(parsed).value());
  }
  Policy lintPolicy = policy.value();
  addKopsControlPaths(inputs, lintPolicy);

  for (const auto& [file, docs] : inputs) {
    for (const auto& so : docs) {
      const json& obj = so.object;
      const std::string where = (file == "-" ? "stdin" : file) + ":" + std::to_string(so.line);
      if (const json* rules = awsLifecycleRules(obj)) {
        ++objects;
        for (auto& x : lintAwsLifecycle(*rules, file, so, lintPolicy)) {
          denied |= x.level == "error";
          findings.push_back(std::move(x));
        }
        continue;
      }
      if (k8s::kind(obj).empty() || k8s::str(obj, "/apiVersion").empty()) {
        std::cerr << "stateguardctl lint: " << where << ": document " << so.document
                  << " is not a Kubernetes object (no apiVersion or kind)\n";
        unreadable = true;
        continue;
      }
      if (k8s::name(obj).empty() && k8s::str(obj, "/metadata/generateName").empty()) {
        std::cerr << "stateguardctl lint: " << where << ": " << k8s::kind(obj)
                  << " has no metadata.name; skipped\n";
        continue;
      }
      ++objects;
      const std::string ns =
          k8s::namespaceOf(obj).empty() ? defaultNamespace : k8s::namespaceOf(obj);
      ObjectPtr existing = state.value()->get(k8s::kind(obj), ns, k8s::name(obj));
      if (!existing) existing = state.value()->get(k8s::kind(obj), "", k8s::name(obj));
      AdmissionRequest req =
          applyRequest(obj, existing, user, defaultNamespace, "lint-" + std::to_string(objects));
      Decision d = engine.review(req, *state.value(), lintPolicy, now);
      for (const auto& v : d.verdicts) {
        if (v.verdict == "audit") continue;
        const bool error = v.verdict == "deny";
        denied |= error;
        findings.push_back({file, so.document, so.line, req.describe(), v.rule,
                            error ? "error" : "warning", v.message});
      }
    }
  }

  size_t errors = static_cast<size_t>(std::count_if(
      findings.begin(), findings.end(), [](const LintFinding& x) { return x.level == "error"; }));
  if (format == "sarif") {
    std::cout << toSarif(findings).dump(2) << "\n";
  } else if (format == "json") {
    json out = json::array();
    for (const auto& x : findings) {
      out.push_back({{"file", x.file},
                     {"document", x.document},
                     {"line", x.line},
                     {"object", x.object},
                     {"rule", x.rule},
                     {"level", x.level},
                     {"message", x.message}});
    }
    std::cout << out.dump(2) << "\n";
  } else {
    for (const auto& x : findings) {
      std::cout << (x.file == "-" ? "stdin" : x.file) << ":" << x.line << " (document "
                << x.document << ") " << x.object << ": "
                << (x.level == "error" ? "DENIED" : "warning") << " by " << x.rule << ": "
                << x.message << "\n";
    }
    std::cout << objects << " object(s) in " << files.size() << " file(s): " << errors
              << " denied, " << findings.size() - errors << " warning(s)\n";
  }
  if (unreadable) return 2;
  if (denied) return 1;
  return findings.empty() ? 0 : warnExitCode;
}

}  // namespace stateguard::cli
