#include "webhook/background_scan.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <tuple>

#include "core/log.h"
#include "core/metrics.h"
#include "webhook/rules/registry_mirrors.h"

namespace stateguard {
namespace {

std::string finding(const char* name, const char* help) {
  return std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n";
}

}  // namespace

BackgroundScan::BackgroundScan(std::shared_ptr<const ClusterState> state,
                               std::function<std::shared_ptr<const Policy>()> policy,
                               KubeClientPtr client, std::optional<LeaseOptions> lease,
                               BackgroundScanOptions options)
    : state_(std::move(state)),
      policy_(std::move(policy)),
      client_(client),
      options_(std::move(options)) {
  if (client_) configuration_ = std::make_unique<ObjectStore>();
  if (client && lease) {
    elector_ = std::make_unique<LeaderElector>(client, *lease);
    reports_ = std::make_unique<PolicyReportWriter>(client);
    electThread_ = std::thread([this] { electLoop(); });
  }
  scanThread_ = std::thread([this] { scanLoop(); });
}

BackgroundScan::~BackgroundScan() { stop(); }

void BackgroundScan::stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (electThread_.joinable()) electThread_.join();
  if (scanThread_.joinable()) scanThread_.join();
  if (elector_) elector_->release();
}

bool BackgroundScan::sleep(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [this] { return stop_; });
}

bool BackgroundScan::leading() const { return !elector_ || elector_->leading(); }

void BackgroundScan::electLoop() {
  // client-go's retry period: a follower notices a released or expired Lease within 2 s.
  const auto period = std::min<std::chrono::milliseconds>(std::chrono::seconds(2),
                                                          elector_->options().duration / 3);
  do {
    elector_->step();
  } while (sleep(period));
}

void BackgroundScan::scanLoop() {
  uint64_t scannedGeneration = 0;
  std::shared_ptr<const Policy> scannedPolicy;
  auto lastScan = std::chrono::steady_clock::time_point{};
  bool led = false;
  bool published = true;
  do {
    if (!state_->ready()) continue;
    if (!leading()) {
      if (led) {
        std::lock_guard lock(mu_);
        findingsText_.clear();
        lastSummary_.clear();
      }
      led = false;
      continue;
    }
    const auto now = std::chrono::steady_clock::now();
    const uint64_t generation = state_->generation();
    const auto policy = policy_();
    // A scan of a large cluster takes seconds of CPU on a replica that also answers reviews:
    // after a change, wait at least ten times the last scan's duration, so that scanning takes
    // at most about a tenth of one CPU however often the cluster changes.
    std::chrono::steady_clock::duration gap = options_.afterChange;
    {
      std::lock_guard lock(mu_);
      gap = std::max(gap, std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(lastDuration_ * 10)));
    }
    // Reports that could not all be written are tried again as soon as a change would be.
    const bool due = !led || policy != scannedPolicy || now - lastScan >= options_.interval ||
                     ((generation != scannedGeneration || !published) && now - lastScan >= gap);
    if (!due) continue;
    led = true;
    scannedGeneration = generation;
    scannedPolicy = policy;
    lastScan = now;
    published = scanNow(*policy);
  } while (sleep(std::chrono::seconds(1)));
}

void BackgroundScan::refreshConfiguration(const Policy& policy) {
  if (!client_) return;
  std::vector<std::string> labels = rules::configLabelsOf(policy);
  const auto now = std::chrono::steady_clock::now();
  if (configurationListed_ != std::chrono::steady_clock::time_point{} &&
      now - configurationListed_ < options_.interval && labels == configurationLabels_)
    return;
  configurationListed_ = now;
  configurationLabels_ = labels;
  size_t failures = 0;
  for (const scan::ConfigurationListing& l :
       scan::listConfiguration(*client_, labels, *configuration_)) {
    const std::string status = !l.error.empty() ? l.error
                               : l.served       ? ""
                               : l.forbidden    ? "forbidden"
                                                : "absent";
    if (!l.error.empty()) ++failures;
    std::string& was = configurationStatus_[l.key];
    if (status == was) continue;
    // Said once per change: a CRD that is not installed is normal, not a warning.
    if (!l.error.empty()) {
      log::warn("background scan: " + l.error + " (" + l.key +
                " objects from the last good list are judged until a list works)");
    } else if (l.forbidden) {
      log::warn("background scan: listing " + l.key +
                " is forbidden (403): its hazards are not looked for; the ClusterRole "
                "stateguard-webhook grants list on it (manifests/base/rbac.yaml)");
    } else if (!l.served) {
      log::info("background scan: " + l.key +
                " is not served here (CRD not installed); its hazards are not looked for");
    } else if (!was.empty()) {
      log::info("background scan: " + l.key + " lists again (" + l.apiVersion + ")");
    }
    was = status;
  }
  std::lock_guard lock(mu_);
  configurationFailures_ = failures;
}

