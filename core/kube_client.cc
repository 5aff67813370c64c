#include "core/kube_client.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <array>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <string_view>
#include <thread>

#include "core/json_fast.h"
#include "core/k8s.h"
#include "core/log.h"

namespace stateguard {
namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(5);
constexpr auto kRequestTimeout = std::chrono::seconds(30);
constexpr auto kWriteTimeout = std::chrono::seconds(10);
/// A watch is silent between events; allow that much beyond its own timeoutSeconds.
constexpr auto kWatchReadSlack = std::chrono::seconds(30);
/// Bound service-account tokens rotate; client-go re-reads the file every minute too.
constexpr auto kTokenRereadInterval = std::chrono::seconds(60);
constexpr size_t kMaxWatchLine = 64u * 1024u * 1024u;
constexpr size_t kMaxErrorBody = 64u * 1024u;
/// Deeper events are left to json::parse (real objects nest a few dozen levels).
constexpr size_t kMaxEventDepth = 256;
constexpr const char* kUserAgent = "stateguard/0.1";

struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

std::string trim(std::string_view s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string lastOpensslError() {
  unsigned long code = ERR_get_error();  // NOLINT(runtime/int): OpenSSL's type
  ERR_clear_error();
  if (code == 0) return "no details";
  std::array<char, 256> buf{};
  ERR_error_string_n(code, buf.data(), buf.size());
  return buf.data();
}

/// " (<reason>)" from this thread's OpenSSL error queue (e.g. the server's TLS alert), or "".
std::string opensslDetails() {
  if (ERR_peek_error() == 0) return "";
  return " (" + lastOpensslError() + ")";
}

/// Every certificate in a PEM bundle; an error when there is none or one is malformed.
Result<std::vector<X509Ptr>> parseCertificates(const std::string& pem, const std::string& what) {
  std::vector<X509Ptr> certs;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return makeError(what + ": out of memory");
  ERR_clear_error();
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certs.emplace_back(cert);
  }
  // Reading stops with "no start line" at the end of the data: expected once certs were read.
  unsigned long err = ERR_peek_last_error();  // NOLINT(runtime/int): OpenSSL's type
  bool atEnd = ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE;
  if (err != 0 && !atEnd) {
    return makeError(what + ": invalid PEM certificate: " + lastOpensslError());
  }
  ERR_clear_error();
  if (certs.empty()) return makeError(what + ": no PEM certificate found");
  return certs;
}

Result<PkeyPtr> parsePrivateKey(const std::string& pem, const std::string& what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return makeError(what + ": out of memory");
  ERR_clear_error();
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return makeError(what + ": invalid PEM private key: " + lastOpensslError());
  return key;
}

/// Standard base64 (kubeconfig *-data fields); whitespace is ignored.
Result<std::string> base64Decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  bool padding = false;
  for (char c : in) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    if (c == '=') {
      padding = true;
      continue;
    }
    int v = value(c);
    if (v < 0 || padding) return makeError("invalid base64");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xffu));
    }
  }
  return out;
}

/// The first certificate verification error of the handshake running on this thread (handshakes
/// run in the thread that makes the request), for the error message.
thread_local int tlsVerifyError = X509_V_OK;

int recordVerifyError(int preverifyOk, X509_STORE_CTX* ctx) {
  if (preverifyOk == 0 && tlsVerifyError == X509_V_OK) {
    tlsVerifyError = X509_STORE_CTX_get_error(ctx);
  }
  return preverifyOk;
}

