#pragma once
// The sidecar's judgement, as pure functions of what the probe saw and what the ledger says:
// before a stage (may the driver see this device at all?) and after it (is this still the
// filesystem the volume held?). No I/O here; guard.h does the probing, storing and auditing.

#include <optional>
#include <string>

#include "csi-sidecar/ledger.h"
#include "csi-sidecar/probe.h"

namespace stateguard::csi {

/// The call being judged, for messages.
struct VolumeRef {
  std::string method;  ///< "NodeStageVolume" or "NodePublishVolume"
  std::string volumeId;
  std::string pvName;  ///< "" when unknown
  std::string node;
  std::string device;  ///< "" when the template could not be resolved
};

struct Decision {
  bool allow = false;
  /// Short code for audit and metrics: signature-found, blank-first-format, no-device,
  /// quarantined, device-unknown, ambivalent, data-evidence, ledger-held-filesystem.
  std::string reason;
  std::string message;  ///< for the person reading kubectl describe / the audit log
  int grpcCode = 9;     ///< when refused: 9 FAILED_PRECONDITION, 3 INVALID_ARGUMENT
};

/// Before NodeStageVolume (or NodePublishVolume without staging) reaches the driver.
/// `probe` is nullopt when no device path could be resolved (the post-check still runs).
Decision decideBeforeStage(const VolumeRef& ref, const std::optional<ProbeResult>& probe,
                           const std::optional<LedgerEntry>& ledger);

/// A publish of a quarantined volume is refused; anything else passes.
Decision decideBeforePublish(const VolumeRef& ref, const std::optional<LedgerEntry>& ledger);

/// What to do after the driver answered a stage with OK.
struct PostStage {
  enum Action {
    kRecord,      ///< first identity of this volume, or the same one: store it
    kQuarantine,  ///< the device holds another filesystem than the ledger's: quarantine
    kSkip,        ///< nothing to compare (device unreadable after the stage, no signature)
  } action = kSkip;
  FsIdentity seen;      ///< identity read after the stage (kRecord, kQuarantine)
  FsIdentity was;       ///< kQuarantine: the identity the volume held (ledger, or just before)
  std::string message;  ///< kQuarantine: the refusal sent instead of OK; kSkip: why
  /// kRecord on a first stage whose filesystem UUID changed during the driver's call (same
  /// type): why that is allowed and what it may mean; "" otherwise.
  std::string note;
};
/// `before` is what the sidecar saw on the device just before the driver's call. On a first
/// stage (no history) it stands in for the ledger: a filesystem of another type afterwards is a
/// format (quarantined), while the same type with a new UUID is only noted, since storage
/// systems regenerate the UUID of a cloned xfs, btrfs or ext4 volume so it can be mounted beside
/// its source.
PostStage decideAfterStage(const VolumeRef& ref, const ProbeResult& after,
                           const std::optional<LedgerEntry>& ledger, const std::string& now,
                           const ProbeResult* before = nullptr);

/// "PersistentVolume pvc-1 (volume id 5e2f...)" or "volume id 5e2f..." when the PV is unknown.
std::string describeVolume(const VolumeRef& ref);

}  // namespace stateguard::csi
