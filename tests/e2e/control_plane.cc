#include "tests/e2e/control_plane.h"

#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include "tests/support/tls_material.h"

namespace stateguard::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

/// shared/tools' folder for a minor version.
std::string toolsSubdir(const std::string& minor) { return minor == "1.26" ? "k8s" : "k8s-1.34"; }

/// "<size> <mtime>" of a file, or "" when it cannot be read.
std::string fileStamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "";
  return std::to_string(st.st_size) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec) + " " + path;
}

/// Unpacks `xz` into `target` unless the stamp beside it says it came from this very file.
std::string unpack(const std::string& xz, const std::string& target) {
  const std::string stamp = fileStamp(xz);
  const std::string stampPath = target + ".stamp";
  if (::access(target.c_str(), X_OK) == 0 && readText(stampPath) == stamp) return "";
  const std::string tmp = target + ".tmp" + std::to_string(::getpid());
  CommandResult r =
      runCommand("/bin/sh", {"-c", "xz -dc \"$0\" > \"$1\"", xz, tmp}, "", milliseconds(300000));
  if (r.exitCode != 0) {
    std::error_code ec;
    fs::remove(tmp, ec);
    return "xz -dc " + xz + " failed: " + r.err;
  }
  ::chmod(tmp.c_str(), 0755);
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) return "cannot move " + tmp + " to " + target + ": " + ec.message();
  writeText(stampPath, stamp);
  return "";
}

/// "v1.26.5" from "Kubernetes v1.26.5".
std::string binaryVersion(const std::string& binary) {
  CommandResult r = runCommand(binary, {"--version"}, "", milliseconds(30000));
  std::string out = r.out + r.err;
  size_t v = out.find(" v");
  if (r.exitCode != 0 || v == std::string::npos) return "";
  size_t end = out.find_first_of(" \n", v + 1);
  return out.substr(v + 1, end == std::string::npos ? std::string::npos : end - v - 1);
}

std::string randomToken() {
  std::random_device rd;
  std::ostringstream out;
  for (int i = 0; i < 4; ++i) out << std::hex << rd();
  return out.str();
}

std::unique_ptr<httplib::SSLClient> apiClient(int port, const std::string& ca,
                                              const std::string& token) {
  auto c = std::make_unique<httplib::SSLClient>("127.0.0.1", port);
  c->set_ca_cert_path(ca.c_str());
  c->enable_server_certificate_verification(true);
  c->set_connection_timeout(2);
  c->set_read_timeout(10);
  c->set_bearer_token_auth(token);
  return c;
}

}  // namespace

std::string findKubeBinaries(const std::string& minor, const std::string& cacheRoot,
                             KubeBinaries* out) {
  const std::string sub = toolsSubdir(minor);
  std::vector<std::string> candidates;
  if (std::string d = env("STATEGUARD_K8S_BIN"); !d.empty()) {
    candidates.push_back(d);
    candidates.push_back(d + "/" + sub);
  }
  if (std::string d = env("STATEGUARD_SHARED_TOOLS"); !d.empty())
    candidates.push_back(d + "/" + sub);
  candidates.push_back(
      fs::weakly_canonical(sourcePath("../shared/tools/" + sub)).lexically_normal().string());

  std::vector<std::string> looked;
  for (const auto& dir : candidates) {
    const std::string api = dir + "/kube-apiserver.xz";
    const std::string kcm = dir + "/kube-controller-manager.xz";
    if (::access(api.c_str(), R_OK) != 0 || ::access(kcm.c_str(), R_OK) != 0) {
      looked.push_back(dir);
      continue;
    }
    // One cache folder per source folder, so a wrong-version candidate costs one unpack only.
    const std::string cache = cacheRoot + "/" + fs::path(dir).filename().string() + "-" +
                              std::to_string(std::hash<std::string>{}(dir) % 1000000007);
    std::error_code ec;
    fs::create_directories(cache, ec);
    KubeBinaries b;
    b.from = dir;
    b.apiserver = cache + "/kube-apiserver";
    b.controllerManager = cache + "/kube-controller-manager";
    if (std::string e = unpack(api, b.apiserver); !e.empty()) return e;
    b.version = binaryVersion(b.apiserver);
    if (b.version.rfind("v" + minor + ".", 0) != 0) {
      looked.push_back(dir + " (holds " + (b.version.empty() ? "an unknown version" : b.version) +
                       ")");
      continue;
    }
    if (std::string e = unpack(kcm, b.controllerManager); !e.empty()) return e;
    *out = b;
    return "";
  }
  std::string where;
  for (const auto& l : looked) where += (where.empty() ? "" : ", ") + l;
  return "no kube-apiserver.xz/kube-controller-manager.xz of Kubernetes " + minor +
         " (set STATEGUARD_K8S_BIN or STATEGUARD_SHARED_TOOLS; looked in " + where + ")";
}