bool isIpAddress(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::string statusMessage(const json& body, const std::string& raw) {
  if (body.is_object()) {
    auto it = body.find("message");
    if (it != body.end() && it->is_string()) return it->get<std::string>();
  }
  std::string text = trim(raw);
  if (text.size() > 200) text = text.substr(0, 200) + "...";
  return text;
}

std::string httpError(int status, const json& body, const std::string& raw) {
  std::string out = "HTTP " + std::to_string(status);
  std::string msg = statusMessage(body, raw);
  if (!msg.empty()) out += ": " + msg;
  return out;
}

/// Splits a chunked watch body into newline-terminated JSON events. An event may arrive split over
/// several chunks, or several events in one chunk.
class WatchStreamParser {
 public:
  WatchStreamParser(const WatchEventHandler& onEvent, WatchResult& result)
      : onEvent_(onEvent), result_(result) {}

  /// Consumes bytes; false once the stream must end (result_ then says why).
  bool feed(const char* data, size_t size) {
    // Bytes before scanned_ hold no newline: a large event arriving in many chunks is scanned once.
    size_t scanFrom = buffer_.size();
    buffer_.append(data, size);
    size_t start = 0;
    for (;;) {
      size_t nl = buffer_.find('\n', std::max(start, scanFrom));
      if (nl == std::string::npos) break;
      bool more = line(std::string_view(buffer_).substr(start, nl - start));
      start = nl + 1;
      if (!more) {
        buffer_.clear();
        return false;
      }
    }
    buffer_.erase(0, start);
    if (buffer_.size() > kMaxWatchLine) {
      return fail(WatchOutcome::kError,
                  "watch event larger than " + std::to_string(kMaxWatchLine) + " bytes");
    }
    return true;
  }

  /// The stream ended: an unterminated last event is still an event.
  bool finish() {
    std::string rest;
    rest.swap(buffer_);
    return line(rest);
  }

  bool ended() const { return ended_; }

 private:
  bool fail(WatchOutcome outcome, std::string message) {
    result_.outcome = outcome;
    result_.message = std::move(message);
    ended_ = true;
    return false;
  }

  bool line(std::string_view raw) {
    std::string text = trim(raw);
    if (text.empty()) return true;
    // simdjson first (about twice as fast: a watch under churn decodes every event); what it
    // refuses, json::parse judges.
    json event;
    if (!parseJsonFast(text, event, kMaxEventDepth)) event = json::parse(text, nullptr, false);
    if (event.is_discarded() || !event.is_object()) {
      if (text.size() > 120) text = text.substr(0, 120) + "...";
      return fail(WatchOutcome::kError, "malformed watch event: " + text);
    }
    auto type = event.find("type");
    auto object = event.find("object");
    if (type == event.end() || !type->is_string() || object == event.end() ||
        !object->is_object()) {
      return fail(WatchOutcome::kError, "watch event without type or object");
    }
    std::string t = type->get<std::string>();
    if (t == "ERROR") {
      int code = 0;
      if (auto c = object->find("code"); c != object->end() && c->is_number_integer()) {
        code = c->get<int>();
      }
      std::string reason = k8s::str(*object, "/reason");
      std::string message = statusMessage(*object, object->dump());
      if (code == 410 || (code == 0 && (reason == "Expired" || reason == "Gone"))) {
        return fail(WatchOutcome::kGoneEvent, message);
      }
      return fail(WatchOutcome::kError,
                  "watch ERROR event: code " + std::to_string(code) + ": " + message);
    }
    if (t != "ADDED" && t != "MODIFIED" && t != "DELETED" && t != "BOOKMARK") {
      return fail(WatchOutcome::kError, "unknown watch event type \"" + t + "\"");
    }
    ++result_.events;
    bool more = false;
    try {
      more = onEvent_(t, std::move(*object));
    } catch (const std::exception& e) {
      return fail(WatchOutcome::kError, std::string("watch event not understood: ") + e.what());
    }
    if (!more) return fail(WatchOutcome::kStopped, "stopped by the event handler");
    return true;
  }

  const WatchEventHandler& onEvent_;
  WatchResult& result_;
  std::string buffer_;
  bool ended_ = false;
};

Status parseServerUrl(const std::string& server, std::string& host, int& port,
                      std::string& prefix) {
  const std::string bad = "server \"" + server + "\": ";
  std::string lower = server;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.rfind("http://", 0) == 0) {
    return makeError(bad + "plain http is not supported, use https");
  }
  if (lower.rfind("https://", 0) != 0) return makeError(bad + "must start with https://");
  std::string rest = server.substr(8);
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (authority.find('@') != std::string::npos) {
    return makeError(bad + "user information in the URL is not supported");
  }
  std::string portText;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) return makeError(bad + "unterminated [IPv6] host");
    host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return makeError(bad + "unexpected text after ]");
      portText = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string::npos) portText = authority.substr(colon + 1);
  }
  if (host.empty()) return makeError(bad + "no host");
  port = 443;
  if (!portText.empty()) {
    int p = 0;
    for (char c : portText) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || p > 65535) {
        return makeError(bad + "invalid port \"" + portText + "\"");
      }
      p = p * 10 + (c - '0');
    }
    if (p < 1 || p > 65535) return makeError(bad + "invalid port \"" + portText + "\"");
    port = p;
  }
  return Ok{};
}

