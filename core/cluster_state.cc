#include "core/cluster_state.h"

#include <mutex>

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

ObjectPtr ObjectStore::get(const std::string& kind, const std::string& ns,
                           const std::string& name) const {
  std::shared_lock lock(mu_);
  auto k = byKind_.find(kind);
  if (k == byKind_.end()) return nullptr;
  auto it = k->second.find(Key{ns, name});
  return it == k->second.end() ? nullptr : it->second;
}

std::vector<ObjectPtr> ObjectStore::list(const std::string& kind, const std::string& ns) const {
  std::vector<ObjectPtr> out;
  std::shared_lock lock(mu_);
  auto k = byKind_.find(kind);
  if (k == byKind_.end()) return out;
  if (ns.empty()) {
    out.reserve(k->second.size());
    for (const auto& [key, obj] : k->second) out.push_back(obj);
    return out;
  }
  // Keys sort by namespace first, so one namespace is a contiguous range.
  for (auto it = k->second.lower_bound(Key{ns, ""}); it != k->second.end() && it->first.first == ns;
       ++it) {
    out.push_back(it->second);
  }
  return out;
}

void ObjectStore::upsert(const std::string& kind, json object) {
  projectForCache(kind, object);
  Key key{k8s::namespaceOf(object), k8s::name(object)};
  auto ptr = std::make_shared<const json>(std::move(object));
  std::unique_lock lock(mu_);
  byKind_[kind][std::move(key)] = std::move(ptr);
}

void ObjectStore::remove(const std::string& kind, const std::string& ns, const std::string& name) {
  std::unique_lock lock(mu_);
  auto k = byKind_.find(kind);
  if (k != byKind_.end()) k->second.erase(Key{ns, name});
}

void ObjectStore::replaceAll(const std::string& kind, std::vector<json> objects) {
  std::map<Key, ObjectPtr> fresh;
  for (auto& obj : objects) {
    Key key{k8s::namespaceOf(obj), k8s::name(obj)};
    fresh[std::move(key)] = std::make_shared<const json>(std::move(obj));
  }
  std::unique_lock lock(mu_);
  byKind_[kind] = std::move(fresh);
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