ControlPlane::ControlPlane(std::string minor) : minor_(std::move(minor)) {}

ControlPlane::~ControlPlane() { stop(); }

std::string ControlPlane::missing() {
  std::vector<std::string> gaps;
  etcdBin_ = findProgram("etcd");
  if (etcdBin_.empty()) {
    gaps.push_back(
        "etcd is not installed (Debian package etcd-server; scripts/install-deps.sh installs it)");
  }
  kubectl_ = findProgram("kubectl");
  if (kubectl_.empty()) gaps.push_back("kubectl is not on PATH");
  for (const char* p : {"openssl", "xz"}) {
    if (findProgram(p).empty()) gaps.push_back(std::string(p) + " is not installed");
  }
  if (gaps.empty()) {
    const std::string cacheRoot = std::string(STATEGUARD_BIN_DIR) + "/../e2e-k8s";
    if (std::string e = findKubeBinaries(minor_, cacheRoot, &binaries_); !e.empty()) {
      gaps.push_back(e);
    }
  }
  std::string out;
  for (const auto& g : gaps) out += (out.empty() ? "" : "; ") + g;
  return out;
}

bool ControlPlane::makePki(std::string* error) {
  auto tls = makeTlsMaterial(workDir_ + "/pki", {"127.0.0.1", "localhost"});
  if (!tls.ok()) {
    *error = "serving certificate: " + tls.error();
    return false;
  }
  caPath_ = tls->caCertPath;
  // The front-proxy CA only quiets kube-controller-manager's "missing
  // requestheader-client-ca-file" (nothing here uses an aggregated API).
  auto proxy = makeTlsMaterial(workDir_ + "/front-proxy", {"127.0.0.1"});
  if (!proxy.ok()) {
    *error = "front-proxy CA: " + proxy.error();
    return false;
  }
  auto client = makeClientCertificate(*proxy, "front-proxy-client", "front-proxy-client");
  if (!client.ok()) {
    *error = "front-proxy client: " + client.error();
    return false;
  }
  // The apiserver's client certificate for admission webhooks: an AdmissionConfiguration whose
  // kubeConfigFile presents it to every webhook ("*"), as users set it up for --client-ca.
  auto webhookClient = makeClientCertificate(*tls, "webhook-client", kWebhookClientName);
  if (!webhookClient.ok()) {
    *error = "webhook client certificate: " + webhookClient.error();
    return false;
  }
  const std::string webhookKubeconfig = workDir_ + "/pki/webhook-client.kubeconfig";
  writeText(webhookKubeconfig,
            "apiVersion: v1\nkind: Config\nusers:\n- name: \"*\"\n  user:\n"
            "    client-certificate: " +
                webhookClient->certPath + "\n    client-key: " + webhookClient->keyPath + "\n");
  admissionConfig_ = workDir_ + "/pki/admission.yaml";
  std::string plugins;
  for (const char* plugin : {"ValidatingAdmissionWebhook", "MutatingAdmissionWebhook"}) {
    plugins += std::string("- name: ") + plugin +
               "\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n"
               "    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: " +
               webhookKubeconfig + "\n";
  }
  writeText(
      admissionConfig_,
      "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n" + plugins);
  CommandResult r =
      runCommand("/bin/sh", {"-c",
                             "openssl genrsa -out \"$0/sa.key\" 2048 && "
                             "openssl rsa -in \"$0/sa.key\" -pubout -out \"$0/sa.pub\"",
                             workDir_ + "/pki"});
  if (r.exitCode != 0) {
    *error = "service-account key pair: " + r.err;
    return false;
  }
  // Static tokens: token,user,uid,"group1,group2".
  std::string csv;
  const std::vector<std::pair<std::string, std::string>> users = {
      {"admin", "system:masters"},
      {"system:kube-controller-manager", ""},
      {"alice", "stateguard:break-glass"},
      {"bob", ""}};
  for (const auto& [user, groups] : users) {
    tokens_[user] = randomToken();
    csv += tokens_[user] + "," + user + ",uid-" + user;
    if (!groups.empty()) csv += ",\"" + groups + "\"";
    csv += "\n";
  }
  tokenFile_ = workDir_ + "/pki/tokens.csv";
  writeText(tokenFile_, csv);
  return true;
}