// ---- kubeconfig ----

/// The entry `inner` of the element named `name` in the list `listKey` ("contexts", "context").
const json* findNamed(const json& doc, const char* listKey, const std::string& name,
                      const char* inner) {
  auto list = doc.find(listKey);
  if (list == doc.end() || !list->is_array()) return nullptr;
  for (const auto& entry : *list) {
    if (!entry.is_object() || entry.value("name", json()) != json(name)) continue;
    auto it = entry.find(inner);
    static const json kEmpty = json::object();
    if (it == entry.end() || it->is_null()) return &kEmpty;
    return it->is_object() ? &*it : nullptr;
  }
  return nullptr;
}

/// A string field; "" when absent. Non-strings are an error.
Result<std::string> stringField(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::string();
  if (!it->is_string()) return makeError(where + ": field " + key + " must be a string");
  return it->get<std::string>();
}

std::string resolvePath(const std::filesystem::path& dir, const std::string& p) {
  std::filesystem::path path(p);
  if (path.is_absolute() || dir.empty()) return path.string();
  return (dir / path).lexically_normal().string();
}

/// Inline base64 data wins over a file path, as in client-go.
Result<std::string> dataOrFile(const json& obj, const char* dataKey, const char* fileKey,
                               const std::filesystem::path& dir, const std::string& where) {
  auto data = stringField(obj, dataKey, where);
  if (!data.ok()) return data;
  if (!data.value().empty()) {
    auto decoded = base64Decode(data.value());
    if (!decoded.ok()) return makeError(where + ": " + dataKey + " is not valid base64");
    return decoded;
  }
  auto file = stringField(obj, fileKey, where);
  if (!file.ok()) return file;
  if (file.value().empty()) return std::string();
  auto content = readFile(resolvePath(dir, file.value()));
  if (!content.ok()) return makeError(where + ": " + fileKey + ": " + content.error());
  return content;
}

std::string defaultKubeconfigPath() {
  if (const char* env = std::getenv("KUBECONFIG"); env != nullptr && *env != '\0') {
    std::string_view list(env);
    while (!list.empty()) {
      size_t colon = list.find(':');
      std::string_view first = list.substr(0, colon);
      if (!first.empty()) return std::string(first);
      if (colon == std::string_view::npos) break;
      list.remove_prefix(colon + 1);
    }
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "") + "/.kube/config";
}

}  // namespace

const char* toString(WatchOutcome outcome) {
  switch (outcome) {
    case WatchOutcome::kEnded:
      return "ended";
    case WatchOutcome::kDropped:
      return "dropped";
    case WatchOutcome::kGoneHttp:
      return "410 Gone";
    case WatchOutcome::kGoneEvent:
      return "ERROR event 410";
    case WatchOutcome::kError:
      return "error";
    case WatchOutcome::kStopped:
      return "stopped";
  }
  return "unknown";
}

