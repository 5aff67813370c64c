#pragma once
// A fake kube-apiserver for tests: HTTPS on 127.0.0.1 (ephemeral port) speaking the real list /
// watch wire format for the kinds stateguard watches, with knobs to break it on purpose.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/cluster_state.h"
#include "core/json_yaml.h"
#include "core/kube_client.h"
#include "core/result.h"
#include "tests/support/tls_material.h"

namespace httplib {
class SSLServer;
struct Request;
struct Response;
}  // namespace httplib

namespace stateguard::testing {

/// How the fake apiserver authenticates and how much watch history it keeps.
struct TestApiServerOptions {
  std::string token = "test-token";  ///< required as "Authorization: Bearer <token>"
  /// Also require a client certificate signed by the test CA (mTLS). A request with a valid
  /// client certificate needs no token.
  bool requireClientCert = false;
  size_t historyLimit = 10000;  ///< events kept for watches; older resourceVersions get 410
  /// Kinds served besides watchedKinds() (e.g. scan::configurationKinds(): every version of a
  /// resource serves the same objects, as a CRD's versions do).
  std::vector<ResourceKind> extraKinds;
};

/// Fake kube-apiserver (cluster-wide list/watch of PersistentVolumes, PersistentVolumeClaims,
/// Namespaces, StatefulSets, Pods, StorageClasses, and GET of single objects):
///  - list: `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7",
///    "continue":"..."},"items":[...]}`, items without kind/apiVersion, paginated by
///    limit/continue from a consistent snapshot;
///  - watch: 200 with a chunked body, one `{"type":"ADDED","object":{...}}` line per event after
///    the requested resourceVersion; a too-old resourceVersion gets 200 + an ERROR event with a
///    Status of code 410 (or a plain HTTP 410 when goneAsHttpStatus is set); BOOKMARKs on demand;
///  - one global resourceVersion that every change increments.
/// Thread-safe: tests change objects while clients list and watch.
class TestApiServer {
 public:
  TestApiServer(TlsMaterial tls, TestApiServerOptions options = {});
  ~TestApiServer();
  TestApiServer(const TestApiServer&) = delete;
  TestApiServer& operator=(const TestApiServer&) = delete;

  /// Binds 127.0.0.1 on an ephemeral port and serves from a background thread.
  Status start();
  /// Ends every watch stream and stops serving. Idempotent; the destructor calls it.
  void stop();

  int port() const { return port_; }
  std::string url() const;  ///< "https://127.0.0.1:<port>"
  /// Connection settings for this server: URL, the test CA, the token.
  KubeConfig kubeConfig() const;
  const TlsMaterial& tls() const { return tls_; }

  // ---- cluster contents (each change is one event with a new resourceVersion) ----
  /// Creates or replaces an object (ADDED when new, MODIFIED otherwise); returns its RV.
  /// `kind` is the store key of one of watchedKinds() or options.extraKinds; kind/apiVersion in
  /// `object` are ignored.
  uint64_t add(const std::string& kind, json object);
  uint64_t modify(const std::string& kind, json object) { return add(kind, std::move(object)); }
  /// Deletes an object (DELETED event); returns the RV of the deletion, 0 when absent.
  uint64_t remove(const std::string& kind, const std::string& ns, const std::string& name);
  /// Current global resourceVersion.
  uint64_t resourceVersion() const;
  /// A copy of an object as stored (with kind/apiVersion), or null.
  json object(const std::string& kind, const std::string& ns, const std::string& name) const;
  /// Replaces the bearer token the server accepts (token rotation tests).
  void setToken(const std::string& token);

  // ---- fault injection ----
  /// Forgets all retained watch events: a watch from any older resourceVersion (and any
  /// continue token issued before) now gets 410. Open streams are not affected.
  void compactHistory();
  /// Breaks every open watch stream mid-way (connection closed without the final chunk).
  void dropWatches();
  /// Drops every open watch and holds new watch requests (no answer) until resumeWatches():
  /// changes made meanwhile are what a disconnected client misses.
  void pauseWatches();
  void resumeWatches();
  /// Answers watches from a too-old resourceVersion with HTTP 410 instead of 200 + ERROR event.
  void setGoneAsHttpStatus(bool on);
  /// The next list request carrying a continue token gets 410 Expired.
  void expireContinueTokensOnce();
  /// Sends a BOOKMARK with the current resourceVersion on every open watch that allowed them.
  void sendBookmarks();
  /// Writes raw bytes (e.g. a malformed line) into every open watch stream of `kind`.
  void injectWatchData(const std::string& kind, const std::string& data);
  /// Splits everything written to watch streams into HTTP chunks of at most `bytes` (0 = one
  /// chunk per batch of events, so several events can share a chunk).
  void setWatchChunkSize(size_t bytes);
  /// Every request for `kind` gets this HTTP status (with a Status body); 0 turns it off.
  void failRequests(const std::string& kind, int status);