bool ControlPlane::startEtcd(std::string* error) {
  etcdPort_ = freeLocalPort();
  etcdPeerPort_ = freeLocalPort();
  const std::string client = "http://127.0.0.1:" + std::to_string(etcdPort_);
  const std::string peer = "http://127.0.0.1:" + std::to_string(etcdPeerPort_);
  etcd_ = std::make_unique<Daemon>(
      "etcd", etcdBin_,
      std::vector<std::string>{"--name", "default", "--data-dir", etcdDataDir_,
                               "--listen-client-urls", client, "--advertise-client-urls", client,
                               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                               "--initial-cluster", "default=" + peer, "--log-level", "warn"},
      workDir_ + "/etcd.log");
  if (!etcd_->start(error)) return false;
  httplib::Client c("127.0.0.1", etcdPort_);
  c.set_connection_timeout(1);
  const bool healthy = pollUntil(
      [&] {
        auto res = c.Get("/health");
        return res && res->status == 200 && res->body.find("true") != std::string::npos;
      },
      seconds(30));
  if (!healthy) *error = "etcd did not become healthy in 30 s: " + etcd_->tail();
  return healthy;
}

bool ControlPlane::waitApiServerReady(std::chrono::milliseconds timeout, std::string* error) {
  auto c = apiClient(apiPort_, caPath_, tokens_.at("admin"));
  const bool ready = pollUntil(
      [&] {
        if (!apiServer_->running()) return true;
        auto res = c->Get("/readyz");
        return res && res->status == 200;
      },
      timeout);
  if (!ready || !apiServer_->running()) {
    *error = "kube-apiserver " + version() + " did not become ready: " + apiServer_->tail();
    return false;
  }
  return true;
}

bool ControlPlane::startControllerManager(std::string* error) {
  std::vector<std::string> args = {
      "--kubeconfig",
      writeKubeconfig("kube-controller-manager", tokens_.at("system:kube-controller-manager")),
      // Each controller as its own service account (system:serviceaccount:kube-system:<name>),
      // as in kubeadm clusters: the identities the webhook sees.
      "--use-service-account-credentials", "--service-account-private-key-file",
      workDir_ + "/pki/sa.key", "--root-ca-file", caPath_, "--controllers=*",
      "--leader-elect=false", "--secure-port=0",
      // PV/PVC sync every 2 s instead of 15 s: retries after a refusal come sooner.
      "--pvclaimbinder-sync-period=2s"};
  if (minor_ == "1.26") args.push_back("--feature-gates=StatefulSetAutoDeletePVC=true");
  controllerManager_ =
      std::make_unique<Daemon>("kube-controller-manager", binaries_.controllerManager,
                               std::move(args), workDir_ + "/kube-controller-manager.log");
  if (!controllerManager_->start(error)) return false;
  // The service-account controller runs once the controllers have started.
  const bool up = pollUntil(
      [&] {
        return !controllerManager_->running() ||
               get("/api/v1/namespaces/default/serviceaccounts/default").first == 200;
      },
      seconds(60));
  if (!up || !controllerManager_->running()) {
    *error = "kube-controller-manager did not start its controllers: " + controllerManager_->tail();
    return false;
  }
  return true;
}