std::string urlEncode(const std::string& value) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Result<KubeConfig> loadKubeconfig(const std::string& pathArg, const std::string& context) {
  const std::string path = pathArg.empty() ? defaultKubeconfigPath() : pathArg;
  const std::string where = "kubeconfig " + path;
  auto text = readFile(path);
  if (!text.ok()) return makeError(where + ": " + text.error());
  auto docs = parseDocuments(text.value(), path);
  if (!docs.ok()) return makeError("kubeconfig " + docs.error());
  if (docs.value().empty() || !docs.value()[0].is_object()) {
    return makeError(where + ": not a kubeconfig (expected a YAML mapping)");
  }
  const json& doc = docs.value()[0];
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();

  std::string contextName = context;
  if (contextName.empty()) {
    auto current = stringField(doc, "current-context", where);
    if (!current.ok()) return makeError(current.error());
    contextName = current.value();
    if (contextName.empty()) {
      return makeError(where + ": no current-context set (pass a context name)");
    }
  }
  const json* ctx = findNamed(doc, "contexts", contextName, "context");
  if (ctx == nullptr) return makeError(where + ": context \"" + contextName + "\" not found");
  const std::string ctxWhere = where + ": context \"" + contextName + "\"";
  auto clusterName = stringField(*ctx, "cluster", ctxWhere);
  if (!clusterName.ok()) return makeError(clusterName.error());
  if (clusterName.value().empty()) return makeError(ctxWhere + ": no cluster set");
  auto userName = stringField(*ctx, "user", ctxWhere);
  if (!userName.ok()) return makeError(userName.error());

  const json* cluster = findNamed(doc, "clusters", clusterName.value(), "cluster");
  if (cluster == nullptr) {
    return makeError(where + ": cluster \"" + clusterName.value() + "\" (used by context \"" +
                     contextName + "\") not found");
  }
  const std::string clWhere = where + ": cluster \"" + clusterName.value() + "\"";
  KubeConfig config;
  config.source = where + " (context " + contextName + ")";
  auto server = stringField(*cluster, "server", clWhere);
  if (!server.ok()) return makeError(server.error());
  if (server.value().empty()) return makeError(clWhere + ": no server set");
  config.server = server.value();
  auto ca =
      dataOrFile(*cluster, "certificate-authority-data", "certificate-authority", dir, clWhere);
  if (!ca.ok()) return makeError(ca.error());
  config.caPem = ca.value();
  if (auto it = cluster->find("insecure-skip-tls-verify"); it != cluster->end()) {
    config.insecureSkipVerify = (it->is_boolean() && it->get<bool>()) ||
                                (it->is_string() && it->get<std::string>() == "true");
  }
  for (const char* unsupported : {"proxy-url", "tls-server-name"}) {
    if (cluster->contains(unsupported)) {
      log::warn(clWhere + ": " + unsupported + " is not supported and is ignored");
    }
  }

  if (!userName.value().empty()) {
    const json* user = findNamed(doc, "users", userName.value(), "user");
    if (user == nullptr) {
      return makeError(where + ": user \"" + userName.value() + "\" (used by context \"" +
                       contextName + "\") not found");
    }
    const std::string uWhere = where + ": user \"" + userName.value() + "\"";
    if (auto exec = user->find("exec"); exec != user->end() && !exec->is_null()) {
      std::string command = k8s::str(*exec, "/command");
      return makeError(uWhere + " uses an exec credential plugin (" + command +
                       "), which is not supported: use a kubeconfig with a token, tokenFile or "
                       "client certificate (e.g. a service-account token)");
    }
    if (auto ap = user->find("auth-provider"); ap != user->end() && !ap->is_null()) {
      std::string name = k8s::str(*ap, "/name");
      return makeError(uWhere + " uses the auth-provider \"" + name +
                       "\", which is not supported: use a kubeconfig with a token, tokenFile or "
                       "client certificate (e.g. a service-account token)");
    }
    if (user->contains("username") || user->contains("password")) {
      return makeError(uWhere +
                       " uses basic authentication, which is not supported: use a token, "
                       "tokenFile or client certificate");
    }
    auto token = stringField(*user, "token", uWhere);
    if (!token.ok()) return makeError(token.error());
    config.token = trim(token.value());
    auto tokenFile = stringField(*user, "tokenFile", uWhere);
    if (!tokenFile.ok()) return makeError(tokenFile.error());
    if (!tokenFile.value().empty()) {
      config.tokenFile = resolvePath(dir, tokenFile.value());
      auto content = readFile(config.tokenFile);
      if (!content.ok() && config.token.empty()) {
        return makeError(uWhere + ": tokenFile: " + content.error());
      }
      if (content.ok() && !trim(content.value()).empty()) config.token = trim(content.value());
    }
    auto cert = dataOrFile(*user, "client-certificate-data", "client-certificate", dir, uWhere);
    if (!cert.ok()) return makeError(cert.error());
    auto key = dataOrFile(*user, "client-key-data", "client-key", dir, uWhere);
    if (!key.ok()) return makeError(key.error());
    if (cert.value().empty() != key.value().empty()) {
      return makeError(uWhere + ": client certificate and client key must be given together");
    }
    config.clientCertPem = cert.value();
    config.clientKeyPem = key.value();
  }
  return config;
}

