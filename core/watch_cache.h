#pragma once
// Live cluster state: a list+watch cache (one reflector thread per watched kind) over the kube
// API, so admission decisions never need an API call.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/cluster_state.h"
#include "core/kube_client.h"
#include "core/live_view.h"

namespace stateguard {

/// Tuning of the reflectors; the defaults suit production, tests shorten the timings.
struct WatchCacheOptions {
  int64_t pageLimit = 500;                        ///< objects per list page
  int watchTimeoutSeconds = 300;                  ///< server ends each watch; we re-watch
  std::chrono::milliseconds initialBackoff{200};  ///< after a failed request
  std::chrono::milliseconds maxBackoff{10000};    ///< backoff doubles up to this
  /// How often an optional kind that is not served (404) or not readable (403) is looked for again.
  std::chrono::milliseconds absentRecheck{std::chrono::minutes(5)};
  std::vector<ResourceKind> kinds = watchedKinds();  ///< what to list and watch
};

/// Counters of one kind's reflector (for tests and /metrics).
struct WatchStats {
  bool synced = false;            ///< first list completed
  bool absent = false;            ///< an optional kind not served (404) or not readable (403)
  uint64_t lists = 0;             ///< completed lists (initial, after 410, after errors)
  uint64_t relistsAfterGone = 0;  ///< lists forced by 410 Gone (HTTP or ERROR event)
  uint64_t watchRestarts = 0;     ///< watches re-opened after they ended, dropped or failed
  uint64_t events = 0;            ///< ADDED / MODIFIED / DELETED events applied
  uint64_t bookmarks = 0;         ///< BOOKMARK events seen
  uint64_t errors = 0;            ///< failed lists and watches
  std::string resourceVersion;    ///< last resourceVersion seen (list, event or bookmark)
  std::string lastError;          ///< the most recent failure, "" when none yet
  /// When the apiserver last answered for this kind: a list, an event, a bookmark, or a watch it
  /// ended cleanly. Zero before the first list.
  std::chrono::steady_clock::time_point lastContact{};
};

/// ClusterState backed by list+watch of the watched kinds. ready() turns true once every kind
/// has been listed once, and stays true (later outages keep serving the last known state).
class WatchCache : public ClusterState {
 public:
  WatchCache(KubeClientPtr client, WatchCacheOptions options = {});
  ~WatchCache() override;
  WatchCache(const WatchCache&) = delete;
  WatchCache& operator=(const WatchCache&) = delete;

  /// Starts one reflector thread per kind. Call once.
  void start();
  /// Stops every reflector (aborting open requests) and joins the threads; idempotent.
  void stop();

  bool ready() const override;
  ObjectPtr get(const std::string& kind, const std::string& ns,
                const std::string& name) const override;
  std::vector<ObjectPtr> list(const std::string& kind, const std::string& ns = "") const override;
  void forEach(const std::string& kind, const std::function<void(const ObjectPtr&)>& visit,
               const std::string& ns = "") const override {
    store_->forEach(kind, visit, ns);
  }

  /// Waits until ready() or the timeout; returns ready().
  bool waitReady(std::chrono::milliseconds timeout) const;
  bool synced(const std::string& kind) const;
  /// How long the quietest watched kind has gone without word from the apiserver (optional kinds
  /// that are not served do not count); zero before the cache is ready.
  std::chrono::steady_clock::duration silence() const;
  /// Reads the apiserver directly, with the same client and kinds (see LiveView).
  std::unique_ptr<LiveView> liveView() const override;
  uint64_t generation() const override { return store_->generation(); }
  /// A copy of one kind's counters (zeroes for a kind that is not watched).
  WatchStats stats(const std::string& kind) const;
  std::map<std::string, WatchStats> allStats() const;

  const ObjectStorePtr& store() const { return store_; }
  const KubeClientPtr& client() const { return client_; }

 private:
  struct Backoff;

  void runReflector(const ResourceKind& kind);
  Result<std::string> listAll(const ResourceKind& kind);
  bool sleepFor(std::chrono::milliseconds delay);
  bool stopping() const;
  void markSynced(const std::string& kind);
  template <typename F>
  void update(const std::string& kind, F&& change);

  KubeClientPtr client_;
  WatchCacheOptions options_;
  ObjectStorePtr store_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::map<std::string, WatchStats> stats_;
  bool stopping_ = false;
  std::atomic<bool> ready_{false};

  std::mutex lifecycleMu_;  ///< serialises start() and stop()
  std::vector<std::thread> threads_;
};

using WatchCachePtr = std::shared_ptr<WatchCache>;

/// Builds a client from `config` and starts a cache over it (not yet ready: see waitReady()).
Result<WatchCachePtr> startWatchCache(KubeConfig config, WatchCacheOptions options = {});

}  // namespace stateguard
