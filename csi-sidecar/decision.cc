#include "csi-sidecar/decision.h"

#include "csi-sidecar/digest.h"

namespace stateguard::csi {

namespace {

std::string head(const VolumeRef& ref) {
  return "stateguard refused " + ref.method + " of " + describeVolume(ref) +
         (ref.node.empty() ? "" : " on node " + ref.node);
}

const char kRetry[] =
    " Nothing was formatted; kubelet retries the call, and it goes through as soon as the "
    "device reads as the filesystem it held.";

std::string evidenceText(const ProbeResult& probe) {
  std::string out;
  size_t shown = 0;
  for (const Evidence& e : probe.evidence) {
    if (shown == 3) {
      out += " and " + std::to_string(probe.evidence.size() - shown) + " more";
      break;
    }
    out += (shown == 0 ? "" : "; ") + describeEvidence(e);
    ++shown;
  }
  return out;
}

}  // namespace

std::string describeVolume(const VolumeRef& ref) {
  if (ref.pvName.empty()) return "volume " + shortenId(ref.volumeId);
  return "PersistentVolume " + ref.pvName + " (volume " + shortenId(ref.volumeId) + ")";
}

Decision decideBeforePublish(const VolumeRef& ref, const std::optional<LedgerEntry>& ledger) {
  if (ledger && ledger->quarantine) {
    const Quarantine& q = *ledger->quarantine;
    return {false, "quarantined",
            head(ref) + ": the volume is quarantined since " + q.since + " (" + q.reason +
                "). It held " + q.expected.describe() + " but was found with " + q.seen.describe() +
                "; no application may write into it until a person has checked it. Recover "
                "the data (snapshots, backups, the old replicas), then clear the quarantine with "
                "`stateguardctl csi ledger clear-quarantine --volume " +
                shortenId(ref.volumeId) + " --reason ...`."};
  }
  return {true, "not-quarantined", ""};
}

Decision decideBeforeStage(const VolumeRef& ref, const std::optional<ProbeResult>& probe,
                           const std::optional<LedgerEntry>& ledger) {
  if (Decision q = decideBeforePublish(ref, ledger); !q.allow) return q;
  if (!probe) {
    return {true, "no-device",
            "no device path could be resolved before the call; the identity is checked after it"};
  }
  const FsIdentity* held = ledger ? ledger->current() : nullptr;
  const std::string heldText =
      held ? " The ledger says this volume held " + held->describe() + "." : std::string();
  switch (probe->state) {
    case ProbeState::kFilesystem:
      return {true, "signature-found", "device holds " + probe->summary()};
    case ProbeState::kUnknown:
      if (probe->ambivalent) {
        return {false, "ambivalent",
                head(ref) + ": the device " + shortenId(ref.device, 512) +
                    " carries conflicting signatures (" + probe->summary() +
                    "); blkid reports that as 'no filesystem' and the driver would format it." +
                    heldText + " Check which signature is real (`wipefs --no-act " +
                    shortenId(ref.device, 512) +
                    "`) and remove the stale one only after saving the data." + kRetry};
      }
      return {false, "device-unknown",
              head(ref) + ": the device " + shortenId(ref.device, 512) + " could not be read (" +
                  probe->error + "); a device that cannot be read is never treated as blank." +
                  heldText +
                  " Check that the device exists and is healthy (attachment, udev, the storage "
                  "engine's replicas)." +
                  kRetry};
    case ProbeState::kDataEvidence:
      return {false, "data-evidence",
              head(ref) + ": the device " + shortenId(ref.device, 512) +
                  " has no filesystem signature, but it holds data: " + evidenceText(*probe) +
                  ". The driver would have formatted it and destroyed that data." + heldText +
                  " Check the volume's health and the primary superblock (e.g. `e2fsck -b 32768`, "
                  "`xfs_repair -n`, `btrfs rescue super-recover`). To reuse it as an empty volume, "
                  "wipe it yourself after saving what is on it." +
                  kRetry};
    case ProbeState::kBlank:
      if (held) {
        return {false, "ledger-held-filesystem",
                head(ref) + ": the device " + shortenId(ref.device, 512) + " reads as blank (" +
                    probe->summary() + "), but the ledger says this volume held " +
                    held->describe() +
                    ". A volume that held a filesystem does not become blank by itself: the "
                    "device is probably not the volume's (a detached or degraded replica, the "
                    "wrong disk) or the data was lost elsewhere. Check the storage backend before "
                    "anything else. If the volume really must start empty, forget its history "
                    "with `stateguardctl csi ledger forget --volume " +
                    shortenId(ref.volumeId) + " --reason ...`." + kRetry};
      }
      return {true, "blank-first-format",
              "device is blank and the volume never held a filesystem: first format allowed"};
  }
  return {false, "device-unknown", head(ref) + ": internal error: unknown probe state"};
}

PostStage decideAfterStage(const VolumeRef& ref, const ProbeResult& after,
                           const std::optional<LedgerEntry>& ledger, const std::string& now,
                           const ProbeResult* before) {
  PostStage out;
  if (after.state != ProbeState::kFilesystem) {
    out.action = PostStage::kSkip;
    out.message = "after the stage the device shows " + after.summary() + "; nothing recorded";
    return out;
  }
  out.seen = FsIdentity{after.type, after.uuid, after.sizeBytes, now, ref.node};
  const FsIdentity* held = ledger ? ledger->current() : nullptr;
  // A first stage: what the device held just before the driver's call is the only history.
  FsIdentity justBefore;
  if (held == nullptr && before != nullptr && before->state == ProbeState::kFilesystem) {
    justBefore = FsIdentity{before->type, before->uuid, before->sizeBytes, now, ref.node};
    if (justBefore.type != out.seen.type) {
      held = &justBefore;
    } else if (justBefore.uuid != out.seen.uuid) {
      out.action = PostStage::kRecord;
      out.note = "during " + ref.method + " the filesystem's UUID changed from " + justBefore.uuid +
                 " to " + out.seen.uuid + " (" + out.seen.type +
                 "). Storage systems give a cloned volume a new UUID; if " + describeVolume(ref) +
                 " is not a clone, the driver formatted it and its data is gone: install "
                 "stateguard-format-gate on the driver's PATH, which refuses that format.";
      return out;
    }
  }
  if (held && !held->sameAs(out.seen)) {
    out.action = PostStage::kQuarantine;
    out.was = *held;
    out.message =
        "stateguard quarantined " + describeVolume(ref) +
        (ref.node.empty() ? "" : " on node " + ref.node) + ": after " + ref.method +
        " the device " + shortenId(ref.device, 512) + " holds " + out.seen.describe() +
        (held == &justBefore ? ", but just before the call it held " + before->summary()
                             : ", but the volume held " + held->describe()) +
        ". The driver formatted it or attached another device. No application will be given this "
        "filesystem (every publish is refused), so nothing writes into it and no backup captures "
        "it. Recover the data, then clear the quarantine with `stateguardctl csi ledger "
        "clear-quarantine --volume " +
        shortenId(ref.volumeId) + " --reason ...`.";
    return out;
  }
  out.action = PostStage::kRecord;
  return out;
}

}  // namespace stateguard::csi
