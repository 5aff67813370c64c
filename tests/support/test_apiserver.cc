#include "tests/support/test_apiserver.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <poll.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <sstream>

#include "core/cluster_state.h"
#include "core/k8s.h"

namespace stateguard::testing {
namespace {

using namespace std::chrono_literals;

/// A list's labelSelector: every term `key` (the label is set) or `key=value` holds.
bool selects(const std::string& selector, const json& object) {
  const json* labels = nullptr;
  if (auto m = object.find("metadata"); m != object.end() && m->is_object())
    if (auto l = m->find("labels"); l != m->end() && l->is_object()) labels = &*l;
  std::stringstream terms(selector);
  std::string term;
  while (std::getline(terms, term, ',')) {
    if (term.empty()) continue;
    const size_t eq = term.find('=');
    const std::string key = term.substr(0, eq);
    if (labels == nullptr || !labels->contains(key)) return false;
    if (eq != std::string::npos && (*labels)[key] != term.substr(eq + 1)) return false;
  }
  return true;
}

json statusObject(int code, const std::string& reason, const std::string& message) {
  return {{"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", json::object()},
          {"status", "Failure"}, {"message", message}, {"reason", reason},
          {"code", code}};
}

void sendStatus(httplib::Response& res, int code, const std::string& reason,
                const std::string& message) {
  res.status = code;
  res.set_content(statusObject(code, reason, message).dump(), "application/json");
}

/// False once a watching client has closed its side: a watch client never sends anything after
/// its request, so readable data (TLS close_notify) or EOF means it is gone.
bool clientConnected(int fd) {
  if (fd < 0) return true;
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  int n = ::poll(&p, 1, 0);
  return n == 0 || (n > 0 && (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) == 0);
}

bool truthy(const std::string& v) { return v == "true" || v == "1"; }

/// Digits only, no overflow; false otherwise.
bool parseUint(const std::string& text, uint64_t& out) {
  if (text.empty() || text.size() > 18) return false;
  out = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<uint64_t>(c - '0');
  }
  return true;
}

}  // namespace

/// One open watch response: what is still to be written, and when it ends.
struct TestApiServer::WatchStream {
  std::string kind;
  bool bookmarks = false;
  std::chrono::steady_clock::time_point deadline;
  std::deque<std::string> pending;
  bool dropped = false;
  bool finishAfterPending = false;  ///< the 410 ERROR event is the last thing sent
};