bool ControlPlane::start(std::string* error) {
  if (binaries_.apiserver.empty()) {
    if (std::string m = missing(); !m.empty()) {
      *error = m;
      return false;
    }
  }
  workDir_ = makeTempDir("sg-e2e-" + minor_);
  // hostPath's deleter only removes paths matching /tmp/.+, whatever TMPDIR says.
  std::string vol = "/tmp/sg-e2e-volumes-XXXXXX";
  if (::mkdtemp(vol.data()) == nullptr) {
    *error = "cannot create a volume folder below /tmp";
    return false;
  }
  volumeDir_ = vol;
  // etcd fsyncs every write: on tmpfs the control plane does not wait for the disk.
  std::error_code ec;
  etcdDataDir_ = fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0
                     ? "/dev/shm/sg-e2e-etcd-" + std::to_string(::getpid())
                     : workDir_ + "/etcd";
  if (!makePki(error) || !startEtcd(error)) return false;

  apiPort_ = freeLocalPort();
  std::vector<std::string> args = {
      "--etcd-servers=http://127.0.0.1:" + std::to_string(etcdPort_), "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1", "--secure-port=" + std::to_string(apiPort_),
      "--tls-cert-file=" + workDir_ + "/pki/server.crt",
      "--tls-private-key-file=" + workDir_ + "/pki/server.key", "--client-ca-file=" + caPath_,
      "--admission-control-config-file=" + admissionConfig_, "--token-auth-file=" + tokenFile_,
      "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
      "--service-account-key-file=" + workDir_ + "/pki/sa.pub",
      "--service-account-signing-key-file=" + workDir_ + "/pki/sa.key",
      "--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=Node,RBAC",
      "--cert-dir=" + workDir_ + "/apiserver-certs",
      // 127.0.0.1 cannot be the kubernetes Service's endpoint: without this, an error every 10 s.
      "--endpoint-reconciler-type=none",
      // CSI node plugins run privileged (Longhorn's, Ceph's, stateguard-csi); every cluster that
      // runs them allows it, as kubeadm and k3s do by default.
      "--allow-privileged=true",
      "--requestheader-client-ca-file=" + workDir_ + "/front-proxy/ca.crt",
      "--requestheader-allowed-names=front-proxy-client",
      "--requestheader-username-headers=X-Remote-User",
      "--requestheader-group-headers=X-Remote-Group",
      "--requestheader-extra-headers-prefix=X-Remote-Extra-",
      "--proxy-client-cert-file=" + workDir_ + "/front-proxy/front-proxy-client.crt",
      "--proxy-client-key-file=" + workDir_ + "/front-proxy/front-proxy-client.key"};
  // persistentVolumeClaimRetentionPolicy is alpha in 1.26 (on by default since 1.32).
  if (minor_ == "1.26") args.push_back("--feature-gates=StatefulSetAutoDeletePVC=true");
  if (minor_ != "1.26") args.push_back("--shutdown-watch-termination-grace-period=2s");
  apiServer_ = std::make_unique<Daemon>("kube-apiserver", binaries_.apiserver, std::move(args),
                                        workDir_ + "/kube-apiserver.log");
  for (const auto& [user, token] : tokens_) {
    if (user.rfind("system:", 0) != 0) writeKubeconfig(user, token);
  }
  if (!apiServer_->start(error) || !waitApiServerReady(seconds(90), error)) return false;
  return startControllerManager(error);
}