bool BackgroundScan::scanNow(const Policy& policy) {
  const auto started = std::chrono::steady_clock::now();
  refreshConfiguration(policy);
  scan::Options opts = options_.scan;
  opts.configuration = configuration_.get();
  opts.etcdSnapshotsServed = options_.etcdSnapshotsServed && options_.etcdSnapshotsServed();
  const auto now = Clock::now();
  const scan::Report report = scan::run(*state_, policy, now, opts);
  std::string reportError;
  if (reports_ && leading()) reportError = reports_->publish(report, now);
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  // Gauges: findings by rule, severity, kind and namespace; quarantined volumes; backup ages.
  std::map<std::tuple<std::string, std::string, std::string, std::string>, size_t> counts;
  size_t quarantined = 0;
  for (const scan::Finding& f : report.findings) {
    ++counts[{f.rule, f.severity, f.kind, f.ns}];
    if (f.rule == "volume-quarantined" && f.severity == "error") ++quarantined;
  }
  std::ostringstream m;
  m << finding("stateguard_scan_findings",
               "Hazards the last background scan found, by rule, severity, and the objects' kind "
               "and namespace (object_namespace; none for cluster-scoped objects, so that "
               "Prometheus does not fill in the scrape target's namespace).");
  for (const auto& [key, n] : counts) {
    const auto& [rule, severity, kind, ns] = key;
    m << "stateguard_scan_findings{rule=\"" << escapeLabel(rule) << "\",severity=\""
      << escapeLabel(severity) << "\",kind=\"" << escapeLabel(kind) << "\",object_namespace=\""
      << escapeLabel(ns) << "\"} " << n << "\n";
  }
  m << finding("stateguard_volumes_quarantined",
               "PersistentVolumes stateguard-csi has quarantined (their device lost the "
               "filesystem they had), as of the last background scan.")
    << "stateguard_volumes_quarantined " << quarantined << "\n";
  m << finding("stateguard_backup_newest_age_seconds",
               "Age of the newest successful backup of each bound claim (claims without any are "
               "not listed; see stateguard_scan_findings{rule=\"backup-stale\"}).");
  for (const scan::BackupAge& b : report.backups) {
    if (!b.age) continue;
    m << "stateguard_backup_newest_age_seconds{namespace=\"" << escapeLabel(b.ns) << "\",claim=\""
      << escapeLabel(b.claim) << "\"} " << b.age->count() << "\n";
  }
  const std::string summary = std::to_string(report.findings.size()) + " finding(s) (" +
                              std::to_string(report.count("error")) + " error(s), " +
                              std::to_string(report.count("warning")) + " warning(s), " +
                              std::to_string(report.count("note")) + " note(s))";
  {
    std::lock_guard lock(mu_);
    ++runs_;
    lastDuration_ = took;
    lastObjects_ = report.objects;
    lastSuccess_ = std::chrono::duration<double>(now.time_since_epoch()).count();
    findingsText_ = m.str();
    if (summary != lastSummary_)
      log::info("background scan: " + summary + " in " + std::to_string(report.objects) +
                " object(s), " + std::to_string(static_cast<int>(took * 1000)) + " ms");
    lastSummary_ = summary;
  }
  if (!reportError.empty()) log::warn("background scan: writing PolicyReports: " + reportError);
  return reportError.empty();
}

uint64_t BackgroundScan::runs() const {
  std::lock_guard lock(mu_);
  return runs_;
}

std::string BackgroundScan::renderMetrics() const {
  std::ostringstream m;
  const bool lead = leading();
  m << "# HELP stateguard_scan_leader 1 while this replica runs the background scan (holds its "
       "Lease).\n# TYPE stateguard_scan_leader gauge\nstateguard_scan_leader "
    << (lead ? 1 : 0) << "\n";
  std::lock_guard lock(mu_);
  m << "# HELP stateguard_scan_runs_total Background scans completed by this replica.\n"
       "# TYPE stateguard_scan_runs_total counter\nstateguard_scan_runs_total "
    << runs_ << "\n";
  if (runs_ > 0) {
    m << "# HELP stateguard_scan_last_success_timestamp_seconds Unix time of the last background "
         "scan this replica completed.\n# TYPE stateguard_scan_last_success_timestamp_seconds "
         "gauge\nstateguard_scan_last_success_timestamp_seconds "
      << static_cast<uint64_t>(lastSuccess_) << "\n";
    m << "# HELP stateguard_scan_duration_seconds How long the last background scan took.\n"
         "# TYPE stateguard_scan_duration_seconds gauge\nstateguard_scan_duration_seconds "
      << lastDuration_ << "\n";
    m << "# HELP stateguard_scan_objects Objects the last background scan judged.\n"
         "# TYPE stateguard_scan_objects gauge\nstateguard_scan_objects "
      << lastObjects_ << "\n";
  }
  if (client_) {
    m << "# HELP stateguard_scan_configuration_list_failures Configuration kinds the scan lists "
         "(buckets, backup schedules, mirror configurations) whose last list failed; their "
         "objects from the last good list are judged meanwhile.\n"
         "# TYPE stateguard_scan_configuration_list_failures gauge\n"
         "stateguard_scan_configuration_list_failures "
      << configurationFailures_ << "\n";
  }
  if (lead) m << findingsText_;
  if (reports_) {
    m << "# HELP stateguard_policy_reports_available 0 while the PolicyReport CRDs are not "
         "installed (findings are then only in /metrics).\n"
         "# TYPE stateguard_policy_reports_available gauge\nstateguard_policy_reports_available "
      << (reports_->available() ? 1 : 0) << "\n";
    m << "# HELP stateguard_policy_report_writes_total PolicyReports created, replaced or "
         "deleted.\n# TYPE stateguard_policy_report_writes_total counter\n"
         "stateguard_policy_report_writes_total "
      << reports_->writes() << "\n";
    m << "# HELP stateguard_policy_report_failures_total Scans whose PolicyReports could not "
         "all be written.\n# TYPE stateguard_policy_report_failures_total counter\n"
         "stateguard_policy_report_failures_total "
      << reports_->failures() << "\n";
  }
  return m.str();
}

}  // namespace stateguard
