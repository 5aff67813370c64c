#pragma once
// CSI guard injection: which CSI node DaemonSets get stateguard-csi and the format gate
// (csi-guard.yaml), the change itself (one definition, which the kustomize component in
// manifests/csi-sidecar/component must equal: tests/integration/csi_inject_test.cc), and the
// mutating admission answer (JSONPatch) that applies it at CREATE and UPDATE.

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/file_watch.h"
#include "core/json_yaml.h"

namespace stateguard {

/// One CSI driver whose node DaemonSet is guarded. Every field but the selection has a default
/// that fits drivers laid out like the kubernetes-csi examples (and Longhorn).
struct CsiDriverTarget {
  std::string name;       ///< id in messages, metrics and Events ("longhorn")
  std::string ns;         ///< the DaemonSet's namespace (required)
  std::string daemonSet;  ///< the DaemonSet's name, or
  std::map<std::string, std::string> matchLabels;  ///< labels the DaemonSet carries (selector)
  std::string driverName;       ///< CSI driver name ("driver.longhorn.io"), for kubelet's path
  std::string driverContainer;  ///< the container that runs the driver (gets the gate)
  std::string registrarContainer = "node-driver-registrar";
  std::string socketVolume = "socket-dir";  ///< the volume holding the driver's socket
  std::string driverSocket = "csi.sock";    ///< the driver's socket file in that volume
  std::string devicePathTemplate;           ///< stateguard-csi --device-path-template
  std::string kubeletDir = "/var/lib/kubelet";
  std::string ledgerDir = "/var/lib/stateguard/ledger";
  /// The driver image's PATH, after the gate's directory.
  std::string driverPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  int httpPort = 9810;  ///< stateguard-csi /healthz, /readyz, /metrics (pick a free one with
                        ///< hostNetwork)

  /// "longhorn (longhorn-system/longhorn-csi-plugin)" or "... (NS, labels a=b)".
  std::string describe() const;
  /// True when this target names `daemonSet` (by namespace and name or labels).
  bool matches(const json& daemonSet) const;
};

/// csi-guard.yaml: the image and the drivers to guard.
struct CsiGuardConfig {
  std::string image = "ghcr.io/stateguard/stateguard:0.1.0";
  std::string imagePullPolicy = "IfNotPresent";
  std::chrono::seconds checkInterval{30};  ///< how often the unguarded check runs
  std::vector<CsiDriverTarget> drivers;
  std::string source;  ///< the file it came from

  /// The first driver naming `daemonSet`, or nullptr.
  const CsiDriverTarget* match(const json& daemonSet) const;
};
using CsiGuardConfigPtr = std::shared_ptr<const CsiGuardConfig>;

/// Parses and checks csi-guard.yaml. Errors name the file and the key ("drivers[1].daemonSet").
Result<CsiGuardConfig> parseCsiGuardConfig(std::string_view text, const std::string& source);

/// The container and volume names the injection owns.
inline constexpr const char* kCsiSidecarContainer = "stateguard-csi";
inline constexpr const char* kFormatGateContainer = "stateguard-format-gate";
inline constexpr const char* kSidecarSocket = "stateguard.sock";

/// The DaemonSet with the guard in its pod template: the stateguard-csi container, the format
/// gate's init container, PATH and mounts in the driver container, the volumes, and the
/// registrar announcing the sidecar's socket. Parts already there and equal (extra fields the
/// apiserver defaulted are fine) are left as they are, so an injected DaemonSet comes back
/// unchanged. An error says what in the DaemonSet does not fit the target (a container or
/// volume the policy names is not there).
Result<json> injectCsiGuard(const json& daemonSet, const CsiDriverTarget& target,
                            const CsiGuardConfig& config);

/// What a pod spec lacks of the guard ("no stateguard-csi container", ...); empty when guarded.
std::vector<std::string> csiGuardGaps(const json& podSpec, const CsiDriverTarget& target);

/// RFC 6902 operations turning `from` into `to` (empty array when equal).
json jsonPatch(const json& from, const json& to);

/// Standard base64 (with padding), as admission.k8s.io/v1 carries a patch.
std::string base64(std::string_view bytes);

/// The result of one mutating review.
struct CsiMutation {
  int httpStatus = 200;
  std::string body;     ///< the AdmissionReview answer (or a Status for a bad request)
  std::string outcome;  ///< "injected", "unchanged", "not-targeted", "failed", "rejected"
  std::string detail;   ///< for the log: what was injected or why it failed
  std::string object;   ///< "DaemonSet ns/name" ("" when the review was unreadable)
};

/// Answers one AdmissionReview sent to /mutate-csi: always allowed; a JSONPatch adding the
/// guard when the DaemonSet is targeted and lacks any of it; a warning (still allowed) when a
/// targeted DaemonSet cannot take the guard.
CsiMutation mutateCsiReview(std::string_view body, const CsiGuardConfig& config);

/// Holds csi-guard.yaml and reloads it when the file changes (an invalid file keeps the last good
/// one, and is logged).
class CsiGuardStore {
 public:
  static Result<std::unique_ptr<CsiGuardStore>> fromFile(
      const std::string& path,
      std::chrono::milliseconds pollInterval = std::chrono::milliseconds(1000));
  explicit CsiGuardStore(CsiGuardConfigPtr initial) : current_(std::move(initial)) {}
  ~CsiGuardStore();
  CsiGuardStore(const CsiGuardStore&) = delete;
  CsiGuardStore& operator=(const CsiGuardStore&) = delete;

  CsiGuardConfigPtr current() const;
  bool checkForChange();

 private:
  mutable std::mutex mu_;
  CsiGuardConfigPtr current_;
  std::string path_, lastSeen_;
  std::unique_ptr<Poller> poller_;  // last member: stops before the rest goes
};

/// The /mutate-csi endpoint: answers reviews with the current csi-guard.yaml, logs each
/// injection and failure, and counts outcomes for /metrics.
class CsiInjector {
 public:
  explicit CsiInjector(CsiGuardStore* store) : store_(store) {}
  /// {HTTP status, body} for one AdmissionReview.
  std::pair<int, std::string> handle(const std::string& body);
  /// stateguard_csi_injections_total{outcome}.
  std::string renderMetrics() const;

 private:
  CsiGuardStore* store_;
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> outcomes_;
};

}  // namespace stateguard
