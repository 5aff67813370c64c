#pragma once
// The ledger: per volume, every filesystem identity the volume has held, and whether it is
// quarantined. One JSON file per volume in the ledger directory, replaced atomically (write a
// temporary file, fsync, rename, fsync the directory), so a crash leaves the old entry or the
// new one, never half of either. The same JSON travels on the PersistentVolume as an annotation
// (pv_ledger.h), so the history follows the volume to any node.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"

namespace stateguard::csi {

/// A filesystem (or other signature) a volume has held.
struct FsIdentity {
  std::string type;        ///< "ext4", "xfs", "crypto_LUKS", ...
  std::string uuid;        ///< may be empty for signatures without one
  uint64_t sizeBytes = 0;  ///< device size when seen
  std::string firstSeen;   ///< RFC 3339
  std::string node;        ///< node it was first seen on

  /// Same filesystem: type and UUID equal (size may grow with an expansion).
  bool sameAs(const FsIdentity& other) const { return type == other.type && uuid == other.uuid; }
  std::string describe() const;  ///< "ext4 UUID 1b2c... (first seen 2026-..., node n1)"
};

/// A volume the sidecar caught with a filesystem it never had: every stage and publish refused
/// until a person clears it (`stateguardctl csi ledger clear-quarantine`).
struct Quarantine {
  std::string since;  ///< RFC 3339
  std::string node;
  std::string reason;   ///< one sentence
  FsIdentity expected;  ///< what the ledger said
  FsIdentity seen;      ///< what the device holds now
};

struct LedgerEntry {
  std::string volumeId;
  std::string pvName;  ///< when known (cluster access)
  std::string driver;
  std::string device;                  ///< device path last resolved for this volume on this node
  std::string updated;                 ///< RFC 3339
  std::vector<FsIdentity> identities;  ///< oldest first; the last one is the current one
  std::optional<Quarantine> quarantine;

  const FsIdentity* current() const { return identities.empty() ? nullptr : &identities.back(); }
  /// Records `id` as the current identity unless it already is (returns whether it changed).
  bool record(const FsIdentity& id);
};

nlohmann::json toJson(const FsIdentity& id);
nlohmann::json toJson(const LedgerEntry& entry);
/// Parses an entry; `where` names the source for the error ("ledger file X", "annotation of
/// PersistentVolume Y").
Result<LedgerEntry> ledgerEntryFromJson(const nlohmann::json& j, const std::string& where);

/// Merges two views of one volume (node file and PV annotation): the union of identities in
/// first-seen order, the quarantine of either, the non-empty names.
LedgerEntry mergeEntries(const LedgerEntry& a, const LedgerEntry& b);

/// The node-local ledger directory.
class Ledger {
 public:
  explicit Ledger(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }
  /// Creates the directory if needed (mode 0700).
  Status ensureDir() const;
  /// The entry for a volume, nullopt when there is none; an error for an unreadable or corrupt
  /// file (never silently treated as "no history").
  Result<std::optional<LedgerEntry>> load(const std::string& volumeId) const;
  /// Writes atomically and durably.
  Status store(const LedgerEntry& entry) const;
  /// Removes a volume's entry (returns whether there was one).
  Result<bool> remove(const std::string& volumeId) const;
  /// Every entry; corrupt files are errors that name the file. With `unreadable`, a file that
  /// cannot be read or parsed is skipped and its error appended there instead (for /metrics,
  /// which must still count the others); the directory itself failing stays an error.
  Result<std::vector<LedgerEntry>> list(std::vector<std::string>* unreadable = nullptr) const;
  /// Entries whose `device` is `devicePath` (same path, or the same file after resolving links).
  Result<std::vector<LedgerEntry>> findByDevice(const std::string& devicePath) const;

  /// File name of a volume's entry: "vol-" + the id with every byte outside [A-Za-z0-9._-]
  /// percent-encoded, + ".json"; when that passes 160 bytes, its first 80 bytes, "~" and the
  /// id's SHA-256 instead (any id fits a file name).
  static std::string fileNameFor(const std::string& volumeId);
  /// The escaped name without the length limit: what earlier releases wrote. load() still reads
  /// an entry there (and store() moves it to fileNameFor()).
  static std::string legacyFileNameFor(const std::string& volumeId);

 private:
  std::string pathFor(const std::string& volumeId) const;
  /// "" when the legacy name is the current one or could never have existed.
  std::string legacyPathFor(const std::string& volumeId) const;
  std::string dir_;
};

}  // namespace stateguard::csi
