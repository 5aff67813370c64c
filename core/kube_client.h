#pragma once
// Talking to kube-apiserver: connection settings from a kubeconfig or the pod's service account,
// and a small HTTPS client for GET, paginated LIST and streaming WATCH.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "core/json_yaml.h"
#include "core/result.h"

namespace httplib {
class ClientImpl;
class SSLClient;
enum class Error;
}  // namespace httplib

namespace stateguard {

/// Where kube-apiserver is and how to authenticate to it (PEM bytes, not paths).
struct KubeConfig {
  std::string server;  ///< "https://host:port" (optionally with a path prefix)
  std::string caPem;   ///< CA bundle that signed the server certificate; "" = system CAs
  bool insecureSkipVerify = false;  ///< do not verify the server certificate (development only)
  std::string token;                ///< bearer token ("" = none, or read from tokenFile)
  std::string tokenFile;            ///< re-read periodically: bound service-account tokens rotate
  std::string clientCertPem;        ///< client certificate (and chain) for mTLS, with clientKeyPem
  std::string clientKeyPem;
  std::string source;  ///< where this came from, for messages ("kubeconfig /x")
};

/// Reads a kubeconfig file: the given context, or its current-context. Only token and client
/// certificate users are supported (no exec / auth-provider plugins). An empty path means
/// $KUBECONFIG (its first entry), else $HOME/.kube/config.
Result<KubeConfig> loadKubeconfig(const std::string& path, const std::string& context = "");

/// The in-cluster configuration: KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT and the
/// mounted service-account token and CA in `saDir`.
Result<KubeConfig> loadInClusterConfig(
    const std::string& saDir = "/var/run/secrets/kubernetes.io/serviceaccount");

/// Answer to one API request.
struct KubeResponse {
  int status = 0;  ///< HTTP status; 0 when there was no answer (connect, TLS, timeout, stopped)
  json body;       ///< parsed JSON body (a Status object on API errors); null when not JSON
  /// The body as received, unparsed, when the request asked for it (then `body` is only parsed
  /// for answers other than 2xx): list pages the caller decodes itself.
  std::string text;
  std::string error;  ///< "" on success; else names the request and the cause
  bool ok() const { return error.empty(); }
};

/// How a watch stream ended.
enum class WatchOutcome {
  kEnded,      ///< the server closed the stream cleanly (timeoutSeconds elapsed): re-watch
  kDropped,    ///< the stream broke after it was established: re-watch from the last RV
  kGoneHttp,   ///< HTTP 410 Gone: the resourceVersion is too old, re-list
  kGoneEvent,  ///< 200 then an ERROR event with code 410: the resourceVersion is too old, re-list
  kError,      ///< could not connect, TLS failure, non-200 answer, malformed event, other ERROR
  kStopped,    ///< KubeClient::stop() was called, or the event handler asked to stop
};
const char* toString(WatchOutcome outcome);

/// Result of one watch call.
struct WatchResult {
  WatchOutcome outcome = WatchOutcome::kError;
  int httpStatus = 0;   ///< 0 when no answer was received
  uint64_t events = 0;  ///< events delivered to the handler (bookmarks included)
  std::string message;  ///< why it ended (server Status message, transport error, parse error)
};

/// One watch event: type is ADDED, MODIFIED, DELETED or BOOKMARK (ERROR events end the watch).
/// Return false to stop watching.
using WatchEventHandler = std::function<bool(const std::string& type, json object)>;

class KubeClient;
using KubeClientPtr = std::shared_ptr<KubeClient>;

/// HTTPS client for kube-apiserver GET / LIST / WATCH. Thread-safe: every request in flight has
/// its own connection, so lists and long-running watches can run in parallel from several
/// threads; GETs and lists reuse up to four kept-alive connections between requests.
class KubeClient {
 public:
  /// Checks the server URL and parses the PEM material; errors name what is wrong.
  static Result<KubeClientPtr> create(KubeConfig config);
  ~KubeClient();
  KubeClient(const KubeClient&) = delete;
  KubeClient& operator=(const KubeClient&) = delete;

  /// GET `path` (e.g. "/api/v1/namespaces/default/pods/web-0"): the JSON body on 200, else an
  /// error with the HTTP status and the apiserver's Status message.
  Result<json> get(const std::string& path);
  /// GET with the raw outcome (status, body, error).
  KubeResponse request(const std::string& path);
  /// POST a JSON object (e.g. an Event to /api/v1/namespaces/NS/events); the raw outcome.
  KubeResponse post(const std::string& path, const json& body);
  /// PATCH with a JSON merge patch (RFC 7386, `application/merge-patch+json`), e.g. one
  /// annotation of a PersistentVolume; the raw outcome (the patched object on success).
  KubeResponse mergePatch(const std::string& path, const json& patch);
  /// PUT (replace) an object; with metadata.resourceVersion set, the apiserver answers 409 when
  /// the object changed since (optimistic concurrency, as leader election needs).
  KubeResponse put(const std::string& path, const json& body);
  /// DELETE an object; the raw outcome.
  KubeResponse remove(const std::string& path);
  /// One page of a list: `apiPath?limit=N&continue=TOKEN` (limit 0 = no limit, token "" = first).
  /// `raw`: a 2xx body is left in `text`, unparsed (see ListPageDecoder).
  KubeResponse list(const std::string& apiPath, int64_t limit, const std::string& continueToken,
                    bool raw = false);
  /// Streams `apiPath?watch=1&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=N`,
  /// calling `onEvent` for each event as it arrives; returns when the stream ends.
  WatchResult watch(const std::string& apiPath, const std::string& resourceVersion,
                    int timeoutSeconds, const WatchEventHandler& onEvent);

  /// Aborts every request in flight (closing its socket) and makes later requests fail at once.
  /// Returns once no request is in flight, normally within milliseconds (a TCP connect in
  /// progress can hold it up to the 5 s connect timeout; it gives up waiting after ~2 s).
  /// Permanent: a stopped client stays stopped, so do not share one with code that outlives its
  /// WatchCache.
  void stop();
  bool stopped() const { return stopped_.load(); }

  const std::string& server() const { return config_.server; }

 private:
  struct TlsState;
  class InFlight;
  explicit KubeClient(KubeConfig config);

  std::unique_ptr<httplib::SSLClient> makeClient(std::chrono::seconds readTimeout);
  KubeResponse send(const std::string& path, const json* body, const char* verb = "GET",
                    bool raw = false);
  std::string currentToken();
  void tokenRejected();
  std::string describe(const std::string& path) const;
  std::string transportError(httplib::Error error) const;

  KubeConfig config_;
  std::string host_;
  int port_ = 443;
  std::string pathPrefix_;
  std::unique_ptr<TlsState> tls_;

  std::mutex tokenMu_;
  std::string token_;
  std::chrono::steady_clock::time_point tokenReadAt_{};
  bool tokenStale_ = false;

  std::mutex inflightMu_;
  std::set<httplib::ClientImpl*> inflight_;

  /// Kept-alive connections for GETs, at most kMaxIdleConnections.
  std::unique_ptr<httplib::SSLClient> idleClient();
  void keepIdle(std::unique_ptr<httplib::SSLClient> cli);
  static constexpr size_t kMaxIdleConnections = 4;
  std::mutex idleMu_;
  std::vector<std::unique_ptr<httplib::SSLClient>> idle_;
  std::atomic<bool> stopped_{false};
};

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters are kept).
std::string urlEncode(const std::string& value);

}  // namespace stateguard