std::string base64Encode(const std::string& data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

TestApiServer::TestApiServer(TlsMaterial tls, TestApiServerOptions options)
    : tls_(std::move(tls)), options_(std::move(options)), token_(options_.token) {
  kinds_ = watchedKinds();
  kinds_.insert(kinds_.end(), options_.extraKinds.begin(), options_.extraKinds.end());
}

TestApiServer::~TestApiServer() { stop(); }

Status TestApiServer::start() {
  if (server_) return makeError("test apiserver: already started");
  // A client that goes away mid-stream must not kill the test process.
  std::signal(SIGPIPE, SIG_IGN);
  if (options_.requireClientCert) {
    server_ = std::make_unique<httplib::SSLServer>(
        tls_.serverCertPath.c_str(), tls_.serverKeyPath.c_str(), tls_.caCertPath.c_str());
  } else {
    server_ = std::make_unique<httplib::SSLServer>(tls_.serverCertPath.c_str(),
                                                   tls_.serverKeyPath.c_str());
  }
  if (!server_->is_valid()) return makeError("test apiserver: cannot load " + tls_.serverCertPath);
  // Every watch holds a worker thread for as long as it is open.
  server_->new_task_queue = [] { return new httplib::ThreadPool(48); };
  server_->set_keep_alive_timeout(1);
  // As kube-apiserver (Go sets TCP_NODELAY on every connection): without it the last segment of
  // each answer waits for the client's delayed ACK, up to 40 ms per list page.
  server_->set_tcp_nodelay(true);
  server_->Get(".*",
               [this](const httplib::Request& req, httplib::Response& res) { handle(req, res); });
  server_->Post(R"(/api/v1/namespaces/([^/]+)/events)", [this](const httplib::Request& req,
                                                               httplib::Response& res) {
    {
      std::lock_guard lock(mu_);
      if (req.get_header_value("Authorization") != "Bearer " + token_) {
        ++unauthorized_;
        sendStatus(res, 401, "Unauthorized", "Unauthorized");
        return;
      }
    }
    json event = json::parse(req.body, nullptr, false);
    if (!event.is_object() || event.value("kind", "") != "Event" ||
        event["metadata"].value("namespace", "") != req.matches[1].str()) {
      sendStatus(res, 400, "BadRequest", "not an Event for this namespace");
      return;
    }
    // As the real apiserver: a namespace being deleted takes no new content.
    const std::string ns = req.matches[1].str();
    json owner = object("Namespace", "", ns);
    if (owner.is_object() && !k8s::str(owner, "/metadata/deletionTimestamp").empty()) {
      sendStatus(res, 403, "Forbidden",
                 "events \"" + event["metadata"].value("generateName", "") +
                     "\" is forbidden: unable to create new content in namespace " + ns +
                     " because it is being terminated");
      return;
    }
    std::lock_guard lock(mu_);
    event["metadata"]["name"] =
        event["metadata"].value("generateName", "e.") + std::to_string(events_.size());
    events_.push_back(event);
    res.status = 201;
    res.set_content(event.dump(), "application/json");
  });
  // JSON merge patch of a PersistentVolume (the CSI sidecar's ledger annotation). As the real
  // apiserver: metadata.resourceVersion in the patch is a precondition (409 Conflict when stale).
  server_->Patch(R"(/api/v1/persistentvolumes/([^/]+))", [this](const httplib::Request& req,
                                                                httplib::Response& res) {
    std::unique_lock lock(mu_);
    if (req.get_header_value("Authorization") != "Bearer " + token_) {
      ++unauthorized_;
      sendStatus(res, 401, "Unauthorized", "Unauthorized");
      return;
    }
    if (req.get_header_value("Content-Type") != "application/merge-patch+json") {
      sendStatus(res, 415, "UnsupportedMediaType", "expected application/merge-patch+json");
      return;
    }
    json patch = json::parse(req.body, nullptr, false);
    if (!patch.is_object()) {
      sendStatus(res, 400, "BadRequest", "the patch is not a JSON object");
      return;
    }
    auto& byName = objects_["PersistentVolume"];
    auto it = byName.find({"", req.matches[1].str()});
    if (it == byName.end()) {
      sendStatus(res, 404, "NotFound",
                 "persistentvolumes \"" + req.matches[1].str() + "\" not found");
      return;
    }
    const std::string want = k8s::str(patch, "/metadata/resourceVersion");
    if (!want.empty() && want != k8s::str(*it->second, "/metadata/resourceVersion")) {
      ++patchConflicts_;
      sendStatus(res, 409, "Conflict",
                 "Operation cannot be fulfilled on persistentvolumes \"" + req.matches[1].str() +
                     "\": the object has been modified; please apply your changes to the latest "
                     "version and try again");
      return;
    }
    ++patches_;
    json object = *it->second;
    object.merge_patch(patch);
    object["metadata"]["name"] = req.matches[1].str();
    object["metadata"]["uid"] = (*it->second)["metadata"]["uid"];
    ++rv_;
    object["metadata"]["resourceVersion"] = std::to_string(rv_);
    it->second = std::make_shared<const json>(object);
    record("PersistentVolume", "MODIFIED", object);
    object["kind"] = "PersistentVolume";
    object["apiVersion"] = "v1";
    res.status = 200;
    res.set_content(object.dump(), "application/json");
  });
  port_ = server_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) return makeError("test apiserver: cannot bind 127.0.0.1");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!server_->is_running()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return makeError("test apiserver: did not start listening");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return Ok{};
}

