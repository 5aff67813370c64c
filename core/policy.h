#pragma once
// Policy: per rule a mode (enforce | warn | audit | off) and parameters, plus
// break-glass settings. Read from YAML, validated against the registered rules,
// and reloaded from its file when it changes (an invalid file keeps the last good one).

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/file_watch.h"
#include "core/json_yaml.h"

namespace stateguard {

enum class Mode { Enforce, Warn, Audit, Off };
const char* modeName(Mode mode);
std::optional<Mode> parseMode(const std::string& text);

/// What the policy parser needs to know about a rule: its id, default mode and parameters.
struct RuleDefaults {
  std::string id;
  Mode mode = Mode::Enforce;
  json params = json::object();  ///< every accepted parameter with its default value
};

/// Break-glass: who may override a rule with the annotation, and for how long at most.
struct BreakGlassConfig {
  std::string annotation = "stateguard.io/allow";
  std::vector<std::string> groups = {"stateguard:break-glass"};
  std::chrono::hours maxDuration{24};
};

/// The cluster's own controllers, by the user names their requests carry: each controller's own
/// service account (kube-controller-manager --use-service-account-credentials) and the single
/// identity kube-controller-manager uses without it. A request from one of them is let through
/// only in the state that controller acts in (webhook/controllers.h), never otherwise.
struct ControllerIdentities {
  /// Removes kubernetes.io/pv-protection from a PV being deleted once nothing is bound to it.
  std::vector<std::string> pvProtection = {
      "system:serviceaccount:kube-system:pv-protection-controller",
      "system:kube-controller-manager"};
  /// Removes kubernetes.io/pvc-protection from a claim being deleted once no pod uses it.
  std::vector<std::string> pvcProtection = {
      "system:serviceaccount:kube-system:pvc-protection-controller",
      "system:kube-controller-manager"};
  /// Empties a namespace that is being deleted.
  std::vector<std::string> namespaceCleanup = {
      "system:serviceaccount:kube-system:namespace-controller", "system:kube-controller-manager"};
  /// Deletes claims whose owners (a deleted StatefulSet, a removed pod) are gone.
  std::vector<std::string> garbageCollector = {
      "system:serviceaccount:kube-system:generic-garbage-collector",
      "system:kube-controller-manager"};
  /// Makes a StatefulSet (or its pod) the owner of its claims, as its claim retention policy
  /// (judged by statefulset-claims when set to Delete) says.
  std::vector<std::string> statefulSet = {
      "system:serviceaccount:kube-system:statefulset-controller", "system:kube-controller-manager"};
  /// Deletes a Released PV after its reclaim policy Delete destroyed the backend volume (the PV
  /// binder for in-tree volumes; add a CSI driver's external-provisioner service account).
  std::vector<std::string> volumeReclaim = {
      "system:serviceaccount:kube-system:persistent-volume-binder",
      "system:kube-controller-manager"};
};

/// A validated policy. Every registered rule has an entry.
struct Policy {
  struct RuleConfig {
    Mode mode = Mode::Enforce;
    json params = json::object();
  };
  std::map<std::string, RuleConfig> rules;
  BreakGlassConfig breakGlass;
  ControllerIdentities controllers;
  std::string source;  ///< "built-in default" or the file path

  Mode modeOf(const std::string& ruleId) const;
  const json& paramsOf(const std::string& ruleId) const;
};
using PolicyPtr = std::shared_ptr<const Policy>;

/// The policy used when no file is given: every rule at its default.
Policy defaultPolicy(const std::vector<RuleDefaults>& rules);

/// Parses and validates policy YAML. Unknown rules, modes, parameters, or parameters of the
/// wrong type are errors naming the key.
Result<Policy> parsePolicy(std::string_view text, const std::string& source,
                           const std::vector<RuleDefaults>& rules);

/// Holds the current policy; with a file, polls it and swaps in each valid new version.
class PolicyStore {
 public:
  explicit PolicyStore(PolicyPtr initial);
  ~PolicyStore();
  PolicyStore(const PolicyStore&) = delete;
  PolicyStore& operator=(const PolicyStore&) = delete;

  /// Loads `path` now (error if invalid) and then watches it.
  static Result<std::unique_ptr<PolicyStore>> fromFile(
      const std::string& path, std::vector<RuleDefaults> rules,
      std::chrono::milliseconds pollInterval = std::chrono::milliseconds(1000));

  PolicyPtr current() const;
  uint64_t reloads() const { return reloads_.load(); }
  uint64_t reloadFailures() const { return reloadFailures_.load(); }
  /// Checks the file once (the poller calls this); true if a new policy was installed.
  bool checkForChange();

 private:
  mutable std::mutex mu_;
  PolicyPtr current_;
  std::string path_;
  std::vector<RuleDefaults> rules_;
  std::string lastSeen_;  // stat fingerprint of the file
  std::atomic<uint64_t> reloads_{0};
  std::atomic<uint64_t> reloadFailures_{0};
  std::unique_ptr<Poller> poller_;  // last member: stops before the rest goes
};

}  // namespace stateguard