Result<KubeConfig> loadInClusterConfig(const std::string& saDir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0' || port == nullptr || *port == '\0') {
    return makeError(
        "in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set "
        "(not running in a pod? use --kubeconfig)");
  }
  KubeConfig config;
  std::string h = host;
  if (h.find(':') != std::string::npos && h.front() != '[') h = "[" + h + "]";
  config.server = "https://" + h + ":" + port;
  config.source = "in-cluster service account (" + saDir + ")";
  config.tokenFile = saDir + "/token";
  auto token = readFile(config.tokenFile);
  if (!token.ok()) return makeError("in-cluster config: token: " + token.error());
  config.token = trim(token.value());
  if (config.token.empty())
    return makeError("in-cluster config: " + config.tokenFile + " is empty");
  auto ca = readFile(saDir + "/ca.crt");
  if (!ca.ok()) return makeError("in-cluster config: CA: " + ca.error());
  config.caPem = ca.value();
  return config;
}

// ---- KubeClient ----

/// Parsed PEM material and the trust store, shared read-only by every connection.
struct KubeClient::TlsState {
  X509_STORE* trust = nullptr;  ///< the CA bundle, or the system CAs when none was given
  X509Ptr clientCert;
  std::vector<X509Ptr> clientChain;
  PkeyPtr clientKey;

  TlsState() = default;
  TlsState(const TlsState&) = delete;
  TlsState& operator=(const TlsState&) = delete;
  ~TlsState() { X509_STORE_free(trust); }
};