  // ---- observations ----
  size_t listRequests(const std::string& kind) const;   ///< list pages served (any status)
  size_t watchRequests(const std::string& kind) const;  ///< watch requests received
  size_t openWatches(const std::string& kind = "") const;
  size_t unauthorizedRequests() const;
  /// GETs of single objects (any kind, any status): what a decision confirmed live costs.
  size_t objectGets() const;
  /// PATCHes of PersistentVolumes applied, and refused with 409 for a stale resourceVersion.
  size_t patchRequests() const;
  size_t patchConflicts() const;
  /// Events POSTed to /api/v1/namespaces/<ns>/events, in arrival order.
  std::vector<json> events() const;

 private:
  /// watchedKinds() and options_.extraKinds.
  std::vector<ResourceKind> kinds_;
  /// A served kind by its store key ("Pod", "Backup.velero.io"), or nullptr.
  const ResourceKind* findKind(const std::string& key) const;
  /// One change, kept for watches that start from an older resourceVersion.
  struct Event {
    uint64_t rv;
    std::string kind;
    std::string line;  ///< serialised event with the trailing '\n'
  };
  struct WatchStream;
  /// Objects are shared and never changed in place (a change stores a new one), so a list's
  /// snapshot is a vector of pointers, as a real apiserver's watch cache hands out.
  using Stored = std::shared_ptr<const json>;
  /// The rest of a paginated list, served from the state at its first page.
  struct Snapshot {
    uint64_t rv;
    std::string kind;
    std::vector<Stored> items;
    size_t offset;
  };

  void handle(const httplib::Request& req, httplib::Response& res);
  /// A list of `kind`, of one namespace when `ns` is not "".
  void handleList(const std::string& kind, const httplib::Request& req, httplib::Response& res,
                  const std::string& ns = "");
  void handleWatch(const std::string& kind, const httplib::Request& req, httplib::Response& res);
  uint64_t record(const std::string& kind, const std::string& type, const json& object);
  json withKind(const std::string& kind, json object) const;

  TlsMaterial tls_;
  TestApiServerOptions options_;
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;
  int port_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool paused_ = false;
  bool goneAsHttp_ = false;
  bool expireContinueOnce_ = false;
  size_t chunkSize_ = 0;
  std::string token_;
  size_t objectGets_ = 0;
  uint64_t rv_ = 1;
  uint64_t historyStart_ = 1;  ///< watches from RV >= this are served from history
  std::deque<Event> history_;
  std::map<std::string, std::map<std::pair<std::string, std::string>, Stored>> objects_;
  std::set<std::shared_ptr<WatchStream>> streams_;
  std::map<std::string, Snapshot> snapshots_;
  uint64_t nextSnapshot_ = 1;
  std::map<std::string, int> failStatus_;
  std::map<std::string, size_t> listCount_;
  std::map<std::string, size_t> watchCount_;
  size_t unauthorized_ = 0;
  size_t patches_ = 0;
  size_t patchConflicts_ = 0;
  std::vector<json> events_;
};

/// Writes a kubeconfig (one cluster, user and context, made current) for `config`: server,
/// certificate-authority-data, insecure-skip-tls-verify, token, client-certificate/key-data.
/// E.g. writeKubeconfig(dir + "/kubeconfig", server.kubeConfig()) then run a binary with
/// --kubeconfig.
Status writeKubeconfig(const std::string& path, const KubeConfig& config,
                       const std::string& contextName = "stateguard-test");

/// base64 of `data` (no line breaks), for kubeconfig *-data fields.
std::string base64Encode(const std::string& data);

}  // namespace stateguard::testing