void TestApiServer::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    paused_ = false;
  }
  cv_.notify_all();
  if (server_ && thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

std::string TestApiServer::url() const { return "https://127.0.0.1:" + std::to_string(port_); }

KubeConfig TestApiServer::kubeConfig() const {
  KubeConfig config;
  config.server = url();
  config.caPem = tls_.caPem;
  {
    std::lock_guard lock(mu_);
    config.token = token_;
  }
  config.source = "test apiserver " + url();
  return config;
}

const ResourceKind* TestApiServer::findKind(const std::string& key) const {
  for (const auto& rk : kinds_) {
    if (key == rk.storeKey()) return &rk;
  }
  return nullptr;
}

json TestApiServer::withKind(const std::string& kind, json object) const {
  const ResourceKind* rk = findKind(kind);
  object["kind"] = rk != nullptr ? rk->kind : kind;
  object["apiVersion"] = rk != nullptr ? rk->apiVersion() : "v1";
  return object;
}

uint64_t TestApiServer::record(const std::string& kind, const std::string& type,
                               const json& object) {
  // Caller holds mu_ and has stamped the object with rv_.
  std::string line = json{{"type", type}, {"object", withKind(kind, object)}}.dump() + "\n";
  history_.push_back(Event{rv_, kind, line});
  while (history_.size() > options_.historyLimit) {
    historyStart_ = history_.front().rv;
    history_.pop_front();
  }
  for (const auto& stream : streams_) {
    if (stream->kind == kind && !stream->finishAfterPending) stream->pending.push_back(line);
  }
  cv_.notify_all();
  return rv_;
}

uint64_t TestApiServer::add(const std::string& kind, json object) {
  if (findKind(kind) == nullptr || !object.is_object() || k8s::name(object).empty()) {
    ADD_FAILURE() << "TestApiServer::add: unknown kind " << kind << " or object without name";
    return 0;
  }
  object.erase("kind");
  object.erase("apiVersion");
  std::pair<std::string, std::string> key{k8s::namespaceOf(object), k8s::name(object)};
  std::lock_guard lock(mu_);
  auto& byName = objects_[kind];
  auto existing = byName.find(key);
  const bool isNew = existing == byName.end();
  ++rv_;
  json& meta = object["metadata"];
  meta["resourceVersion"] = std::to_string(rv_);
  if (!meta.contains("uid")) {
    meta["uid"] =
        isNew ? "uid-" + std::to_string(rv_) : k8s::str(*existing->second, "/metadata/uid");
  }
  if (!meta.contains("creationTimestamp")) meta["creationTimestamp"] = "2024-01-01T00:00:00Z";
  byName[key] = std::make_shared<const json>(object);
  return record(kind, isNew ? "ADDED" : "MODIFIED", object);
}

uint64_t TestApiServer::remove(const std::string& kind, const std::string& ns,
                               const std::string& name) {
  std::lock_guard lock(mu_);
  auto& byName = objects_[kind];
  auto it = byName.find({ns, name});
  if (it == byName.end()) return 0;
  json object = *it->second;
  byName.erase(it);
  ++rv_;
  object["metadata"]["resourceVersion"] = std::to_string(rv_);
  return record(kind, "DELETED", object);
}

uint64_t TestApiServer::resourceVersion() const {
  std::lock_guard lock(mu_);
  return rv_;
}

json TestApiServer::object(const std::string& kind, const std::string& ns,
                           const std::string& name) const {
  std::lock_guard lock(mu_);
  auto k = objects_.find(kind);
  if (k == objects_.end()) return nullptr;
  auto it = k->second.find({ns, name});
  return it == k->second.end() ? json(nullptr) : withKind(kind, *it->second);
}

void TestApiServer::setToken(const std::string& token) {
  std::lock_guard lock(mu_);
  token_ = token;
}

void TestApiServer::compactHistory() {
  std::lock_guard lock(mu_);
  history_.clear();
  historyStart_ = rv_;
}

void TestApiServer::dropWatches() {
  {
    std::lock_guard lock(mu_);
    for (const auto& stream : streams_) stream->dropped = true;
  }
  cv_.notify_all();
}

void TestApiServer::pauseWatches() {
  {
    std::lock_guard lock(mu_);
    paused_ = true;
    for (const auto& stream : streams_) stream->dropped = true;
  }
  cv_.notify_all();
}

void TestApiServer::resumeWatches() {
  {
    std::lock_guard lock(mu_);
    paused_ = false;
  }
  cv_.notify_all();
}

void TestApiServer::setGoneAsHttpStatus(bool on) {
  std::lock_guard lock(mu_);
  goneAsHttp_ = on;
}

void TestApiServer::expireContinueTokensOnce() {
  std::lock_guard lock(mu_);
  expireContinueOnce_ = true;
}

void TestApiServer::sendBookmarks() {
  {
    std::lock_guard lock(mu_);
    for (const auto& stream : streams_) {
      if (!stream->bookmarks || stream->finishAfterPending) continue;
      json object = withKind(stream->kind, json::object());
      object["metadata"] = {{"resourceVersion", std::to_string(rv_)}};
      stream->pending.push_back(json{{"type", "BOOKMARK"}, {"object", object}}.dump() + "\n");
    }
  }
  cv_.notify_all();
}

void TestApiServer::injectWatchData(const std::string& kind, const std::string& data) {
  {
    std::lock_guard lock(mu_);
    for (const auto& stream : streams_) {
      if (stream->kind == kind && !stream->finishAfterPending) stream->pending.push_back(data);
    }
  }
  cv_.notify_all();
}

void TestApiServer::setWatchChunkSize(size_t bytes) {
  std::lock_guard lock(mu_);
  chunkSize_ = bytes;
}

void TestApiServer::failRequests(const std::string& kind, int status) {
  std::lock_guard lock(mu_);
  if (status == 0) {
    failStatus_.erase(kind);
  } else {
    failStatus_[kind] = status;
  }
}

size_t TestApiServer::listRequests(const std::string& kind) const {
  std::lock_guard lock(mu_);
  auto it = listCount_.find(kind);
  return it == listCount_.end() ? 0 : it->second;
}

size_t TestApiServer::watchRequests(const std::string& kind) const {
  std::lock_guard lock(mu_);
  auto it = watchCount_.find(kind);
  return it == watchCount_.end() ? 0 : it->second;
}

size_t TestApiServer::openWatches(const std::string& kind) const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& stream : streams_) {
    if ((kind.empty() || stream->kind == kind) && !stream->dropped) ++n;
  }
  return n;
}

