#pragma once
// The CSI sidecar's quarantine as the cluster state shows it: stateguard-csi copies each volume's
// ledger entry into the annotation stateguard.io/volume-ledger of its PersistentVolume, and a
// volume it caught holding a filesystem it never had carries a "quarantine" object there until a
// person clears it (`stateguardctl csi ledger clear-quarantine`). Rule backup-quarantine and
// `stateguardctl scan` read it from here; only the fields they name are parsed.

#include <optional>
#include <string>

#include "core/cluster_state.h"

namespace stateguard::quarantine {

/// Equal to csi::kLedgerAnnotation (csi-sidecar/pv_ledger.h; the webhook does not link the
/// sidecar's code): cli/scan.cc, which links both, checks it at compile time.
inline constexpr char kLedgerAnnotation[] = "stateguard.io/volume-ledger";

/// A PV's quarantine, or why its ledger annotation could not be read.
struct State {
  std::string pv;        ///< PersistentVolume name
  std::string volumeId;  ///< the CSI volume handle (what clear-quarantine takes)
  std::string since;     ///< RFC 3339, "" when the entry does not say
  std::string node;      ///< the node that quarantined it, "" when unknown
  std::string reason;    ///< the sidecar's sentence
  /// Set when the annotation is there but is not a readable ledger entry; the other fields
  /// except pv and volumeId are then empty.
  std::string unreadable;

  /// "since 2026-11-20T03:12:00Z on node n1: <reason>" (the parts that are known).
  std::string describe() const;
  /// The command that lifts it, for messages.
  std::string clearCommand() const;
};

/// The quarantine recorded on `pv`: nullopt when the PV has no ledger annotation or its entry
/// holds no quarantine. An unreadable annotation yields a State with `unreadable` set.
std::optional<State> of(const json& pv);

/// The PersistentVolume a Longhorn volume name stands for (CSI volume handle, or PV name), or
/// nullptr.
ObjectPtr pvForLonghornVolume(const ClusterState& state, const std::string& volume);

}  // namespace stateguard::quarantine
