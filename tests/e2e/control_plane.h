#pragma once
// A real Kubernetes control plane for the end-to-end suite, on 127.0.0.1 only: etcd (Debian's
// etcd-server), kube-apiserver and kube-controller-manager (the upstream builds in
// shared/tools, unpacked into the build tree once), with users from a static token file:
//
//   admin   group system:masters
//   alice   group stateguard:break-glass (cluster-admin through a ClusterRoleBinding)
//   bob     no group: `edit` in the namespaces the suite gives him, and PersistentVolumes
//   system:kube-controller-manager, whose controllers each act as their own service account
//           (--use-service-account-credentials)
//
// Privileged containers are allowed (CSI node plugins). No scheduler and no kubelet: Pods stay
// Pending, which is all admission needs; PVs bind, reclaim policies run (hostPath Delete removes
// directories under /tmp), namespaces and the garbage collector really delete.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/json_yaml.h"
#include "tests/e2e/daemon.h"
#include "tests/support/process.h"

namespace stateguard::testing {

/// Unpacked kube-apiserver and kube-controller-manager of one Kubernetes minor version.
struct KubeBinaries {
  std::string apiserver;
  std::string controllerManager;
  std::string version;  ///< what `kube-apiserver --version` says, e.g. "v1.26.5"
  std::string from;     ///< the directory the .xz files came from
};

/// Finds `<dir>/kube-apiserver.xz` and `kube-controller-manager.xz` for `minor` ("1.26",
/// "1.34") and unpacks them into `cacheRoot` (again only when the .xz changed). Looks in
/// $STATEGUARD_K8S_BIN (the files themselves, or k8s/ and k8s-1.34/ below it),
/// $STATEGUARD_SHARED_TOOLS/{k8s,k8s-1.34} and <source>/../shared/tools/{k8s,k8s-1.34}; the
/// first whose binary has that version wins. "" on success, else what is missing.
std::string findKubeBinaries(const std::string& minor, const std::string& cacheRoot,
                             KubeBinaries* out);

class ControlPlane {
 public:
  /// `minor` is "1.26" or "1.34".
  explicit ControlPlane(std::string minor);
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  /// One line naming what is missing to run (programs, binaries), or "" when all are there.
  std::string missing();
  /// Starts etcd, kube-apiserver and kube-controller-manager and waits until they serve.
  bool start(std::string* error);
  void stop();

  /// Stops kube-apiserver only (etcd and kube-controller-manager keep running): SIGTERM, then
  /// SIGKILL after 5 s. Returns "" after a graceful exit, else says it was killed.
  std::string stopApiServer();
  /// Starts it again on the same port and waits for /readyz.
  bool startApiServer(std::string* error);
  /// Compacts etcd at its current revision (through etcd's v3 JSON gateway, what `etcdctl
  /// compact --physical` does); returns the revision, or -1 with the reason in *error.
  int64_t compactEtcd(std::string* error);

  /// `kubectl --kubeconfig <user's> ARGS` (users: admin, alice, bob).
  CommandResult kubectl(const std::string& user, const std::vector<std::string>& args,
                        const std::string& stdinText = "",
                        std::chrono::milliseconds timeout = std::chrono::milliseconds(60000)) const;
  /// GET on the API as admin: {status, body}; status -1 when the request failed.
  std::pair<int, std::string> get(const std::string& path) const;
  /// The object at `path`, or null when it does not exist (or the request failed).
  json getObject(const std::string& path) const;

  /// Writes a kubeconfig for a bearer token (e.g. a service account's) and returns its path.
  std::string writeKubeconfig(const std::string& name, const std::string& token) const;
  std::string kubeconfig(const std::string& user) const;

  const std::string& minor() const { return minor_; }
  const std::string& version() const { return binaries_.version; }
  const std::string& workDir() const { return workDir_; }
  /// Where hostPath volumes go: below /tmp, the only place the hostPath deleter removes.
  const std::string& volumeDir() const { return volumeDir_; }
  const std::string& caPath() const { return caPath_; }
  /// The common name of the client certificate kube-apiserver presents to every admission
  /// webhook (signed by caPath(); set through --admission-control-config-file, as
  /// docs/client-certificates.md tells users to).
  static constexpr const char* kWebhookClientName = "kube-apiserver-webhook-client";
  int apiPort() const { return apiPort_; }
  std::string server() const { return "https://127.0.0.1:" + std::to_string(apiPort_); }
  Daemon& etcd() { return *etcd_; }
  Daemon& apiServer() { return *apiServer_; }
  Daemon& controllerManager() { return *controllerManager_; }

 private:
  bool makePki(std::string* error);
  bool startEtcd(std::string* error);
  bool waitApiServerReady(std::chrono::milliseconds timeout, std::string* error);
  bool startControllerManager(std::string* error);

  std::string minor_;
  KubeBinaries binaries_;
  std::string kubectl_, etcdBin_;
  std::string workDir_, volumeDir_, etcdDataDir_;
  std::string caPath_, tokenFile_, admissionConfig_;
  std::map<std::string, std::string> tokens_;  ///< user -> bearer token
  int etcdPort_ = 0, etcdPeerPort_ = 0, apiPort_ = 0;
  std::unique_ptr<Daemon> etcd_, apiServer_, controllerManager_;
};

}  // namespace stateguard::testing