size_t TestApiServer::objectGets() const {
  std::lock_guard lock(mu_);
  return objectGets_;
}

std::vector<json> TestApiServer::events() const {
  std::lock_guard lock(mu_);
  return events_;
}

size_t TestApiServer::patchRequests() const {
  std::lock_guard lock(mu_);
  return patches_;
}

size_t TestApiServer::patchConflicts() const {
  std::lock_guard lock(mu_);
  return patchConflicts_;
}

size_t TestApiServer::unauthorizedRequests() const {
  std::lock_guard lock(mu_);
  return unauthorized_;
}

void TestApiServer::handle(const httplib::Request& req, httplib::Response& res) {
  {
    std::lock_guard lock(mu_);
    // With mTLS the handshake already authenticated the client.
    if (!options_.requireClientCert &&
        req.get_header_value("Authorization") != "Bearer " + token_) {
      ++unauthorized_;
      sendStatus(res, 401, "Unauthorized", "Unauthorized");
      return;
    }
  }
  for (const auto& rk : kinds_) {
    const std::string apiPath = rk.apiPath;
    const std::string prefix = apiPath.substr(0, apiPath.rfind('/'));
    const std::string resource = apiPath.substr(apiPath.rfind('/') + 1);
    if (req.path == apiPath) {
      const bool isWatch = truthy(req.get_param_value("watch"));
      int fail = 0;
      {
        std::lock_guard lock(mu_);
        ++(isWatch ? watchCount_ : listCount_)[rk.storeKey()];
        auto f = failStatus_.find(rk.storeKey());
        if (f != failStatus_.end()) fail = f->second;
      }
      if (fail != 0) {
        sendStatus(res, fail,
                   fail == 403   ? "Forbidden"
                   : fail == 404 ? "NotFound"
                                 : "InternalError",
                   "injected failure for " + apiPath);
      } else if (isWatch) {
        handleWatch(rk.storeKey(), req, res);
      } else {
        handleList(rk.storeKey(), req, res);
      }
      return;
    }
    // One namespace's list: <prefix>/namespaces/<ns>/<resource> (no watch here).
    if (rk.namespaced && req.path.rfind(prefix + "/namespaces/", 0) == 0) {
      const std::string rest = req.path.substr(prefix.size() + 12);
      const size_t slash = rest.find('/');
      if (slash != std::string::npos && rest.substr(slash + 1) == resource) {
        {
          std::lock_guard lock(mu_);
          ++listCount_[rk.storeKey()];
        }
        handleList(rk.storeKey(), req, res, rest.substr(0, slash));
        return;
      }
    }
    // Single objects: <apiPath>/<name>, or <prefix>/namespaces/<ns>/<resource>/<name>.
    std::string ns;
    std::string name;
    if (!rk.namespaced && req.path.rfind(apiPath + "/", 0) == 0) {
      name = req.path.substr(apiPath.size() + 1);
    } else if (rk.namespaced && req.path.rfind(prefix + "/namespaces/", 0) == 0) {
      std::string rest = req.path.substr(prefix.size() + 12);
      size_t slash = rest.find('/');
      if (slash == std::string::npos) continue;
      ns = rest.substr(0, slash);
      rest = rest.substr(slash + 1);
      if (rest.rfind(resource + "/", 0) != 0) continue;
      name = rest.substr(resource.size() + 1);
    } else {
      continue;
    }
    if (name.empty() || name.find('/') != std::string::npos) continue;
    int fail = 0;
    {
      std::lock_guard lock(mu_);
      ++objectGets_;
      auto f = failStatus_.find(rk.storeKey());
      if (f != failStatus_.end()) fail = f->second;
    }
    if (fail != 0) {
      sendStatus(res, fail, "InternalError", "injected failure for " + req.path);
      return;
    }
    json obj = object(rk.storeKey(), ns, name);
    if (obj.is_null()) {
      sendStatus(res, 404, "NotFound", resource + " \"" + name + "\" not found");
    } else {
      res.set_content(obj.dump(), "application/json");
    }
    return;
  }
  sendStatus(res, 404, "NotFound", "the server could not find the requested resource");
}

