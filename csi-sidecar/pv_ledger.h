#pragma once
// The ledger's cluster-wide copy: the same JSON as the node file, kept in an annotation on the
// PersistentVolume, so a volume's history follows it to any node. PVs are found by their CSI
// volume handle through a list+watch cache; the annotation itself is read fresh (one GET per
// stage, rare) and written with a JSON merge patch that carries the resourceVersion, so two
// nodes never overwrite each other's entries.

#include <optional>
#include <string>

#include "core/kube_client.h"
#include "core/watch_cache.h"
#include "csi-sidecar/ledger.h"

namespace stateguard::csi {

inline constexpr char kLedgerAnnotation[] = "stateguard.io/volume-ledger";

class PvLedger {
 public:
  /// `driverName` matches spec.csi.driver ("" matches any driver).
  PvLedger(KubeClientPtr client, WatchCachePtr cache, std::string driverName);

  struct Found {
    std::string pvName;
    std::optional<LedgerEntry> entry;  ///< from the annotation; nullopt when there is none
  };
  /// The PV whose spec.csi.volumeHandle is `volumeId`: nullopt when the cache knows none. An
  /// error when the cache has not synced, the PV cannot be read, or the annotation is corrupt.
  Result<std::optional<Found>> find(const std::string& volumeId) const;
  /// Merges `entry` into the PV's annotation (what other nodes wrote is kept), retrying on 409.
  Status store(const std::string& pvName, const LedgerEntry& entry) const;

  void setDriverName(std::string name) { driverName_ = std::move(name); }

 private:
  KubeClientPtr client_;
  WatchCachePtr cache_;
  std::string driverName_;
};

/// The entry in a PV's annotation (nullopt when absent); errors name the PV.
Result<std::optional<LedgerEntry>> entryFromPv(const nlohmann::json& pv);

}  // namespace stateguard::csi
