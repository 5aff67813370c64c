#include "core/watch_cache.h"

#include <algorithm>
#include <future>
#include <random>
#include <span>
#include <string_view>

#include "core/json_fast.h"
#include "core/k8s.h"
#include "core/log.h"
#include "core/projection.h"

namespace stateguard {
namespace {

/// A watch that delivered events or stayed open this long was healthy: re-watch at once.
constexpr auto kHealthyWatch = std::chrono::seconds(1);
/// Continue tokens that keep expiring mean the list cannot finish: give up and back off.
constexpr int kMaxListRestarts = 5;

std::string millis(std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; }

}  // namespace

/// Exponential backoff with a little jitter so replicas do not retry in lockstep.
struct WatchCache::Backoff {
  explicit Backoff(const WatchCacheOptions& options)
      : initial(std::max(options.initialBackoff, std::chrono::milliseconds(1))),
        max(std::max(options.maxBackoff, initial)),
        current(initial),
        rng(std::random_device{}()) {}

  std::chrono::milliseconds next() {
    auto delay = current;
    current = std::min(current * 2, max);
    std::uniform_int_distribution<int64_t> jitter(0, delay.count() / 10);
    return delay + std::chrono::milliseconds(jitter(rng));
  }
  void reset() { current = initial; }

  std::chrono::milliseconds initial;
  std::chrono::milliseconds max;
  std::chrono::milliseconds current;
  std::minstd_rand rng;
};

WatchCache::WatchCache(KubeClientPtr client, WatchCacheOptions options)
    : client_(std::move(client)),
      options_(std::move(options)),
      store_(std::make_shared<ObjectStore>()) {
  for (const auto& kind : options_.kinds) stats_[kind.storeKey()];
}

WatchCache::~WatchCache() { stop(); }

void WatchCache::start() {
  std::lock_guard lifecycle(lifecycleMu_);
  {
    std::lock_guard lock(mu_);
    if (stopping_ || !threads_.empty()) return;
  }
  log::info("watch cache: listing and watching " + std::to_string(options_.kinds.size()) +
            " kinds at " + client_->server());
  if (options_.kinds.empty()) markSynced("");
  for (const auto& kind : options_.kinds) {
    threads_.emplace_back([this, kind] { runReflector(kind); });
  }
}

void WatchCache::stop() {
  std::lock_guard lifecycle(lifecycleMu_);
  {
    std::lock_guard lock(mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  client_->stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

bool WatchCache::ready() const { return ready_.load(); }

ObjectPtr WatchCache::get(const std::string& kind, const std::string& ns,
                          const std::string& name) const {
  return store_->get(kind, ns, name);
}

std::vector<ObjectPtr> WatchCache::list(const std::string& kind, const std::string& ns) const {
  return store_->list(kind, ns);
}

bool WatchCache::waitReady(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [this] { return ready_.load() || stopping_; });
  return ready_.load();
}

bool WatchCache::synced(const std::string& kind) const { return stats(kind).synced; }

std::chrono::steady_clock::duration WatchCache::silence() const {
  if (!ready()) return {};
  const auto now = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration longest{};
  std::lock_guard lock(mu_);
  for (const auto& [kind, s] : stats_) {
    if (s.absent || s.lastContact == std::chrono::steady_clock::time_point{}) continue;
    longest = std::max(longest, now - s.lastContact);
  }
  return longest;
}

std::unique_ptr<LiveView> WatchCache::liveView() const {
  return std::make_unique<ApiLiveView>(*client_, *this, options_.kinds);
}

WatchStats WatchCache::stats(const std::string& kind) const {
  std::lock_guard lock(mu_);
  auto it = stats_.find(kind);
  return it == stats_.end() ? WatchStats{} : it->second;
}

std::map<std::string, WatchStats> WatchCache::allStats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

bool WatchCache::stopping() const {
  std::lock_guard lock(mu_);
  return stopping_;
}

bool WatchCache::sleepFor(std::chrono::milliseconds delay) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, delay, [this] { return stopping_; });
}

template <typename F>
void WatchCache::update(const std::string& kind, F&& change) {
  std::lock_guard lock(mu_);
  change(stats_[kind]);
}

void WatchCache::markSynced(const std::string& kind) {
  bool nowReady = false;
  {
    std::lock_guard lock(mu_);
    if (!kind.empty()) stats_[kind].synced = true;
    bool all = std::all_of(stats_.begin(), stats_.end(),
                           [](const auto& entry) { return entry.second.synced; });
    if (all && !ready_.load()) {
      store_->setReady(true);
      ready_.store(true);
      nowReady = true;
    }
  }
  if (nowReady) {
    cv_.notify_all();
    log::info("watch cache: all " + std::to_string(options_.kinds.size()) + " kinds synced");
  }
}

Result<std::string> WatchCache::listAll(const ResourceKind& rk) {
  const std::string kind = rk.storeKey();
  const std::string what = "list " + std::string(rk.apiPath);
  // Fields the projection drops are never built as trees (managedFields; most of a Pod).
  const FieldSkip skip = [&kind](std::span<const std::string_view> path) {
    return cacheSkipsField(kind, path);
  };
  for (int attempt = 1;; ++attempt) {
    ObjectStore::Batch items;
    ListPageDecoder decoder;  // simdjson's buffers for this list only
    std::string continueToken;
    std::string resourceVersion;
    bool expired = false;
    KubeResponse page = client_->list(rk.apiPath, options_.pageLimit, "", true);
    // The next page is asked for as soon as this one's continue token is read, and arrives while
    // this one's items are decoded and packed: the apiserver's work and ours overlap.
    std::future<KubeResponse> next;
    for (;;) {
      if (stopping()) return makeError("stopped");
      if (page.status == 410 && !continueToken.empty()) {
        expired = true;
        break;
      }
      // An optional kind the server does not serve (CRD not installed) or does not let us read:
      // hold none rather than keep the whole cache unready.
      if ((page.status == 404 || page.status == 403) && rk.optional && continueToken.empty()) {
        if (!stats(kind).absent)  // said once, not at every look
          log::info("watch cache: " + kind + ": " + std::string(rk.apiPath) + " answered " +
                    std::to_string(page.status) +
                    (page.status == 404 ? " (CRD not installed)" : " (no RBAC permission)") +
                    "; holding none, looking again in " + millis(options_.absentRecheck));
        return std::string();
      }
      if (!page.ok()) return makeError(page.error);
      ListPageDecoder::Page meta;
      std::string error;
      if (!decoder.parse(page.text, meta, error)) return makeError(what + ": " + error);
      // Every page of a paginated list is served from the first page's snapshot.
      if (resourceVersion.empty()) resourceVersion = meta.resourceVersion;
      continueToken = meta.continueToken;
      if (!continueToken.empty()) {
        next = std::async(std::launch::async, [this, &rk, token = continueToken] {
          return client_->list(rk.apiPath, options_.pageLimit, token, true);
        });
      }
      // List items carry neither kind nor apiVersion: the list does, for all of them.
      const bool added = decoder.forEachItem(skip, [&](json item) {
        if (!item.is_object() || k8s::name(item).empty()) {
          log::warn("watch cache: " + kind + ": list item without metadata.name ignored");
          return;
        }
        item["kind"] = rk.kind;
        if (!item.contains("apiVersion") && !meta.apiVersion.empty())
          item["apiVersion"] = meta.apiVersion;
        items.add(kind, std::move(item));  // packed as each page comes: never a whole list
      });
      if (!added) return makeError(what + ": an item nests too deep");
      if (continueToken.empty()) break;
      page = next.get();
    }

    if (expired) {
      if (attempt >= kMaxListRestarts) {
        return makeError(what + ": continue token expired " + std::to_string(attempt) +
                         " times in a row");
      }
      log::info("watch cache: " + kind +
                ": restarting the list: continue token expired (410 Gone) between pages");
      continue;
    }
    if (resourceVersion.empty()) return makeError(what + ": no metadata.resourceVersion");
    const size_t count = items.size();
    store_->replaceAll(kind, std::move(items));
    update(kind, [&](WatchStats& s) {
      ++s.lists;
      s.resourceVersion = resourceVersion;
      s.lastContact = std::chrono::steady_clock::now();
    });
    log::info("watch cache: " + kind + ": listed " + std::to_string(count) +
              " objects at resourceVersion " + resourceVersion);
    return resourceVersion;
  }
}

void WatchCache::runReflector(const ResourceKind& rk) {
  const std::string kind = rk.storeKey();
  const std::string tag = "watch cache: " + kind + ": ";
  Backoff backoff(options_);
  std::string resourceVersion;
  bool needList = true;
  int goneInARow = 0;

  auto onEvent = [&](const std::string& type, json object) {
    if (stopping()) return false;
    std::string rv = k8s::str(object, "/metadata/resourceVersion");
    if (type == "BOOKMARK") {
      if (!rv.empty()) resourceVersion = rv;
      update(kind, [&](WatchStats& s) {
        ++s.bookmarks;
        s.resourceVersion = resourceVersion;
        s.lastContact = std::chrono::steady_clock::now();
      });
      return true;
    }
    const std::string name = k8s::name(object);
    if (name.empty()) {
      log::warn(tag + type + " event without metadata.name ignored");
      return true;
    }
    if (type == "DELETED") {
      store_->remove(kind, k8s::namespaceOf(object), name);
    } else {
      object["kind"] = rk.kind;
      store_->upsert(kind, std::move(object));
    }
    if (!rv.empty()) resourceVersion = rv;
    update(kind, [&](WatchStats& s) {
      ++s.events;
      s.resourceVersion = resourceVersion;
      s.lastContact = std::chrono::steady_clock::now();
    });
    return true;
  };

  while (!stopping()) {
    if (needList) {
      auto listed = listAll(rk);
      if (stopping()) return;
      if (!listed.ok()) {
        auto delay = backoff.next();
        update(kind, [&](WatchStats& s) {
          ++s.errors;
          s.lastError = listed.error();
        });
        log::warn(tag + "list failed, retrying in " + millis(delay) + ": " + listed.error());
        sleepFor(delay);
        continue;
      }
      backoff.reset();
      if (listed.value().empty()) {
        // An optional kind not served or not readable: nothing to hold. Ready without it, and
        // look again later in case its CRD (or the permission) arrives.
        store_->replaceAll(kind, ObjectStore::Batch());
        update(kind, [](WatchStats& s) { s.absent = true; });
        markSynced(kind);
        sleepFor(options_.absentRecheck);
        continue;
      }
      update(kind, [](WatchStats& s) { s.absent = false; });
      resourceVersion = listed.value();
      needList = false;
      markSynced(kind);
    }

    const auto started = std::chrono::steady_clock::now();
    WatchResult w =
        client_->watch(rk.apiPath, resourceVersion, options_.watchTimeoutSeconds, onEvent);
    const bool healthy =
        w.events > 0 || std::chrono::steady_clock::now() - started >= kHealthyWatch;
    if (healthy) goneInARow = 0;

    switch (w.outcome) {
      case WatchOutcome::kStopped:
        return;
      case WatchOutcome::kGoneHttp:
      case WatchOutcome::kGoneEvent: {
        update(kind, [](WatchStats& s) { ++s.relistsAfterGone; });
        log::info(tag + "re-listing: watch from resourceVersion " + resourceVersion + " answered " +
                  toString(w.outcome) + " (" + w.message + ")");
        needList = true;
        // A server that answers 410 to every fresh list's resourceVersion must not spin us.
        if (++goneInARow > 1) sleepFor(backoff.next());
        break;
      }
      case WatchOutcome::kEnded:
      case WatchOutcome::kDropped: {
        update(kind, [&](WatchStats& s) {
          ++s.watchRestarts;
          // The server ending a watch on its own timeout is word from it; a broken stream is not.
          if (w.outcome == WatchOutcome::kEnded) s.lastContact = std::chrono::steady_clock::now();
        });
        if (w.outcome == WatchOutcome::kDropped) {
          log::info(tag + "watch dropped (" + w.message + "), resuming from resourceVersion " +
                    resourceVersion);
        }
        if (healthy) {
          backoff.reset();
        } else {
          sleepFor(backoff.next());
        }
        break;
      }
      case WatchOutcome::kError: {
        auto delay = backoff.next();
        update(kind, [&](WatchStats& s) {
          ++s.errors;
          ++s.watchRestarts;
          s.lastError = w.message;
        });
        log::warn(tag + "watch failed, re-watching from resourceVersion " + resourceVersion +
                  " in " + millis(delay) + ": " + w.message);
        sleepFor(delay);
        break;
      }
    }
  }
}

Result<WatchCachePtr> startWatchCache(KubeConfig config, WatchCacheOptions options) {
  auto client = KubeClient::create(std::move(config));
  if (!client.ok()) return makeError(client.error());
  auto cache = std::make_shared<WatchCache>(std::move(client).value(), std::move(options));
  cache->start();
  return cache;
}

}  // namespace stateguard