/// Registers a connection as in flight so stop() can abort it; refuses once stopped.
class KubeClient::InFlight {
 public:
  InFlight(KubeClient& owner, httplib::ClientImpl* client) : owner_(owner), client_(client) {
    std::lock_guard lock(owner_.inflightMu_);
    if (owner_.stopped_) return;
    owner_.inflight_.insert(client_);
    registered_ = true;
  }
  ~InFlight() {
    if (!registered_) return;
    std::lock_guard lock(owner_.inflightMu_);
    owner_.inflight_.erase(client_);
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;
  bool registered() const { return registered_; }

 private:
  KubeClient& owner_;
  httplib::ClientImpl* client_;
  bool registered_ = false;
};

KubeClient::KubeClient(KubeConfig config)
    : config_(std::move(config)), tls_(std::make_unique<TlsState>()) {}

KubeClient::~KubeClient() = default;

Result<KubeClientPtr> KubeClient::create(KubeConfig config) {
  const std::string where = config.source.empty() ? "kube client" : config.source;
  KubeClientPtr client(new KubeClient(std::move(config)));
  auto parsed =
      parseServerUrl(client->config_.server, client->host_, client->port_, client->pathPrefix_);
  if (!parsed.ok()) return makeError(where + ": " + parsed.error());
  TlsState& tls = *client->tls_;
  if (!client->config_.insecureSkipVerify) {
    // Built once: loading the system bundle for every connection costs ~20 ms of CPU.
    tls.trust = X509_STORE_new();
    if (tls.trust == nullptr) return makeError(where + ": out of memory");
    if (!client->config_.caPem.empty()) {
      auto certs = parseCertificates(client->config_.caPem, where + ": CA");
      if (!certs.ok()) return makeError(certs.error());
      for (const auto& cert : certs.value()) X509_STORE_add_cert(tls.trust, cert.get());
    } else if (X509_STORE_set_default_paths(tls.trust) != 1) {
      return makeError(where + ": cannot load the system CA certificates: " + lastOpensslError());
    }
    ERR_clear_error();
  }
  if (!client->config_.clientCertPem.empty() || !client->config_.clientKeyPem.empty()) {
    if (client->config_.clientCertPem.empty() || client->config_.clientKeyPem.empty()) {
      return makeError(where + ": client certificate and client key must be given together");
    }
    auto certs = parseCertificates(client->config_.clientCertPem, where + ": client certificate");
    if (!certs.ok()) return makeError(certs.error());
    auto key = parsePrivateKey(client->config_.clientKeyPem, where + ": client key");
    if (!key.ok()) return makeError(key.error());
    auto chain = std::move(certs).value();
    tls.clientCert = std::move(chain.front());
    for (size_t i = 1; i < chain.size(); ++i) tls.clientChain.push_back(std::move(chain[i]));
    tls.clientKey = std::move(key).value();
    if (X509_check_private_key(tls.clientCert.get(), tls.clientKey.get()) != 1) {
      ERR_clear_error();
      return makeError(where + ": client key does not match the client certificate");
    }
  }
  client->token_ = client->config_.token;
  return client;
}

std::string KubeClient::describe(const std::string& path) const {
  return "GET " + config_.server + path;
}

std::string KubeClient::currentToken() {
  std::lock_guard lock(tokenMu_);
  if (config_.tokenFile.empty()) return token_;
  auto now = std::chrono::steady_clock::now();
  bool due = tokenReadAt_ == std::chrono::steady_clock::time_point{} ||
             now - tokenReadAt_ >= kTokenRereadInterval;
  if (tokenStale_ || due) {
    tokenReadAt_ = now;
    tokenStale_ = false;
    auto content = readFile(config_.tokenFile);
    std::string fresh = content.ok() ? trim(content.value()) : "";
    if (!fresh.empty()) {
      if (fresh != token_ && !token_.empty()) log::info("kube client: token re-read (rotated)");
      token_ = std::move(fresh);
    } else {
      log::warn("kube client: cannot read token file " + config_.tokenFile + ": " +
                (content.ok() ? std::string("empty") : content.error()) + "; keeping the old one");
    }
  }
  return token_;
}

void KubeClient::tokenRejected() {
  std::lock_guard lock(tokenMu_);
  tokenStale_ = true;  // a rotated token may be waiting in the file: read it before the next call
}

std::unique_ptr<httplib::SSLClient> KubeClient::makeClient(std::chrono::seconds readTimeout) {
  std::unique_ptr<httplib::SSLClient> cli;
  if (tls_->clientCert) {
    cli = std::make_unique<httplib::SSLClient>(host_, port_, tls_->clientCert.get(),
                                               tls_->clientKey.get());
  } else {
    cli = std::make_unique<httplib::SSLClient>(host_, port_);
  }
  if (!cli->is_valid() || cli->ssl_context() == nullptr) return nullptr;
  SSL_CTX* ctx = cli->ssl_context();
  for (const auto& cert : tls_->clientChain) SSL_CTX_add1_chain_cert(ctx, cert.get());
  // OpenSSL verifies the chain and the host (SAN) during the handshake, against the trust store
  // built once in create(). cpp-httplib's own check is off: it would load the system CA bundle
  // for every connection and trust it in addition to the cluster CA.
  cli->enable_server_certificate_verification(false);
  if (tls_->trust != nullptr) {
    X509_STORE_up_ref(tls_->trust);
    SSL_CTX_set_cert_store(ctx, tls_->trust);
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
    if (isIpAddress(host_)) {
      X509_VERIFY_PARAM_set1_ip_asc(param, host_.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, host_.c_str(), host_.size());
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, recordVerifyError);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  cli->set_connection_timeout(kConnectTimeout);
  cli->set_read_timeout(readTimeout);
  cli->set_write_timeout(kWriteTimeout);
  cli->set_keep_alive(false);
  // The request goes out in more than one TLS record: without TCP_NODELAY the second waits for
  // the apiserver's delayed ACK, 40 ms per request (measured: a live GET took 55 ms, 2 ms with it).
  cli->set_tcp_nodelay(true);
  cli->set_follow_location(false);
  cli->set_url_encode(false);  // paths and queries are encoded here
  cli->set_default_headers({{"Accept", "application/json"}, {"User-Agent", kUserAgent}});
  std::string token = currentToken();
  if (!token.empty()) cli->set_bearer_token_auth(token);
  return cli;
}

std::string KubeClient::transportError(httplib::Error error) const {
  if (stopped_) return "client stopped";
  switch (error) {
    case httplib::Error::SSLConnection:
      if (tlsVerifyError != X509_V_OK) {
        const bool wrongHost = tlsVerifyError == X509_V_ERR_HOSTNAME_MISMATCH ||
                               tlsVerifyError == X509_V_ERR_IP_ADDRESS_MISMATCH;
        ERR_clear_error();
        return std::string("TLS: server certificate verification failed: ") +
               X509_verify_cert_error_string(tlsVerifyError) +
               (wrongHost ? " (the certificate is not issued for " + host_ + ")"
                          : std::string(" (is the CA right? certificate-authority / ca.crt)"));
      }
      return "TLS handshake failed" + opensslDetails();
    case httplib::Error::Connection:
      return "cannot connect to " + host_ + ":" + std::to_string(port_);
    case httplib::Error::ConnectionTimeout:
      return "timed out connecting to " + host_ + ":" + std::to_string(port_);
    case httplib::Error::Read:
      return "connection closed or timed out while reading the answer" + opensslDetails();
    case httplib::Error::Write:
      return "connection closed while sending the request" + opensslDetails();
    default:
      return httplib::to_string(error);
  }
}

KubeResponse KubeClient::request(const std::string& path) { return send(path, nullptr); }

KubeResponse KubeClient::post(const std::string& path, const json& body) {
  return send(path, &body, "POST");
}

KubeResponse KubeClient::mergePatch(const std::string& path, const json& patch) {
  return send(path, &patch, "PATCH");
}

KubeResponse KubeClient::put(const std::string& path, const json& body) {
  return send(path, &body, "PUT");
}

KubeResponse KubeClient::remove(const std::string& path) { return send(path, nullptr, "DELETE"); }

KubeResponse KubeClient::send(const std::string& path, const json* body, const char* verb,
                              bool raw) {
  KubeResponse out;
  const std::string_view method(verb);
  std::string what = describe(path);
  if (method != "GET") what.replace(0, 3, verb);
  if (stopped_) {
    out.error = what + ": client stopped";
    return out;
  }
  // GETs reuse a kept-alive connection when one is idle: a decision confirmed against the API
  // then costs a request, not a TCP and TLS handshake (bench/RESULTS.md). A kept connection the
  // server has closed meanwhile fails at once; a GET is then retried once on a new one.
  const bool pooled = method == "GET";
  std::unique_ptr<httplib::SSLClient> cli = pooled ? idleClient() : nullptr;
  const bool reused = cli != nullptr;
  if (!cli) cli = makeClient(kRequestTimeout);
  if (!cli) {
    out.error = what + ": cannot set up TLS: " + lastOpensslError();
    return out;
  }
  if (pooled) {
    cli->set_keep_alive(true);
    const std::string token = currentToken();
    if (!token.empty()) cli->set_bearer_token_auth(token);
  }
  httplib::Result res{nullptr, httplib::Error::Unknown};
  {
    InFlight guard(*this, cli.get());
    if (!guard.registered()) {
      out.error = what + ": client stopped";
      return out;
    }
    tlsVerifyError = X509_V_OK;
    ERR_clear_error();
    const std::string url = pathPrefix_ + path;
    res = method == "GET"      ? cli->Get(url)
          : method == "DELETE" ? cli->Delete(url)
          : method == "PATCH"  ? cli->Patch(url, body->dump(), "application/merge-patch+json")
          : method == "PUT"    ? cli->Put(url, body->dump(), "application/json")
                               : cli->Post(url, body->dump(), "application/json");
  }
  if (!res && reused && !stopped_) return send(path, body, verb, raw);  // a fresh connection
  if (!res) {
    out.error = what + ": " + transportError(res.error());
    return out;
  }
  if (pooled) keepIdle(std::move(cli));
  out.status = res->status;
  if (raw && out.status >= 200 && out.status < 300) {
    if (res->body.empty()) out.error = what + ": the answer is not JSON";
    out.text = std::move(res->body);
    return out;
  }
  out.body = json::parse(res->body, nullptr, false);
  if (out.body.is_discarded()) out.body = nullptr;
  if (out.status == 401) tokenRejected();
  if (out.status < 200 || out.status >= 300) {
    out.error = what + ": " + httpError(out.status, out.body, res->body);
  } else if (out.body.is_null()) {
    out.error = what + ": the answer is not JSON";
  }
  return out;
}

Result<json> KubeClient::get(const std::string& path) {
  KubeResponse r = request(path);
  if (!r.ok()) return makeError(r.error);
  return std::move(r.body);
}

KubeResponse KubeClient::list(const std::string& apiPath, int64_t limit,
                              const std::string& continueToken, bool raw) {
  std::string path = apiPath;
  char sep = apiPath.find('?') == std::string::npos ? '?' : '&';
  if (limit > 0) {
    path += sep + std::string("limit=") + std::to_string(limit);
    sep = '&';
  }
  if (!continueToken.empty()) path += sep + std::string("continue=") + urlEncode(continueToken);
  return send(path, nullptr, "GET", raw);
}

WatchResult KubeClient::watch(const std::string& apiPath, const std::string& resourceVersion,
                              int timeoutSeconds, const WatchEventHandler& onEvent) {
  WatchResult result;
  std::string path = apiPath + (apiPath.find('?') == std::string::npos ? "?" : "&") + "watch=1";
  if (!resourceVersion.empty()) path += "&resourceVersion=" + urlEncode(resourceVersion);
  path += "&allowWatchBookmarks=true";
  if (timeoutSeconds > 0) path += "&timeoutSeconds=" + std::to_string(timeoutSeconds);
  if (stopped_) {
    result.outcome = WatchOutcome::kStopped;
    result.message = "client stopped";
    return result;
  }
  auto cli = makeClient(std::chrono::seconds(std::max(timeoutSeconds, 0)) + kWatchReadSlack);
  if (!cli) {
    result.message = describe(path) + ": cannot set up TLS: " + lastOpensslError();
    return result;
  }
  InFlight guard(*this, cli.get());
  if (!guard.registered()) {
    result.outcome = WatchOutcome::kStopped;
    result.message = "client stopped";
    return result;
  }

  WatchStreamParser parser(onEvent, result);
  std::string errorBody;
  auto onResponse = [&](const httplib::Response& response) {
    result.httpStatus = response.status;
    return true;
  };
  auto onData = [&](const char* data, size_t size) {
    if (stopped_) return false;
    if (result.httpStatus != 200) {
      if (errorBody.size() < kMaxErrorBody) errorBody.append(data, size);
      return true;
    }
    return parser.feed(data, size);
  };
  tlsVerifyError = X509_V_OK;
  ERR_clear_error();
  auto res = cli->Get(pathPrefix_ + path, onResponse, onData);

  if (stopped_) {
    result.outcome = WatchOutcome::kStopped;
    result.message = "client stopped";
    return result;
  }
  if (parser.ended()) {
    if (!result.message.empty() && result.outcome == WatchOutcome::kError) {
      result.message = describe(path) + ": " + result.message;
    }
    return result;
  }
  if (!res) {
    if (result.httpStatus == 200) {
      result.outcome = WatchOutcome::kDropped;
      result.message = "watch stream broke: " + transportError(res.error());
    } else {
      result.outcome = WatchOutcome::kError;
      result.message = describe(path) + ": " + transportError(res.error());
    }
    return result;
  }
  result.httpStatus = res->status;
  if (res->status == 200) {
    if (!parser.finish() && parser.ended()) {
      if (result.outcome == WatchOutcome::kError) {
        result.message = describe(path) + ": " + result.message;
      }
      return result;
    }
    result.outcome = WatchOutcome::kEnded;
    result.message = "server closed the watch";
    return result;
  }
  if (errorBody.empty()) errorBody = res->body;
  json body = json::parse(errorBody, nullptr, false);
  if (body.is_discarded()) body = nullptr;
  if (res->status == 401) tokenRejected();
  result.outcome = res->status == 410 ? WatchOutcome::kGoneHttp : WatchOutcome::kError;
  result.message = describe(path) + ": " + httpError(res->status, body, errorBody);
  return result;
}

std::unique_ptr<httplib::SSLClient> KubeClient::idleClient() {
  std::lock_guard lock(idleMu_);
  if (idle_.empty()) return nullptr;
  auto cli = std::move(idle_.back());
  idle_.pop_back();
  return cli;
}

void KubeClient::keepIdle(std::unique_ptr<httplib::SSLClient> cli) {
  std::lock_guard lock(idleMu_);
  if (!stopped_ && idle_.size() < kMaxIdleConnections) idle_.push_back(std::move(cli));
}

void KubeClient::stop() {
  stopped_ = true;
  {
    std::lock_guard lock(idleMu_);
    idle_.clear();  // closes the kept connections
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    {
      std::lock_guard lock(inflightMu_);
      if (inflight_.empty()) return;
      // Closes the socket under any blocked read. A request still connecting is caught by the
      // next round.
      for (auto* client : inflight_) client->stop();
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      log::warn("kube client: requests still in flight 2 s after stop()");
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace stateguard
