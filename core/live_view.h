#pragma once
// Reading the apiserver at the moment of a decision: the live view a WatchCache hands out when an
// allowance that destroys data must not rest on state that may be milliseconds old.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/cluster_state.h"
#include "core/kube_client.h"

namespace stateguard {

/// A LiveView over kube-apiserver: get() is one GET, list(kind, ns) one paged LIST of that
/// namespace, each answered once per view (a decision that asks twice sees the same object).
class ApiLiveView : public LiveView {
 public:
  /// `cache` answers for kinds outside confirmedLive() and for lists across all namespaces;
  /// both it and `client` must outlive the view.
  ApiLiveView(KubeClient& client, const ClusterState& cache,
              const std::vector<ResourceKind>& kinds);

  bool ready() const override { return true; }
  ObjectPtr get(const std::string& kind, const std::string& ns,
                const std::string& name) const override;
  std::vector<ObjectPtr> list(const std::string& kind, const std::string& ns = "") const override;
  const std::string& error() const override { return error_; }
  size_t reads() const override { return reads_; }

 private:
  const ResourceKind* find(const std::string& kind) const;
  void failed(const std::string& what) const;

  KubeClient& client_;
  const ClusterState& cache_;
  const std::vector<ResourceKind>& kinds_;
  mutable std::map<std::string, ObjectPtr> got_;                  // "kind/ns/name"
  mutable std::map<std::string, std::vector<ObjectPtr>> listed_;  // "kind/ns"
  mutable std::string error_;
  mutable size_t reads_ = 0;
};

/// The path of one object ("/api/v1/namespaces/NS/persistentvolumeclaims/NAME") or, with an
/// empty name, of a namespace's list ("/apis/apps/v1/namespaces/NS/statefulsets").
std::string objectPath(const ResourceKind& kind, const std::string& ns, const std::string& name);

}  // namespace stateguard
