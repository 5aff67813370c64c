#include "core/k8s.h"

namespace stateguard::k8s {
namespace {
const json kNull = nullptr;
}

const json& at(const json& obj, const char* pointer) {
  if (!obj.is_object()) return kNull;
  // json_pointer throws on malformed paths; callers pass literals, so only absence is expected.
  const json* cur = &obj;
  std::string_view p(pointer);
  while (!p.empty()) {
    if (p.front() != '/') return kNull;
    p.remove_prefix(1);
    size_t end = p.find('/');
    std::string_view token = p.substr(0, end);
    if (!cur->is_object()) return kNull;
    auto it = cur->find(token);  // heterogeneous lookup: no string built per segment
    if (it == cur->end()) return kNull;
    cur = &*it;
    if (end == std::string_view::npos) break;
    p.remove_prefix(end);
  }
  return *cur;
}

std::string str(const json& obj, const char* pointer) {
  const json& v = at(obj, pointer);
  return v.is_string() ? v.get<std::string>() : std::string();
}

std::string name(const json& obj) { return str(obj, "/metadata/name"); }
std::string namespaceOf(const json& obj) { return str(obj, "/metadata/namespace"); }
std::string kind(const json& obj) { return str(obj, "/kind"); }

std::string ref(const json& obj) {
  std::string ns = namespaceOf(obj);
  return ns.empty() ? name(obj) : ns + "/" + name(obj);
}

namespace {
std::optional<std::string> mapEntry(const json& obj, const char* mapPointer,
                                    const std::string& key) {
  const json& m = at(obj, mapPointer);
  if (!m.is_object()) return std::nullopt;
  auto it = m.find(key);
  if (it == m.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}
}  // namespace

std::optional<std::string> annotation(const json& obj, const std::string& key) {
  return mapEntry(obj, "/metadata/annotations", key);
}
std::optional<std::string> label(const json& obj, const std::string& key) {
  return mapEntry(obj, "/metadata/labels", key);
}

std::vector<std::string> finalizers(const json& obj) {
  std::vector<std::string> out;
  const json& f = at(obj, "/metadata/finalizers");
  if (!f.is_array()) return out;
  for (const auto& v : f) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

std::string pvReclaimPolicy(const json& pv) {
  std::string p = str(pv, "/spec/persistentVolumeReclaimPolicy");
  return p.empty() ? "Delete" : p;
}

std::string pvPhase(const json& pv) { return str(pv, "/status/phase"); }

std::string pvCapacity(const json& pv) {
  std::string c = str(pv, "/spec/capacity/storage");
  return c.empty() ? "unknown size" : c;
}

std::string pvStorageClass(const json& pv) {
  std::string sc = str(pv, "/spec/storageClassName");
  return sc.empty() ? "(none)" : sc;
}

std::string pvBackendVolume(const json& pv) {
  const json& spec = at(pv, "/spec");
  if (!spec.is_object()) return "(unknown backend volume)";
  if (auto h = str(pv, "/spec/csi/volumeHandle"); !h.empty()) {
    return str(pv, "/spec/csi/driver") + " volume " + h;
  }
  static const std::pair<const char*, const char*> kInTree[] = {
      {"/spec/awsElasticBlockStore/volumeID", "AWS EBS volume "},
      {"/spec/gcePersistentDisk/pdName", "GCE PD "},
      {"/spec/azureDisk/diskName", "Azure disk "},
      {"/spec/hostPath/path", "host path "},
      {"/spec/local/path", "local path "},
      {"/spec/nfs/path", "NFS export "},
      {"/spec/rbd/image", "Ceph RBD image "},
      {"/spec/iscsi/iqn", "iSCSI target "},
  };
  for (const auto& [ptr, label] : kInTree) {
    if (auto v = str(pv, ptr); !v.empty()) return std::string(label) + v;
  }
  return "(unknown backend volume)";
}

}  // namespace stateguard::k8s
