#pragma once
// Read-only view of live cluster state that rules judge requests against,
// and the thread-safe in-memory store every source (file, watch cache) fills.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "core/json_yaml.h"

namespace stateguard {

using ObjectPtr = std::shared_ptr<const json>;

/// The kinds the webhook needs, and how they are found in the API.
struct ResourceKind {
  const char* kind;     ///< "PersistentVolume"
  const char* apiPath;  ///< "/api/v1/persistentvolumes" (cluster-wide list/watch path)
  bool namespaced;
  /// The name the store keeps these objects under when `kind` alone is ambiguous
  /// ("Backup.velero.io" beside "Backup.longhorn.io"); nullptr means `kind`.
  const char* key = nullptr;
  /// Served by a CRD that may not be installed: a 404 (or a 403, no RBAC) counts as "synced,
  /// none" and the list is retried now and then, so the cache gets ready without it.
  bool optional = false;

  std::string storeKey() const { return key != nullptr ? key : kind; }
  /// "" for the core group, "apps", "velero.io" (from apiPath).
  std::string group() const;
  /// "v1", "apps/v1", "velero.io/v1" (from apiPath).
  std::string apiVersion() const;
};
/// PersistentVolume, PersistentVolumeClaim, Namespace, StatefulSet, Pod, StorageClass, and the
/// optional backup kinds (Velero and Longhorn Backups, VolumeSnapshots, k3s ETCDSnapshotFiles)
/// that the backup-freshness rule reads.
const std::vector<ResourceKind>& watchedKinds();
/// The kind in `kinds` an object belongs to (by kind and the group of its apiVersion), or nullptr.
const ResourceKind* watchedKindOf(const json& object,
                                  const std::vector<ResourceKind>& kinds = watchedKinds());
/// Optional kinds that say which backups are kept and for how long (Longhorn RecurringJob,
/// Velero Schedule): not watched by the webhook, read by `stateguardctl backups`.
const std::vector<ResourceKind>& backupScheduleKinds();

/// Store keys of the optional backup kinds.
inline constexpr const char* kVeleroBackup = "Backup.velero.io";
inline constexpr const char* kLonghornBackup = "Backup.longhorn.io";

class LiveView;

/// Read-only cluster state. Implementations are thread-safe.
class ClusterState {
 public:
  virtual ~ClusterState() = default;
  /// True once the state is loaded (file) or every kind has synced (watch).
  virtual bool ready() const = 0;
  /// One object, or nullptr. `ns` is "" for cluster-scoped kinds.
  virtual ObjectPtr get(const std::string& kind, const std::string& ns,
                        const std::string& name) const = 0;
  /// All objects of a kind; only those in `ns` unless `ns` is "".
  virtual std::vector<ObjectPtr> list(const std::string& kind,
                                      const std::string& ns = "") const = 0;
  /// Calls `visit` with each object of a kind (only those in `ns` unless `ns` is ""), for work
  /// over every object (the background scan): a store that keeps objects packed decodes one at a
  /// time, so 100,000 Pods are never held decoded at once.
  virtual void forEach(const std::string& kind, const std::function<void(const ObjectPtr&)>& visit,
                       const std::string& ns = "") const {
    for (const ObjectPtr& o : list(kind, ns)) visit(o);
  }
  /// A view that reads the apiserver itself, for one decision that must not rest on a cache
  /// that may lag; nullptr when this state has no live source (a file, a test store).
  virtual std::unique_ptr<LiveView> liveView() const { return nullptr; }
  /// Grows whenever what get() and list() answer changes; a state that never changes (a file)
  /// stays at 0. For work that repeats only when something changed (the background scan).
  virtual uint64_t generation() const { return 0; }
};

/// The kinds whose cached state can turn a refusal into an allowance: a PV that is Retain, a
/// claim that is not bound, a namespace without claims. A decision that allows destruction
/// after reading one of these from a cache is confirmed by reading them live.
bool confirmedLive(const std::string& kind);

/// Cluster state read from the apiserver at the moment of asking, for one decision (not shared
/// between threads). Kinds outside confirmedLive(), and lists across all namespaces, come from
/// the cache it was made from. A failed read is remembered and falls back to the cache.
class LiveView : public ClusterState {
 public:
  /// The first read that failed ("" when every read was answered).
  virtual const std::string& error() const = 0;
  /// API requests made so far.
  virtual size_t reads() const = 0;
};

/// In-memory objects keyed by kind and namespace/name. Thread-safe; readers never block writers
/// long.
class ObjectStore : public ClusterState {
 public:
  bool ready() const override;
  ObjectPtr get(const std::string& kind, const std::string& ns,
                const std::string& name) const override;
  std::vector<ObjectPtr> list(const std::string& kind, const std::string& ns = "") const override;
  void forEach(const std::string& kind, const std::function<void(const ObjectPtr&)>& visit,
               const std::string& ns = "") const override;

  /// Bytes of packed objects held (what the store costs beyond its index).
  size_t packedBytes() const;

  /// Adds or replaces one object (kind taken from `kind`, not from the object).
  void upsert(const std::string& kind, json object);
  void remove(const std::string& kind, const std::string& ns, const std::string& name);
  class Batch;
  /// Replaces every object of a kind at once (after a list).
  void replaceAll(const std::string& kind, Batch batch);
  /// The same from trees (projected here).
  void replaceAll(const std::string& kind, std::vector<json> objects);
  void setReady(bool ready);
  size_t size(const std::string& kind) const;
  uint64_t generation() const override { return generation_.load(); }

 private:
  using Key = std::pair<std::string, std::string>;  // namespace, name
  /// An object as the store holds it: its projection (projectForCache) as MessagePack, which
  /// took a realistic mix from 3.55 to 1.55 KiB of RSS per object (bench/RESULTS.md). get() and
  /// list() decode on the way out, outside the lock, so a long list never holds writers back.
  using Packed = std::shared_ptr<const std::string>;
  static Packed pack(const json& object);
  static ObjectPtr unpack(const Packed& packed);
  /// The packed objects of a kind (in `ns`, or all), taken under the lock.
  std::vector<Packed> packedOf(const std::string& kind, const std::string& ns) const;

  mutable std::shared_mutex mu_;
  std::map<std::string, std::map<Key, Packed>> byKind_;
  size_t packedBytes_ = 0;
  bool ready_ = false;
  std::atomic<uint64_t> generation_{0};
};

/// Objects gathered for ObjectStore::replaceAll, projected and packed one by one as they are
/// added: the watch cache adds each list page's items as the page is decoded, so a list of
/// 100,000 Pods is never held as trees.
class ObjectStore::Batch {
 public:
  void add(const std::string& kind, json object);
  size_t size() const { return objects_.size(); }

 private:
  friend class ObjectStore;
  std::map<Key, Packed> objects_;
  size_t bytes_ = 0;
};

using ObjectStorePtr = std::shared_ptr<ObjectStore>;

/// Loads a `kubectl get -o json` List, a JSON object, or multi-document YAML into a ready store,
/// keeping the objects of `kinds` (by default what the webhook watches) and ignoring the rest.
Result<ObjectStorePtr> loadClusterStateFile(
    const std::string& path, const std::vector<ResourceKind>& kinds = watchedKinds());
Result<ObjectStorePtr> loadClusterStateText(
    std::string_view text, const std::string& source,
    const std::vector<ResourceKind>& kinds = watchedKinds());

}  // namespace stateguard
