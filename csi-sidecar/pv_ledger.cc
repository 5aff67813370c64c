#include "csi-sidecar/pv_ledger.h"

#include "core/k8s.h"

namespace stateguard::csi {

using nlohmann::json;

PvLedger::PvLedger(KubeClientPtr client, WatchCachePtr cache, std::string driverName)
    : client_(std::move(client)), cache_(std::move(cache)), driverName_(std::move(driverName)) {}

Result<std::optional<LedgerEntry>> entryFromPv(const json& pv) {
  auto text = k8s::annotation(pv, kLedgerAnnotation);
  if (!text) return std::optional<LedgerEntry>();
  const std::string where =
      "annotation " + std::string(kLedgerAnnotation) + " of PersistentVolume " + k8s::name(pv);
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded()) return makeError(where + " is not valid JSON");
  auto entry = ledgerEntryFromJson(j, where);
  if (!entry) return makeError(entry.error());
  return std::optional<LedgerEntry>(std::move(entry).value());
}

Result<std::optional<PvLedger::Found>> PvLedger::find(const std::string& volumeId) const {
  if (!cache_->ready()) {
    return makeError("the PersistentVolume cache has not synced with the API server yet");
  }
  std::string pvName;
  for (const auto& pv : cache_->list("PersistentVolume")) {
    if (k8s::str(*pv, "/spec/csi/volumeHandle") != volumeId) continue;
    if (!driverName_.empty() && k8s::str(*pv, "/spec/csi/driver") != driverName_) continue;
    pvName = k8s::name(*pv);
    break;
  }
  if (pvName.empty()) return std::optional<Found>();
  auto pv = client_->get("/api/v1/persistentvolumes/" + pvName);
  if (!pv) return makeError("cannot read PersistentVolume " + pvName + ": " + pv.error());
  auto entry = entryFromPv(pv.value());
  if (!entry) return makeError(entry.error());
  return std::optional<Found>(Found{pvName, std::move(entry).value()});
}

Status PvLedger::store(const std::string& pvName, const LedgerEntry& entry) const {
  const std::string path = "/api/v1/persistentvolumes/" + pvName;
  std::string lastError;
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto pv = client_->get(path);
    if (!pv) return makeError("cannot read PersistentVolume " + pvName + ": " + pv.error());
    LedgerEntry merged = entry;
    auto existing = entryFromPv(pv.value());
    if (!existing) return makeError(existing.error());
    if (existing.value()) merged = mergeEntries(entry, *existing.value());
    // A cleared quarantine is cleared everywhere: the caller's view of it wins.
    merged.quarantine = entry.quarantine;
    merged.device.clear();  // node-local; meaningless on another node
    merged.pvName = pvName;
    json patch{{"metadata",
                {{"resourceVersion", k8s::str(pv.value(), "/metadata/resourceVersion")},
                 {"annotations", {{kLedgerAnnotation, toJson(merged).dump()}}}}}};
    KubeResponse r = client_->mergePatch(path, patch);
    if (r.ok()) return Ok{};
    lastError = r.error;
    if (r.status != 409) break;
  }
  return makeError("cannot write the ledger annotation of PersistentVolume " + pvName + ": " +
                   lastError);
}

}  // namespace stateguard::csi