void ControlPlane::stop() {
  if (controllerManager_) controllerManager_->stop(milliseconds(5000));
  if (apiServer_) apiServer_->stop(milliseconds(10000));
  if (etcd_) etcd_->stop(milliseconds(5000));
  std::error_code ec;
  if (!etcdDataDir_.empty()) fs::remove_all(etcdDataDir_, ec);
  if (!volumeDir_.empty()) fs::remove_all(volumeDir_, ec);
  if (!workDir_.empty() && env("STATEGUARD_E2E_KEEP").empty()) fs::remove_all(workDir_, ec);
}

std::string ControlPlane::stopApiServer() {
  // A graceful stop waits for open watches to end; kill it when they do not within 5 s (a crash
  // is a restart too).
  if (apiServer_->stop(seconds(5)) == -1) {
    return "kube-apiserver did not exit within 5 s of SIGTERM and was killed";
  }
  return "";
}

bool ControlPlane::startApiServer(std::string* error) {
  return apiServer_->start(error) && waitApiServerReady(seconds(90), error);
}

int64_t ControlPlane::compactEtcd(std::string* error) {
  httplib::Client c("127.0.0.1", etcdPort_);
  c.set_read_timeout(30);
  // The revision comes with any read: a range over the key "\0" (base64 "AA==").
  auto res = c.Post("/v3/kv/range", R"({"key":"AA==","limit":1})", "application/json");
  if (!res || res->status != 200) {
    *error = "etcd range failed: " + (res ? res->body : httplib::to_string(res.error()));
    return -1;
  }
  const json body = json::parse(res->body, nullptr, false);
  const json& rev = body.is_object() ? body["header"]["revision"] : json();
  int64_t revision = -1;
  if (rev.is_string()) revision = std::stoll(rev.get<std::string>());
  if (rev.is_number_integer()) revision = rev.get<int64_t>();
  if (revision <= 0) {
    *error = "no revision in etcd's answer: " + res->body;
    return -1;
  }
  const json request = {{"revision", std::to_string(revision)}, {"physical", true}};
  res = c.Post("/v3/kv/compaction", request.dump(), "application/json");
  if (!res || res->status != 200) {
    *error = "etcd compaction failed: " + (res ? res->body : httplib::to_string(res.error()));
    return -1;
  }
  return revision;
}

std::string ControlPlane::kubeconfig(const std::string& user) const {
  return workDir_ + "/kubeconfig-" + user;
}

std::string ControlPlane::writeKubeconfig(const std::string& name, const std::string& token) const {
  const json config = {
      {"apiVersion", "v1"},
      {"kind", "Config"},
      {"clusters",
       {{{"name", "e2e"},
         {"cluster", {{"server", server()}, {"certificate-authority", caPath_}}}}}},
      {"users", {{{"name", name}, {"user", {{"token", token}}}}}},
      {"contexts", {{{"name", "e2e"}, {"context", {{"cluster", "e2e"}, {"user", name}}}}}},
      {"current-context", "e2e"}};
  const std::string path = kubeconfig(name);
  writeText(path, config.dump(2));
  ::chmod(path.c_str(), 0600);
  return path;
}

CommandResult ControlPlane::kubectl(const std::string& user, const std::vector<std::string>& args,
                                    const std::string& stdinText,
                                    std::chrono::milliseconds timeout) const {
  std::vector<std::string> all = {"--kubeconfig", kubeconfig(user), "--cache-dir",
                                  workDir_ + "/kubectl-cache"};
  all.insert(all.end(), args.begin(), args.end());
  return runCommand(kubectl_, all, stdinText, timeout);
}

std::pair<int, std::string> ControlPlane::get(const std::string& path) const {
  auto c = apiClient(apiPort_, caPath_, tokens_.at("admin"));
  auto res = c->Get(path.c_str());
  if (!res) return {-1, httplib::to_string(res.error())};
  return {res->status, res->body};
}

json ControlPlane::getObject(const std::string& path) const {
  auto [status, body] = get(path);
  if (status != 200) return json();
  return json::parse(body, nullptr, false);
}

}  // namespace stateguard::testing
