#pragma once
// The guard around NodeStageVolume / NodePublishVolume: resolve the device, read the ledger
// (node file and PV annotation), probe, decide, audit; after a successful stage, probe again and
// record the identity or quarantine the volume. Blocking (probes read the device): the proxy
// runs it off the gRPC threads.

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "core/audit.h"
#include "csi-sidecar/decision.h"
#include "csi-sidecar/device_template.h"
#include "csi-sidecar/ledger.h"
#include "csi-sidecar/pv_ledger.h"
#include "csi-sidecar/sidecar_metrics.h"

namespace stateguard::csi {

struct GuardConfig {
  DeviceTemplate deviceTemplate;
  std::string ledgerDir;
  std::string node;
  ProbeOptions probe;
};

/// One guarded call, as parsed from the request.
struct GuardCall {
  std::string method;  ///< "NodeStageVolume" or "NodePublishVolume"
  DeviceInputs inputs;
  std::string targetPath;  ///< staging_target_path (stage) or target_path (publish)
  bool mount = true;       ///< false for a raw block volume (never formatted: not probed)
  bool fullCheck = true;   ///< stage, or publish on a driver without STAGE_UNSTAGE
  /// A MULTI_NODE_* access mode: a shared (network) filesystem such as Longhorn's RWX NFS
  /// export, with no block device on this node and nothing for the driver to format here.
  bool sharedAccess = false;
};

/// What before() found, handed to after().
struct GuardState {
  VolumeRef ref;
  std::optional<LedgerEntry> entry;  ///< merged node file + PV annotation
  std::optional<ProbeResult> probe;
  Decision decision;
};

class Guard {
 public:
  Guard(GuardConfig config, std::shared_ptr<PvLedger> pv, AuditLog* audit, SidecarMetrics* metrics);

  /// Judges the call before the driver sees it; !state.decision.allow means refuse with
  /// FAILED_PRECONDITION and state.decision.message.
  GuardState before(const GuardCall& call);
  /// Undoes the driver's successful call after a quarantine (NodeUnstageVolume after a stage,
  /// NodeUnpublishVolume after a publish without staging): "" when done, else what failed.
  using Undo = std::function<std::string(const GuardCall& call)>;
  /// After the driver answered OK: the refusal message when the volume was quarantined. Then
  /// `undo` runs first, so no fresh filesystem stays mounted while kubelet is told the call
  /// failed (FAILED_PRECONDITION is final: kubelet will not unstage); its outcome is in the
  /// message and the audit line.
  std::optional<std::string> after(const GuardCall& call, GuardState& state, const Undo& undo = {});

  std::string driverName() const;
  void setDriverName(std::string name);

 private:
  /// Node file merged with the PV annotation; fills ref.pvName. An error when either cannot be
  /// read (the history is unknown, so "blank" cannot be trusted).
  struct History {
    std::optional<LedgerEntry> entry;
    std::string pvError;  ///< the PV annotation could not be read ("" when fine or no cluster)
  };
  Result<History> loadHistory(VolumeRef& ref);
  Status storeHistory(const LedgerEntry& entry);
  void audit(const std::string& phase, const GuardState& state, const std::string& verdict,
             const std::string& reason, const std::string& message,
             const nlohmann::json& extra = nullptr);
  std::string findMountSource(const std::string& target) const;

  GuardConfig config_;
  Ledger ledger_;
  std::shared_ptr<PvLedger> pv_;
  AuditLog* audit_;
  SidecarMetrics* metrics_;
  mutable std::mutex mu_;
  std::string driverName_;
  /// Volumes with a guarded call in progress (kubelet may retry while a slow probe runs).
  std::set<std::string> busy_;

 public:
  /// Marks a volume busy for one guarded call; false when another call holds it (the proxy
  /// answers ABORTED, CSI's code for "an operation on this volume is pending").
  bool tryAcquire(const std::string& volumeId);
  void release(const std::string& volumeId);
};

}  // namespace stateguard::csi
