#include "core/live_view.h"

#include "core/k8s.h"

namespace stateguard {

std::string objectPath(const ResourceKind& kind, const std::string& ns, const std::string& name) {
  const std::string apiPath = kind.apiPath;
  std::string path = apiPath;
  if (kind.namespaced && !ns.empty()) {
    const size_t slash = apiPath.rfind('/');
    path = apiPath.substr(0, slash) + "/namespaces/" + urlEncode(ns) + apiPath.substr(slash);
  }
  if (!name.empty()) path += "/" + urlEncode(name);
  return path;
}

ApiLiveView::ApiLiveView(KubeClient& client, const ClusterState& cache,
                         const std::vector<ResourceKind>& kinds)
    : client_(client), cache_(cache), kinds_(kinds) {}

const ResourceKind* ApiLiveView::find(const std::string& kind) const {
  if (!confirmedLive(kind)) return nullptr;
  for (const auto& rk : kinds_) {
    if (rk.storeKey() == kind) return &rk;
  }
  return nullptr;
}

void ApiLiveView::failed(const std::string& what) const {
  if (error_.empty()) error_ = what;
}

ObjectPtr ApiLiveView::get(const std::string& kind, const std::string& ns,
                           const std::string& name) const {
  const ResourceKind* rk = find(kind);
  if (rk == nullptr) return cache_.get(kind, ns, name);
  const std::string key = kind + "/" + ns + "/" + name;
  if (auto it = got_.find(key); it != got_.end()) return it->second;
  ++reads_;
  KubeResponse r = client_.request(objectPath(*rk, ns, name));
  ObjectPtr out;
  if (r.status == 404) {
    out = nullptr;
  } else if (r.ok() && r.body.is_object()) {
    r.body["kind"] = rk->kind;
    out = std::make_shared<const json>(std::move(r.body));
  } else {
    failed(r.ok() ? "GET " + objectPath(*rk, ns, name) + ": not a JSON object" : r.error);
    return cache_.get(kind, ns, name);
  }
  got_[key] = out;
  return out;
}

std::vector<ObjectPtr> ApiLiveView::list(const std::string& kind, const std::string& ns) const {
  const ResourceKind* rk = find(kind);
  if (rk == nullptr || ns.empty() || !rk->namespaced) return cache_.list(kind, ns);
  const std::string key = kind + "/" + ns;
  if (auto it = listed_.find(key); it != listed_.end()) return it->second;
  const std::string path = objectPath(*rk, ns, "");
  std::vector<ObjectPtr> out;
  std::string continueToken;
  do {
    ++reads_;
    KubeResponse page = client_.list(path, 500, continueToken);
    if (!page.ok() || !page.body.is_object()) {
      failed(page.ok() ? "LIST " + path + ": not a JSON object" : page.error);
      return cache_.list(kind, ns);
    }
    const std::string apiVersion = k8s::str(page.body, "/apiVersion");
    auto items = page.body.find("items");
    if (items != page.body.end() && items->is_array()) {
      for (auto& item : *items) {
        if (!item.is_object()) continue;
        item["kind"] = rk->kind;
        if (!item.contains("apiVersion")) item["apiVersion"] = apiVersion;
        out.push_back(std::make_shared<const json>(std::move(item)));
      }
    }
    continueToken = k8s::str(page.body, "/metadata/continue");
  } while (!continueToken.empty());
  listed_[key] = out;
  return out;
}

}  // namespace stateguard
