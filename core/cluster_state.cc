#include "core/cluster_state.h"

#include <mutex>
#include <utility>

#include "core/k8s.h"
#include "core/projection.h"

namespace stateguard {

const std::vector<ResourceKind>& watchedKinds() {
  static const std::vector<ResourceKind> kKinds = {
      {"PersistentVolume", "/api/v1/persistentvolumes", false},
      {"PersistentVolumeClaim", "/api/v1/persistentvolumeclaims", true},
      {"Namespace", "/api/v1/namespaces", false},
      {"StatefulSet", "/apis/apps/v1/statefulsets", true},
      {"Pod", "/api/v1/pods", true},
      {"StorageClass", "/apis/storage.k8s.io/v1/storageclasses", false},
      {"Backup", "/apis/velero.io/v1/backups", true, kVeleroBackup, true},
      {"Backup", "/apis/longhorn.io/v1beta2/backups", true, kLonghornBackup, true},
      {"VolumeSnapshot", "/apis/snapshot.storage.k8s.io/v1/volumesnapshots", true, nullptr, true},
      {"ETCDSnapshotFile", "/apis/k3s.cattle.io/v1/etcdsnapshotfiles", false, nullptr, true},
      {"Service", "/api/v1/services", true},
  };
  return kKinds;
}

bool confirmedLive(const std::string& kind) {
  return kind == "PersistentVolume" || kind == "PersistentVolumeClaim" || kind == "Namespace" ||
         kind == "StatefulSet" || kind == "StorageClass" || kind == "Pod";
}

std::string ResourceKind::apiVersion() const {
  // "/api/v1/pods" -> "v1", "/apis/apps/v1/statefulsets" -> "apps/v1".
  const std::string path = apiPath;
  const std::string prefix = path.substr(0, path.rfind('/'));
  if (prefix.rfind("/apis/", 0) == 0) return prefix.substr(6);
  if (prefix.rfind("/api/", 0) == 0) return prefix.substr(5);
  return "v1";
}

std::string ResourceKind::group() const {
  const std::string v = apiVersion();
  const auto slash = v.find('/');
  return slash == std::string::npos ? "" : v.substr(0, slash);
}

const std::vector<ResourceKind>& backupScheduleKinds() {
  static const std::vector<ResourceKind> kKinds = {
      {"RecurringJob", "/apis/longhorn.io/v1beta2/recurringjobs", true, nullptr, true},
      {"Schedule", "/apis/velero.io/v1/schedules", true, nullptr, true},
  };
  return kKinds;
}

const ResourceKind* watchedKindOf(const json& object, const std::vector<ResourceKind>& kinds) {
  const std::string kind = k8s::kind(object);
  const std::string apiVersion = k8s::str(object, "/apiVersion");
  const auto slash = apiVersion.find('/');
  const std::string group = slash == std::string::npos ? "" : apiVersion.substr(0, slash);
  const ResourceKind* byKindOnly = nullptr;
  int sameKind = 0;
  for (const auto& rk : kinds) {
    if (kind != rk.kind) continue;
    if (!apiVersion.empty() && group == rk.group()) return &rk;
    byKindOnly = &rk;
    ++sameKind;
  }
  // Without an apiVersion (hand-written state files) the kind decides when it is unambiguous.
  return apiVersion.empty() && sameKind == 1 ? byKindOnly : nullptr;
}

bool ObjectStore::ready() const {
  std::shared_lock lock(mu_);
  return ready_;
}

void ObjectStore::setReady(bool ready) {
  std::unique_lock lock(mu_);
  ready_ = ready;
}

ObjectStore::Packed ObjectStore::pack(const json& object) {
  std::string bytes;
  json::to_msgpack(object, bytes);
  bytes.shrink_to_fit();
  return std::make_shared<const std::string>(std::move(bytes));
}

ObjectPtr ObjectStore::unpack(const Packed& packed) {
  if (!packed) return nullptr;
  // The store wrote these bytes itself: they always decode.
  return std::make_shared<const json>(json::from_msgpack(*packed));
}

ObjectPtr ObjectStore::get(const std::string& kind, const std::string& ns,
                           const std::string& name) const {
  Packed packed;
  {
    std::shared_lock lock(mu_);
    auto k = byKind_.find(kind);
    if (k == byKind_.end()) return nullptr;
    auto it = k->second.find(Key{ns, name});
    if (it == k->second.end()) return nullptr;
    packed = it->second;
  }
  return unpack(packed);
}

std::vector<ObjectStore::Packed> ObjectStore::packedOf(const std::string& kind,
                                                       const std::string& ns) const {
  std::vector<Packed> packed;
  std::shared_lock lock(mu_);
  auto k = byKind_.find(kind);
  if (k == byKind_.end()) return packed;
  if (ns.empty()) {
    packed.reserve(k->second.size());
    for (const auto& [key, obj] : k->second) packed.push_back(obj);
  } else {
    // Keys sort by namespace first, so one namespace is a contiguous range.
    for (auto it = k->second.lower_bound(Key{ns, ""});
         it != k->second.end() && it->first.first == ns; ++it) {
      packed.push_back(it->second);
    }
  }
  return packed;
}

std::vector<ObjectPtr> ObjectStore::list(const std::string& kind, const std::string& ns) const {
  const std::vector<Packed> packed = packedOf(kind, ns);
  std::vector<ObjectPtr> out;
  out.reserve(packed.size());
  for (const Packed& p : packed) out.push_back(unpack(p));
  return out;
}

void ObjectStore::forEach(const std::string& kind,
                          const std::function<void(const ObjectPtr&)>& visit,
                          const std::string& ns) const {
  for (const Packed& p : packedOf(kind, ns)) visit(unpack(p));
}

void ObjectStore::upsert(const std::string& kind, json object) {
  projectForCache(kind, object);
  Key key{k8s::namespaceOf(object), k8s::name(object)};
  Packed packed = pack(object);
  std::unique_lock lock(mu_);
  Packed& slot = byKind_[kind][std::move(key)];
  if (slot && *slot == *packed) return;  // nothing the store keeps changed (most status churn)
  ++generation_;
  if (slot) packedBytes_ -= slot->size();
  packedBytes_ += packed->size();
  slot = std::move(packed);
}

void ObjectStore::remove(const std::string& kind, const std::string& ns, const std::string& name) {
  std::unique_lock lock(mu_);
  auto k = byKind_.find(kind);
  if (k == byKind_.end()) return;
  auto it = k->second.find(Key{ns, name});
  if (it == k->second.end()) return;
  ++generation_;
  packedBytes_ -= it->second->size();
  k->second.erase(it);
}

void ObjectStore::Batch::add(const std::string& kind, json object) {
  projectForCache(kind, object);
  Key key{k8s::namespaceOf(object), k8s::name(object)};
  Packed packed = pack(object);
  bytes_ += packed->size();
  Packed& slot = objects_[std::move(key)];
  if (slot) bytes_ -= slot->size();
  slot = std::move(packed);
}

void ObjectStore::replaceAll(const std::string& kind, Batch batch) {
  std::unique_lock lock(mu_);
  std::map<Key, Packed>& held = byKind_[kind];
  ++generation_;
  for (const auto& [key, packed] : held) packedBytes_ -= packed->size();
  packedBytes_ += batch.bytes_;
  held = std::move(batch.objects_);
}

void ObjectStore::replaceAll(const std::string& kind, std::vector<json> objects) {
  Batch batch;
  for (auto& obj : objects) batch.add(kind, std::exchange(obj, nullptr));
  replaceAll(kind, std::move(batch));
}

size_t ObjectStore::packedBytes() const {
  std::shared_lock lock(mu_);
  return packedBytes_;
}

size_t ObjectStore::size(const std::string& kind) const {
  std::shared_lock lock(mu_);
  auto k = byKind_.find(kind);
  return k == byKind_.end() ? 0 : k->second.size();
}

Result<ObjectStorePtr> loadClusterStateText(std::string_view text, const std::string& source,
                                            const std::vector<ResourceKind>& kinds) {
  // Each List item is trimmed to what the rules read as soon as it is parsed.
  const ItemHook project = [](json& item) {
    if (item.is_object()) projectForCache(k8s::kind(item), item);
  };
  auto objects = parseObjects(text, source, &project);
  if (!objects.ok()) return makeError(objects.error());
  auto store = std::make_shared<ObjectStore>();
  for (auto& so : objects.value()) {
    const std::string kind = k8s::kind(so.object);
    if (kind.empty() || k8s::name(so.object).empty()) {
      return makeError(source + ": document " + std::to_string(so.document) + " item " +
                       std::to_string(so.item) + " has no kind or metadata.name");
    }
    if (const ResourceKind* rk = watchedKindOf(so.object, kinds))
      store->upsert(rk->storeKey(), std::move(so.object));
  }
  store->setReady(true);
  return store;
}

Result<ObjectStorePtr> loadClusterStateFile(const std::string& path,
                                            const std::vector<ResourceKind>& kinds) {
  auto text = readFile(path);
  if (!text.ok()) return makeError("cluster state: " + text.error());
  return loadClusterStateText(text.value(), path, kinds);
}

}  // namespace stateguard
