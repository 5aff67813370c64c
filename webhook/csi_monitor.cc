#include "webhook/csi_monitor.h"

#include <sstream>

#include "core/k8s.h"
#include "core/log.h"
#include "core/metrics.h"

namespace stateguard {

ResourceKind daemonSetKind() { return {"DaemonSet", "/apis/apps/v1/daemonsets", true}; }

std::string CsiGuardFinding::message() const {
  std::string what;
  if (!templateGaps.empty()) {
    for (const auto& g : templateGaps) what += (what.empty() ? "" : "; ") + g;
    what = "its pod template has " + what;
  }
  if (!unguardedPods.empty()) {
    std::string names;
    for (size_t i = 0; i < unguardedPods.size() && i < 5; ++i)
      names += (i ? ", " : "") + unguardedPods[i];
    if (unguardedPods.size() > 5) names += ", ...";
    what += std::string(what.empty() ? "" : "; ") + std::to_string(unguardedPods.size()) + " of " +
            std::to_string(pods) + " pods run without stateguard-csi (" + names + ")";
  }
  return "CSI driver " + driver + " runs UNGUARDED: DaemonSet " + ns + "/" + daemonSet + ": " +
         what +
         ". Volumes on those nodes can be formatted without a check. Fix: make any change to the "
         "DaemonSet (e.g. kubectl -n " +
         ns + " annotate daemonset " + daemonSet +
         " stateguard.io/reinject=$(date +%s)) so the injector adds the guard, then let its pods "
         "roll; if the injection fails, the webhook's log and the warning on that change say why.";
}

namespace {

/// True when `pod` is owned by the DaemonSet `ds` (by uid when both have one, else by name).
bool ownedBy(const json& pod, const json& ds) {
  const json& owners = k8s::at(pod, "/metadata/ownerReferences");
  if (!owners.is_array()) return false;
  const std::string uid = k8s::str(ds, "/metadata/uid");
  for (const auto& o : owners) {
    if (!o.is_object() || o.value("kind", "") != "DaemonSet") continue;
    const std::string ouid = o.value("uid", "");
    if (!uid.empty() && !ouid.empty()) {
      if (ouid == uid) return true;
    } else if (o.value("name", "") == k8s::name(ds)) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::vector<CsiGuardFinding> checkCsiGuard(const ClusterState& state,
                                           const CsiGuardConfig& config) {
  std::vector<CsiGuardFinding> out;
  for (const auto& target : config.drivers) {
    for (const ObjectPtr& ds : state.list("DaemonSet", target.ns)) {
      if (!target.matches(*ds)) continue;
      CsiGuardFinding f;
      f.driver = target.name;
      f.ns = target.ns;
      f.daemonSet = k8s::name(*ds);
      f.templateGaps = csiGuardGaps(k8s::at(*ds, "/spec/template/spec"), target);
      for (const ObjectPtr& pod : state.list("Pod", target.ns)) {
        if (!ownedBy(*pod, *ds)) continue;
        ++f.pods;
        bool sidecar = false;
        const json& containers = k8s::at(*pod, "/spec/containers");
        if (containers.is_array())
          for (const auto& c : containers)
            if (c.is_object() && c.value("name", "") == kCsiSidecarContainer) sidecar = true;
        if (!sidecar) f.unguardedPods.push_back(k8s::name(*pod));
      }
      out.push_back(std::move(f));
    }
  }
  return out;
}

CsiGuardMonitor::CsiGuardMonitor(std::shared_ptr<const ClusterState> state,
                                 std::function<CsiGuardConfigPtr()> config, EventRecorder* events)
    : state_(std::move(state)), config_(std::move(config)), events_(events) {
  thread_ = std::thread([this] { run(); });
}

CsiGuardMonitor::~CsiGuardMonitor() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CsiGuardMonitor::run() {
  while (true) {
    auto config = config_();
    const auto interval = config ? config->checkInterval : std::chrono::seconds(30);
    if (state_->ready()) checkNow();
    std::unique_lock lock(mu_);
    // Until the first check, look again soon: the cache gets ready in a few seconds.
    cv_.wait_for(lock,
                 checked_ ? std::chrono::milliseconds(interval) : std::chrono::milliseconds(200),
                 [this] { return stop_; });
    if (stop_) return;
  }
}

void CsiGuardMonitor::checkNow() {
  auto config = config_();
  if (!config || !state_->ready()) return;
  std::vector<CsiGuardFinding> found;
  try {
    found = checkCsiGuard(*state_, *config);
  } catch (const std::exception& e) {
    log::error("csi-guard: the unguarded check failed (keeping the last findings): " +
               std::string(e.what()));
    return;
  }
  std::map<std::string, std::string> reported;
  std::vector<std::pair<ObjectPtr, std::string>> post;
  {
    std::lock_guard lock(mu_);
    for (const auto& f : found) {
      if (!f.unguarded()) continue;
      const std::string key = f.ns + "/" + f.daemonSet;
      // The state of the guard, without pod names: a new Event only when it changes.
      std::string state = std::to_string(f.templateGaps.size()) + ":" +
                          std::to_string(f.unguardedPods.empty() ? 0 : 1);
      reported[key] = state;
      auto it = reported_.find(key);
      if (it == reported_.end() || it->second != state) {
        log::warn(f.message());
        post.emplace_back(state_->get("DaemonSet", f.ns, f.daemonSet), f.message());
      }
    }
    reported_ = std::move(reported);
    findings_ = std::move(found);
    checked_ = true;
    ++checks_;
  }
  if (events_ != nullptr)
    for (const auto& [ds, message] : post)
      if (ds) events_->warn(*ds, "CSIGuardMissing", message);
}

std::vector<CsiGuardFinding> CsiGuardMonitor::findings() const {
  std::lock_guard lock(mu_);
  return findings_;
}

uint64_t CsiGuardMonitor::checks() const {
  std::lock_guard lock(mu_);
  return checks_;
}

std::string CsiGuardMonitor::renderMetrics() const {
  std::lock_guard lock(mu_);
  std::ostringstream out;
  out << "# HELP stateguard_csi_unguarded 1 when a configured CSI driver's node DaemonSet, or one "
         "of its pods, lacks stateguard-csi (csi-guard.yaml); 0 when guarded.\n"
         "# TYPE stateguard_csi_unguarded gauge\n";
  for (const auto& f : findings_)
    out << "stateguard_csi_unguarded{driver=\"" << escapeLabel(f.driver) << "\",namespace=\""
        << escapeLabel(f.ns) << "\",daemonset=\"" << escapeLabel(f.daemonSet) << "\"} "
        << (f.unguarded() ? 1 : 0) << "\n";
  out << "# HELP stateguard_csi_unguarded_pods Pods of a configured CSI node DaemonSet running "
         "without stateguard-csi.\n# TYPE stateguard_csi_unguarded_pods gauge\n";
  for (const auto& f : findings_)
    out << "stateguard_csi_unguarded_pods{driver=\"" << escapeLabel(f.driver) << "\",namespace=\""
        << escapeLabel(f.ns) << "\",daemonset=\"" << escapeLabel(f.daemonSet) << "\"} "
        << f.unguardedPods.size() << "\n";
  out << "# HELP stateguard_csi_guard_checks_total Unguarded checks run.\n"
         "# TYPE stateguard_csi_guard_checks_total counter\nstateguard_csi_guard_checks_total "
      << checks_ << "\n";
  return out.str();
}

}  // namespace stateguard