void TestApiServer::handleList(const std::string& kind, const httplib::Request& req,
                               httplib::Response& res, const std::string& ns) {
  const ResourceKind* rk = findKind(kind);
  uint64_t limit = 0;
  if (req.has_param("limit") && !parseUint(req.get_param_value("limit"), limit)) {
    sendStatus(res, 400, "BadRequest", "invalid limit");
    return;
  }
  const std::string cont = req.get_param_value("continue");
  std::lock_guard lock(mu_);
  Snapshot snap;
  if (!cont.empty()) {
    auto it = snapshots_.find(cont);
    if (expireContinueOnce_ || it == snapshots_.end() || it->second.rv < historyStart_ ||
        it->second.kind != kind) {
      expireContinueOnce_ = false;
      if (it != snapshots_.end()) snapshots_.erase(it);
      sendStatus(res, 410, "Expired",
                 "The provided continue parameter is too old to display a consistent list "
                 "result. You can start a new list without the continue parameter.");
      return;
    }
    snap = std::move(it->second);
    snapshots_.erase(it);
  } else {
    snap.rv = rv_;
    snap.kind = kind;
    snap.offset = 0;
    const std::string selector = req.get_param_value("labelSelector");
    for (const auto& [key, obj] : objects_[kind]) {
      if ((ns.empty() || k8s::namespaceOf(*obj) == ns) && selects(selector, *obj))
        snap.items.push_back(obj);
    }
  }
  const size_t remaining = snap.items.size() - snap.offset;
  const size_t n = limit > 0 ? std::min<size_t>(static_cast<size_t>(limit), remaining) : remaining;
  json head = {{"kind", std::string(rk->kind) + "List"},
               {"apiVersion", rk->apiVersion()},
               {"metadata", {{"resourceVersion", std::to_string(snap.rv)}}}};
  const size_t first = snap.offset;
  const std::vector<Stored>* items = &snap.items;
  if (n < remaining) {
    // Real continue tokens are base64 JSON too: exercises query encoding of '=' and '+'.
    std::string token =
        base64Encode(json{{"v", "meta.k8s.io/v1"}, {"rv", snap.rv}, {"n", nextSnapshot_++}}.dump());
    snap.offset += n;
    head["metadata"]["continue"] = token;
    head["metadata"]["remainingItemCount"] = remaining - n;
    if (snapshots_.size() > 1000) snapshots_.erase(snapshots_.begin());
    Snapshot& kept = snapshots_[token] = std::move(snap);
    items = &kept.items;
  }
  // Encoded item by item into the page, as kube-apiserver does: no copy of the items as a tree.
  std::string body = head.dump();
  body.pop_back();  // the closing brace
  body += ",\"items\":[";
  for (size_t i = first; i < first + n; ++i) {
    if (i > first) body += ',';
    body += (*items)[i]->dump();
  }
  body += "]}";
  res.set_content(std::move(body), "application/json");
}

void TestApiServer::handleWatch(const std::string& kind, const httplib::Request& req,
                                httplib::Response& res) {
  const std::string rvParam = req.get_param_value("resourceVersion");
  uint64_t timeout = 1800;
  if (req.has_param("timeoutSeconds") &&
      !parseUint(req.get_param_value("timeoutSeconds"), timeout)) {
    sendStatus(res, 400, "BadRequest", "invalid timeoutSeconds");
    return;
  }
  const int fd = req.ssl != nullptr ? SSL_get_fd(req.ssl) : -1;
  auto stream = std::make_shared<WatchStream>();
  stream->kind = kind;
  stream->bookmarks = truthy(req.get_param_value("allowWatchBookmarks"));
  stream->deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout);
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return !paused_ || stopping_; });
    if (stopping_) {
      sendStatus(res, 503, "ServiceUnavailable", "shutting down");
      return;
    }
    uint64_t from = 0;
    if (rvParam.empty() || rvParam == "0") {
      // "Any" resourceVersion: the current state as ADDED events, then changes.
      for (const auto& [key, obj] : objects_[kind]) {
        stream->pending.push_back(json{{"type", "ADDED"}, {"object", withKind(kind, *obj)}}.dump() +
                                  "\n");
      }
    } else if (!parseUint(rvParam, from)) {
      sendStatus(res, 400, "BadRequest", "invalid resourceVersion \"" + rvParam + "\"");
      return;
    } else if (from < historyStart_) {
      const std::string message =
          "too old resource version: " + rvParam + " (" + std::to_string(historyStart_) + ")";
      if (goneAsHttp_) {
        sendStatus(res, 410, "Expired", message);
        return;
      }
      // What kube-apiserver does: 200, then one ERROR event carrying a 410 Status.
      stream->pending.push_back(
          json{{"type", "ERROR"}, {"object", statusObject(410, "Expired", message)}}.dump() + "\n");
      stream->finishAfterPending = true;
    } else {
      for (const auto& event : history_) {
        if (event.rv > from && event.kind == kind) stream->pending.push_back(event.line);
      }
    }
    streams_.insert(stream);
  }
  res.set_chunked_content_provider(
      "application/json",
      [this, stream, fd](size_t, httplib::DataSink& sink) {
        std::string data;
        bool finish = false;
        size_t chunk = 0;
        {
          std::unique_lock lock(mu_);
          // Wakes at least every 50 ms so httplib notices clients that went away (it checks the
          // socket between calls) and the stream leaves openWatches().
          auto wakeAt = std::min(stream->deadline, std::chrono::steady_clock::now() + 50ms);
          cv_.wait_until(lock, wakeAt,
                         [&] { return stopping_ || stream->dropped || !stream->pending.empty(); });
          if (stopping_ || stream->dropped) return false;  // breaks the connection mid-stream
          if (stream->pending.empty() && std::chrono::steady_clock::now() < stream->deadline) {
            return clientConnected(fd);
          }
          while (!stream->pending.empty()) {
            data += stream->pending.front();
            stream->pending.pop_front();
          }
          finish =
              stream->finishAfterPending || std::chrono::steady_clock::now() >= stream->deadline;
          chunk = chunkSize_ == 0 ? data.size() : chunkSize_;
        }
        for (size_t off = 0; off < data.size(); off += chunk) {
          if (!sink.write(data.data() + off, std::min(chunk, data.size() - off))) return false;
        }
        if (finish) sink.done();
        return true;
      },
      [this, stream](bool) {
        std::lock_guard lock(mu_);
        streams_.erase(stream);
      });
}

Status writeKubeconfig(const std::string& path, const KubeConfig& config,
                       const std::string& contextName) {
  auto q = [](const std::string& s) { return json(s).dump(); };  // JSON strings are YAML too
  std::string out = "apiVersion: v1\nkind: Config\ncurrent-context: " + q(contextName) + "\n";
  out += "clusters:\n- name: " + q(contextName) + "\n  cluster:\n    server: " + q(config.server) +
         "\n";
  if (!config.caPem.empty()) {
    out += "    certificate-authority-data: " + base64Encode(config.caPem) + "\n";
  }
  if (config.insecureSkipVerify) out += "    insecure-skip-tls-verify: true\n";
  out += "users:\n- name: " + q(contextName) + "\n  user:\n";
  bool anyUser = false;
  if (!config.token.empty()) {
    out += "    token: " + q(config.token) + "\n";
    anyUser = true;
  }
  if (!config.tokenFile.empty()) {
    out += "    tokenFile: " + q(config.tokenFile) + "\n";
    anyUser = true;
  }
  if (!config.clientCertPem.empty()) {
    out += "    client-certificate-data: " + base64Encode(config.clientCertPem) + "\n";
    out += "    client-key-data: " + base64Encode(config.clientKeyPem) + "\n";
    anyUser = true;
  }
  if (!anyUser) out += "    {}\n";
  out += "contexts:\n- name: " + q(contextName) + "\n  context:\n    cluster: " + q(contextName) +
         "\n    user: " + q(contextName) + "\n";
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << out;
  file.close();
  if (!file) return makeError("cannot write " + path);
  return Ok{};
}

}  // namespace stateguard::testing
