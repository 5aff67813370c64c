// End to end: stateguard installed from its shipped manifests into a real control plane (etcd,
// kube-apiserver, kube-controller-manager; tests/e2e/control_plane.h), the real
// stateguard-webhook judging what kube-apiserver sends, and the real kubectl acting as the
// users of the seed incidents:
//
//   admin  system:masters          bob    `edit` in the test namespaces, and PersistentVolumes
//   alice  stateguard:break-glass  the controllers, each as system:serviceaccount:kube-system:<c>
//
// One control plane for the whole binary (starting one takes ~15 s); STATEGUARD_E2E_K8S chooses
// its version ("1.26", the oldest a user may still run, without matchConditions; "1.34", what
// most run now). ctest runs the binary once per version (tests/CMakeLists.txt). When a program
// or binary is missing, one line says what and every test is skipped.
//
// Each test checks the verdict (kubectl's exit code and message), that what was allowed really
// completes (the controllers finishing it are not refused), and the webhook's audit line.
// These tests state the intended behaviour (docs/rules.md, "Who is judged"), including where
// the webhook does not do it yet.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "core/json_yaml.h"
#include "core/k8s.h"
#include "core/kube_client.h"
#include "tests/e2e/control_plane.h"
#include "tests/support/helm_render.h"
#include "tests/support/process.h"
#include "tests/support/test_apiserver.h"
#include "tests/support/webhook_process.h"

namespace stateguard::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

const std::string kNs = "stateguard-system";
const std::string kAllow = "stateguard.io/allow";
const std::string kControllerPrefix = "system:serviceaccount:kube-system:";

// ---------------------------------------------------------------------------------------------
// The cluster shared by every test

struct Cluster {
  std::string minor;
  std::unique_ptr<ControlPlane> cp;
  std::string skip;         ///< non-empty: something needed is missing, every test skips
  std::string failure;      ///< non-empty: the cluster could not be set up, every test fails
  std::string installDir;   ///< the kustomize folder installed
  std::string installNote;  ///< why that one (before 1.28: the pre-1.28 component)
  DevCerts certs;
  std::string caBundle;  ///< base64 of the webhook's CA
  int webhookPort = 0;
  std::string webhookDir, webhookKubeconfig;
  std::string csiGuardPath;  ///< the CSI injection component's csi-guard.yaml, checked every 2 s
  std::unique_ptr<WebhookProcess> webhook;
  Clock::time_point started;
  double setupSeconds = 0;
};

Cluster* g = nullptr;

/// An RFC 3339 UTC time `ahead` from now (break-glass `until=`).
std::string rfc3339In(std::chrono::seconds ahead) {
  const std::time_t t =
      std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() + ahead);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string breakGlass(const std::string& rule) {
  return rule + "; until=" + rfc3339In(std::chrono::hours(1)) + "; reason=e2e INC-1 " + rule;
}

std::string listOf(const std::vector<json>& items) {
  return json{{"apiVersion", "v1"}, {"kind", "List"}, {"items", items}}.dump();
}

/// `kubectl kustomize DIR`, parsed.
Result<std::vector<json>> kustomize(const std::string& dir) {
  CommandResult r = g->cp->kubectl("admin", {"kustomize", dir});
  if (r.exitCode != 0) return makeError("kubectl kustomize " + dir + ": " + r.err);
  auto objs = parseObjects(r.out, dir);
  if (!objs.ok()) return makeError(objs.error());
  std::vector<json> out;
  for (auto& o : *objs) out.push_back(std::move(o.object));
  return out;
}

/// Every webhook entry sent to https://127.0.0.1:PORT/validate with the test CA instead of the
/// in-cluster Service (nothing else changes: no kubelet runs the Deployment's pods).
void pointWebhooksHere(std::vector<json>& objects) {
  for (auto& o : objects) {
    if (o.value("kind", "") == "MutatingWebhookConfiguration") {
      for (auto& w : o["webhooks"]) {
        w["clientConfig"] = {
            {"url", "https://127.0.0.1:" + std::to_string(g->webhookPort) + "/mutate-csi"},
            {"caBundle", g->caBundle}};
      }
    }
    if (o.value("kind", "") != "ValidatingWebhookConfiguration") continue;
    for (auto& w : o["webhooks"]) {
      w["clientConfig"] = {
          {"url", "https://127.0.0.1:" + std::to_string(g->webhookPort) + "/validate"},
          {"caBundle", g->caBundle}};
    }
  }
}

/// A kustomization in `dir` (made here) of `overlay` plus manifests/components/pre-1.28, what a
/// user of a cluster before 1.28 writes; returns `dir`.
std::string withPre128Component(const std::string& overlay, const std::string& dir) {
  fs::create_directories(dir);
  const std::string component =
      fs::path(overlay).parent_path().filename() == "overlays"
          ? fs::path(overlay).parent_path().parent_path().string() + "/components/pre-1.28"
          : fs::path(overlay).parent_path().string() + "/components/pre-1.28";
  writeText(dir + "/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [" +
                fs::relative(overlay, dir).string() + "]\ncomponents: [" +
                fs::relative(component, dir).string() + "]\n");
  return dir;
}

/// A kustomization in `dir` (made here) of `install` plus manifests/components/csi-injection, as
/// a user who wants the CSI guard injected writes it; returns `dir`.
std::string withCsiInjection(const std::string& install, const std::string& dir) {
  fs::create_directories(dir);
  writeText(dir + "/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [" +
                fs::relative(install, dir).string() + "]\ncomponents: [" +
                fs::relative(sourcePath("manifests/components/csi-injection"), dir).string() +
                "]\n");
  return dir;
}

/// The install as applied: the chosen kustomize folder pointed at the local webhook.
Result<std::vector<json>> renderInstall() {
  auto objs = kustomize(g->installDir);
  if (!objs.ok()) return objs;
  pointWebhooksHere(objs.value());
  return objs;
}

bool webhookReady() {
  if (!g->webhook || !g->webhook->started()) return false;
  return g->webhook->get("/readyz").first == 200;
}

bool startWebhook(std::string* error) {
  g->webhook = std::make_unique<WebhookProcess>(
      g->webhookDir, g->certs, std::vector<std::string>{"--kubeconfig", g->webhookKubeconfig},
      std::vector<std::string>{"--listen", "127.0.0.1:" + std::to_string(g->webhookPort),
                               "--policy", sourcePath("manifests/base/policy.yaml"),
                               // Only kube-apiserver may send reviews (its client certificate).
                               "--client-ca", g->cp->caPath(), "--client-cert-names",
                               ControlPlane::kWebhookClientName, "--csi-guard", g->csiGuardPath,
                               // The background scan soon after each change, for the tests.
                               "--scan-after-change", "1s"});
  if (!g->webhook->started()) {
    *error = "stateguard-webhook did not start: " + g->webhook->process().stderrText();
    return false;
  }
  if (!pollUntil(webhookReady, seconds(60))) {
    *error = "stateguard-webhook not ready (cache not synced) after 60 s: " +
             g->webhook->process().stderrText();
    return false;
  }
  return true;
}

void stopWebhook() {
  if (g->webhook) g->webhook->process().stop(milliseconds(5000));
  g->webhook.reset();
}

/// Installs stateguard as a user would, and starts the webhook with the shipped RBAC's identity.
bool installStateguard(std::string* error) {
  ControlPlane& cp = *g->cp;
  // Users of the suite: alice administers (she is the break-glass operator), bob manages
  // PersistentVolumes and gets `edit` per namespace (makeNamespace).
  const std::string rbac = R"([
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "e2e-alice-cluster-admin"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "cluster-admin"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "e2e-pv-operator"},
     "rules": [{"apiGroups": [""], "resources": ["persistentvolumes"],
                "verbs": ["get", "list", "watch", "update", "patch", "delete"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "e2e-bob-pv-operator"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "e2e-pv-operator"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]}])";
  CommandResult r = cp.kubectl("admin", {"apply", "-f", "-"}, listOf(json::parse(rbac)));
  if (r.exitCode != 0) {
    *error = "RBAC for the test users: " + r.err;
    return false;
  }

  // 1.26 has no matchConditions: the base with the manifests' component for older clusters, as
  // docs/operations.md tells such users to install it.
  g->installDir = sourcePath("manifests/base");
  if (g->minor == "1.26") {
    g->installDir = withPre128Component(sourcePath("manifests/base"), cp.workDir() + "/install");
    g->installNote = "manifests/base with manifests/components/pre-1.28";
  }
  // With the CSI guard injection (its own MutatingWebhookConfiguration, DaemonSets only in the
  // drivers' namespaces): the webhook runs with it in every test.
  g->installDir = withCsiInjection(g->installDir, cp.workDir() + "/install-csi");
  g->installNote +=
      std::string(g->installNote.empty() ? "" : "; ") + "with manifests/components/csi-injection";

  g->webhookDir = cp.workDir() + "/webhook";
  fs::create_directories(g->webhookDir);
  try {
    g->certs = makeDevCerts(g->webhookDir + "/certs");
  } catch (const std::exception& e) {
    *error = e.what();
    return false;
  }
  g->caBundle = base64Encode(readText(g->certs.caCert));
  // The shipped csi-guard.yaml, checked every 2 s instead of 30 so the tests need not wait.
  {
    std::string guard = readText(sourcePath("manifests/components/csi-injection/csi-guard.yaml"));
    const std::string interval = "checkIntervalSeconds: 30";
    if (guard.find(interval) == std::string::npos) {
      *error = "csi-guard.yaml has no \"" + interval + "\" line to shorten";
      return false;
    }
    guard.replace(guard.find(interval), interval.size(), "checkIntervalSeconds: 2");
    g->csiGuardPath = g->webhookDir + "/csi-guard.yaml";
    writeText(g->csiGuardPath, guard);
  }
  g->webhookPort = freeLocalPort();

  auto objs = renderInstall();
  if (!objs.ok()) {
    *error = objs.error();
    return false;
  }
  r = cp.kubectl("admin", {"apply", "-f", "-"}, listOf(*objs));
  if (r.exitCode != 0) {
    *error = "kubectl apply of " + g->installDir + ": " + r.err;
    return false;
  }
  // The webhook lists and watches as the shipped ServiceAccount, bound to the shipped
  // ClusterRole by the shipped ClusterRoleBinding: nothing else grants it anything.
  r = cp.kubectl("admin",
                 {"create", "token", "stateguard-webhook", "-n", kNs, "--duration", "24h"});
  if (r.exitCode != 0) {
    *error = "kubectl create token stateguard-webhook: " + r.err;
    return false;
  }
  std::string token = r.out;
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  g->webhookKubeconfig = cp.writeKubeconfig("stateguard-webhook", token);
  if (!startWebhook(error)) return false;

  // kube-apiserver picks the configuration up from its own watch: wait until a request reaches
  // the webhook (a break-glass annotation by admin, who is not in the group, is refused).
  json ns = {{"apiVersion", "v1"},
             {"kind", "Namespace"},
             {"metadata", {{"name", "e2e-probe-2"}, {"annotations", {{kAllow, "x"}}}}}};
  const bool wired = pollUntil(
      [&] {
        CommandResult t = cp.kubectl("admin", {"create", "--dry-run=server", "-f", "-"}, ns.dump());
        return t.exitCode != 0 && t.err.find("break-glass") != std::string::npos;
      },
      seconds(30));
  if (!wired) {
    *error = "kube-apiserver does not call the webhook 30 s after the install";
    return false;
  }
  return true;
}

class ClusterEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    g = new Cluster;
    const char* v = std::getenv("STATEGUARD_E2E_K8S");
    g->minor = v != nullptr && *v != '\0' ? v : "1.34";
    g->cp = std::make_unique<ControlPlane>(g->minor);
    const auto t0 = Clock::now();
    g->skip = g->cp->missing();
    if (!g->skip.empty()) {
      std::cout << "stateguard e2e (Kubernetes " << g->minor << "): SKIPPED: " << g->skip
                << std::endl;
      GTEST_SKIP();
    }
    std::string error;
    if (!g->cp->start(&error) || !installStateguard(&error)) {
      g->failure = "setting up Kubernetes " + g->minor + " failed: " + error;
      std::cout << "stateguard e2e: " << g->failure << std::endl;
      return;
    }
    g->setupSeconds = std::chrono::duration<double>(Clock::now() - t0).count();
    g->started = Clock::now();
    std::cout << "stateguard e2e: Kubernetes " << g->cp->version() << " in " << g->cp->workDir()
              << ", installed " << g->installDir << ", ready in " << g->setupSeconds << " s"
              << (g->installNote.empty() ? "" : "; NOTE: " + g->installNote) << std::endl;
  }

  void TearDown() override {
    if (g == nullptr) return;
    if (g->webhook && g->cp) {
      // Who the webhook saw: the identities the controllers used.
      std::set<std::string> users;
      for (const auto& rec : g->webhook->auditRecords()) {
        users.insert(rec.value("user", "") + " (" + rec.value("operation", "") + " " +
                     rec.value("kind", "") + ")");
      }
      std::cout << "stateguard e2e: identities in the webhook's audit log:\n";
      for (const auto& u : users) std::cout << "  " << u << "\n";
      std::cout << "stateguard e2e: Kubernetes " << g->minor << ": setup " << g->setupSeconds
                << " s, tests " << std::chrono::duration<double>(Clock::now() - g->started).count()
                << " s" << std::endl;
    }
    stopWebhook();
    if (g->cp) g->cp->stop();
    delete g;
    g = nullptr;
  }
};

// ---------------------------------------------------------------------------------------------
// Fixture: helpers for the tests

class E2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (g == nullptr) GTEST_SKIP() << "no cluster";
    if (!g->skip.empty()) GTEST_SKIP();
    if (!g->failure.empty()) FAIL() << g->failure;
    // A test that failed half-way may have left kube-apiserver stopped.
    if (!cp().apiServer().running()) {
      std::string error;
      ASSERT_TRUE(cp().startApiServer(&error)) << error;
    }
    // A test that failed half-way may have left the webhook stopped.
    if (!webhookReady()) {
      stopWebhook();
      std::string error;
      ASSERT_TRUE(startWebhook(&error)) << error;
    }
  }

  ControlPlane& cp() { return *g->cp; }

  CommandResult kubectl(const std::string& user, const std::vector<std::string>& args,
                        const std::string& stdinText = "") {
    return cp().kubectl(user, args, stdinText);
  }

  /// Creates `obj` as `user`; failure of the test when refused.
  bool create(const std::string& user, const json& obj) {
    CommandResult r = kubectl(user, {"create", "-f", "-"}, obj.dump());
    EXPECT_EQ(r.exitCode, 0) << user << " could not create " << obj.value("kind", "") << " "
                             << obj["metadata"].value("name", "") << ": " << r.err;
    return r.exitCode == 0;
  }

  /// A namespace where bob has `edit`.
  void makeNamespace(const std::string& name) {
    create("admin", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", name}}}});
    create(
        "admin",
        {{"apiVersion", "rbac.authorization.k8s.io/v1"},
         {"kind", "RoleBinding"},
         {"metadata", {{"name", "bob-edit"}, {"namespace", name}}},
         {"roleRef",
          {{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "ClusterRole"}, {"name", "edit"}}},
         {"subjects",
          {{{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "User"}, {"name", "bob"}}}}});
  }

  /// A hostPath folder (below /tmp, holding a file) for a PV.
  std::string volumeFolder(const std::string& pv) {
    const std::string dir = cp().volumeDir() + "/" + pv;
    fs::create_directories(dir);
    writeText(dir + "/data", "precious data of " + pv + "\n");
    return dir;
  }

  json hostPathPv(const std::string& name, const std::string& reclaim,
                  const std::string& storageClass, const std::string& claimNs = "",
                  const std::string& claimName = "") {
    json pv = {{"apiVersion", "v1"},
               {"kind", "PersistentVolume"},
               {"metadata", {{"name", name}}},
               {"spec",
                {{"capacity", {{"storage", "1Gi"}}},
                 {"accessModes", {"ReadWriteOnce"}},
                 {"persistentVolumeReclaimPolicy", reclaim},
                 {"storageClassName", storageClass},
                 {"hostPath", {{"path", volumeFolder(name)}}}}}};
    if (!claimName.empty()) {
      pv["spec"]["claimRef"] = {{"kind", "PersistentVolumeClaim"},
                                {"apiVersion", "v1"},
                                {"namespace", claimNs},
                                {"name", claimName}};
    }
    return pv;
  }

  json claim(const std::string& ns, const std::string& name, const std::string& storageClass,
             const std::string& volumeName = "") {
    json pvc = {{"apiVersion", "v1"},
                {"kind", "PersistentVolumeClaim"},
                {"metadata", {{"name", name}, {"namespace", ns}}},
                {"spec",
                 {{"accessModes", {"ReadWriteOnce"}},
                  {"storageClassName", storageClass},
                  {"resources", {{"requests", {{"storage", "1Gi"}}}}}}}};
    if (!volumeName.empty()) pvc["spec"]["volumeName"] = volumeName;
    return pvc;
  }

  static std::string pvPath(const std::string& name) { return "/api/v1/persistentvolumes/" + name; }
  static std::string pvcPath(const std::string& ns, const std::string& name) {
    return "/api/v1/namespaces/" + ns + "/persistentvolumeclaims/" + name;
  }

  /// The object at `path` for a failure message (without managedFields), or "(gone)".
  std::string show(const std::string& path) {
    json o = cp().getObject(path);
    if (!o.is_object()) return "(gone)";
    if (o.contains("metadata")) o["metadata"].erase("managedFields");
    return o.dump();
  }

  bool exists(const std::string& path) { return cp().get(path).first == 200; }

  bool waitPhase(const std::string& path, const std::string& phase, std::chrono::seconds timeout) {
    return pollUntil(
        [&] {
          json o = cp().getObject(path);
          return o.is_object() && k8s::str(o, "/status/phase") == phase;
        },
        timeout);
  }

  /// A claim `ns/name` bound to a new hostPath PV `pv` with the given reclaim policy.
  void boundClaim(const std::string& ns, const std::string& name, const std::string& pv,
                  const std::string& reclaim) {
    create("admin", hostPathPv(pv, reclaim, "e2e-static"));
    create("bob", claim(ns, name, "e2e-static", pv));
    ASSERT_TRUE(waitPhase(pvcPath(ns, name), "Bound", seconds(30)))
        << "claim " << ns << "/" << name << " not Bound to " << pv
        << " in 30 s: " << show(pvcPath(ns, name)) << "\nwebhook refusals of " << pv << ":"
        << denials("", pv);
  }

  std::vector<json> audit() {
    return g->webhook ? g->webhook->auditRecords() : std::vector<json>{};
  }

  /// The webhook's refusals about `ns/name` (ns "" for cluster-scoped objects) by users whose
  /// name starts with `userPrefix`, one line per distinct (user, operation, message) with a
  /// count; "" when there is none.
  std::string refusals(const std::string& ns, const std::string& name,
                       const std::string& userPrefix = "") {
    std::vector<std::pair<std::string, int>> lines;
    for (const auto& rec : audit()) {
      if (rec.value("verdict", "") != "deny" || rec.value("name", "") != name ||
          rec.value("namespace", "") != ns || rec.value("user", "").rfind(userPrefix, 0) != 0) {
        continue;
      }
      const std::string line = rec.value("user", "") + " " + rec.value("operation", "") + " " +
                               rec.value("kind", "") + ": " +
                               rec.value("message", "").substr(0, 300);
      auto it = std::find_if(lines.begin(), lines.end(), [&](auto& l) { return l.first == line; });
      if (it == lines.end()) {
        lines.emplace_back(line, 1);
      } else {
        ++it->second;
      }
    }
    std::string out;
    for (const auto& [line, n] : lines) out += "\n  " + std::to_string(n) + "x " + line;
    return out;
  }
  std::string denials(const std::string& ns, const std::string& name) {
    std::string out = refusals(ns, name);
    return out.empty() ? " (none)" : out;
  }
  /// The controllers' requests about `ns/name` that the webhook refused.
  std::string controllerDenials(const std::string& ns, const std::string& name) {
    return refusals(ns, name, kControllerPrefix);
  }

  /// Waits until `done` (at most `timeout`). Gives up early, 2 s later, once the webhook has
  /// refused a controller's request about `ns/name`: the controllers finishing what was allowed
  /// must not be refused, so the failure is known (and its message names the refusals).
  bool waitUnrefused(const std::function<bool()>& done, const std::string& ns,
                     const std::string& name, std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::optional<Clock::time_point> giveUp;
    while (Clock::now() < deadline && (!giveUp || Clock::now() < *giveUp)) {
      if (done()) return true;
      if (!giveUp && !controllerDenials(ns, name).empty()) giveUp = Clock::now() + seconds(2);
      std::this_thread::sleep_for(milliseconds(250));
    }
    return done();
  }
  bool waitGoneUnrefused(const std::string& path, const std::string& ns, const std::string& name,
                         std::chrono::seconds timeout) {
    return waitUnrefused([&] { return cp().get(path).first == 404; }, ns, name, timeout);
  }

  /// There is an audit line for this decision.
  void expectAudit(const std::string& user, const std::string& operation, const std::string& kind,
                   const std::string& ns, const std::string& name, const std::string& verdict,
                   bool dryRun = false) {
    for (const auto& rec : audit()) {
      if (rec.value("user", "") == user && rec.value("operation", "") == operation &&
          rec.value("kind", "") == kind && rec.value("namespace", "") == ns &&
          rec.value("name", "") == name && rec.value("verdict", "") == verdict &&
          rec.value("dryRun", false) == dryRun) {
        // The review came from kube-apiserver, verified by its client certificate.
        EXPECT_EQ(rec.value("caller", json()),
                  (json{{"name", ControlPlane::kWebhookClientName}, {"verified", true}}))
            << "the audit line does not show kube-apiserver's verified client certificate: "
            << rec.dump();
        return;
      }
    }
    ADD_FAILURE() << "no audit line {user " << user << ", " << operation << " " << kind << " " << ns
                  << "/" << name << ", verdict " << verdict << ", dryRun " << dryRun << "} in "
                  << g->webhook->auditLogPath();
  }

  static void expectRefused(const CommandResult& r, const std::vector<std::string>& needles,
                            const std::string& what) {
    EXPECT_NE(r.exitCode, 0) << what << " was allowed: " << r.out << r.err;
    for (const auto& n : needles) {
      EXPECT_NE(r.err.find(n), std::string::npos) << what << ": no \"" << n << "\" in: " << r.err;
    }
  }

  static void expectAllowed(const CommandResult& r, const std::string& what) {
    EXPECT_EQ(r.exitCode, 0) << what << " was refused: " << r.err;
  }
};

// ---------------------------------------------------------------------------------------------
// The shipped manifests against the real API server

/// Schema-less stand-ins for cert-manager's Issuer and Certificate, so the cert-manager overlay
/// and the chart's default render can be checked by a server without cert-manager.
json certManagerCrds() {
  json out = json::array();
  for (const auto& [kind, plural, singular] : std::vector<std::array<std::string, 3>>{
           {"Issuer", "issuers", "issuer"}, {"Certificate", "certificates", "certificate"}}) {
    out.push_back(
        {{"apiVersion", "apiextensions.k8s.io/v1"},
         {"kind", "CustomResourceDefinition"},
         {"metadata", {{"name", plural + ".cert-manager.io"}}},
         {"spec",
          {{"group", "cert-manager.io"},
           {"scope", "Namespaced"},
           {"names", {{"kind", kind}, {"plural", plural}, {"singular", singular}}},
           {"versions",
            {{{"name", "v1"},
              {"served", true},
              {"storage", true},
              {"schema",
               {{"openAPIV3Schema",
                 {{"type", "object"}, {"x-kubernetes-preserve-unknown-fields", true}}}}}}}}}}});
  }
  return out;
}

bool hasMatchConditions(const std::vector<json>& objects) {
  for (const auto& o : objects) {
    if (o.value("kind", "") != "ValidatingWebhookConfiguration") continue;
    for (const auto& w : o["webhooks"]) {
      if (w.contains("matchConditions")) return true;
    }
  }
  return false;
}

TEST_F(E2e, EveryOverlayAndChartRenderIsAcceptedByTheServer) {
  std::vector<json> crds;
  for (auto& c : certManagerCrds()) crds.push_back(c);
  CommandResult r = kubectl("admin", {"apply", "-f", "-"}, listOf(crds));
  ASSERT_EQ(r.exitCode, 0) << r.err;
  r = kubectl("admin", {"wait", "--for=condition=Established", "--timeout=30s",
                        "crd/issuers.cert-manager.io", "crd/certificates.cert-manager.io"});
  ASSERT_EQ(r.exitCode, 0) << r.err;

  // The self-signed overlay renders only after its setup.sh: in a copy of the tree.
  const std::string copy = makeTempDir("sg-e2e-manifests");
  fs::copy(sourcePath("manifests"), copy + "/manifests", fs::copy_options::recursive);
  fs::create_directories(copy + "/certs");
  fs::copy_file(sourcePath("certs/gen-certs.sh"), copy + "/certs/gen-certs.sh");

  std::vector<std::pair<std::string, std::vector<json>>> renders;
  std::vector<std::string> dirs = {copy + "/manifests/base"};
  for (const auto& entry : fs::directory_iterator(copy + "/manifests/overlays")) {
    if (entry.is_directory()) dirs.push_back(entry.path().string());
  }
  std::sort(dirs.begin(), dirs.end());
  for (const auto& dir : dirs) {
    const std::string name = fs::relative(dir, copy).string();
    if (fs::exists(dir + "/setup.sh")) {
      fs::remove_all(dir + "/certs");
      CommandResult s = runCommand("/bin/bash", {dir + "/setup.sh"}, "", milliseconds(60000));
      ASSERT_EQ(s.exitCode, 0) << name << "/setup.sh: " << s.err;
    }
    // Before 1.28 every overlay is installed with the pre-1.28 component (docs/operations.md).
    auto objs = kustomize(g->minor == "1.26" ? withPre128Component(dir, dir + "-pre-1.28") : dir);
    ASSERT_TRUE(objs.ok()) << objs.error();
    renders.emplace_back(g->minor == "1.26" ? name + " + components/pre-1.28" : name, *objs);
  }
  // The chart into a namespace of its own (`helm install -n sg-helm --create-namespace`), so
  // the dry run creates its objects instead of updating the installed ones.
  ASSERT_EQ(kubectl("admin", {"create", "namespace", "sg-helm"}).exitCode, 0);
  std::string renderError;
  if (helmRenderBinary(&renderError).empty()) {
    std::cout << "[ NOTE ] Helm chart not checked: " << renderError << std::endl;
  } else {
    const std::vector<std::pair<std::string, std::vector<std::string>>> values = {
        {"chart (defaults)", {}},
        {"chart (certificates.mode=provided)",
         {"--set", "certificates.mode=provided", "--set",
          "certificates.provided.caBundle=" + g->caBundle}},
        {"chart (csiGuard.enabled)", {"--set", "csiGuard.enabled=true"}}};
    for (const auto& [name, args] : values) {
      // As `helm install` does, the chart sees the cluster's version.
      std::vector<std::string> withVersion = args;
      withVersion.insert(withVersion.end(), {"--kube-version", cp().version()});
      CommandResult h = renderHelmChart(withVersion, "sg-helm");
      ASSERT_EQ(h.exitCode, 0) << name << ": " << h.err;
      auto objs = parseObjects(h.out, name);
      ASSERT_TRUE(objs.ok()) << objs.error();
      std::vector<json> list;
      for (auto& o : *objs) list.push_back(o.object);
      renders.emplace_back(name, list);
    }
  }

  for (const auto& [name, objects] : renders) {
    if (g->minor == "1.26") {
      EXPECT_FALSE(hasMatchConditions(objects))
          << name << " uses matchConditions, which Kubernetes 1.26 does not know";
    } else {
      EXPECT_TRUE(hasMatchConditions(objects))
          << name << ": the binder's updates would wait for the webhook";
    }
    CommandResult d = kubectl("admin", {"apply", "--dry-run=server", "-f", "-"}, listOf(objects));
    EXPECT_EQ(d.exitCode, 0) << name << " refused by kube-apiserver " << cp().version() << ": "
                             << d.err;
  }
  removeTree(copy);
}

// ---------------------------------------------------------------------------------------------
// a. A Released PV that retains its volume: deleting it is allowed with a warning, and the
//    pv-protection controller's finalizer removal that completes it is not refused.

TEST_F(E2e, ReleasedRetainPvDeleteIsAllowedAndCompletes) {
  makeNamespace("e2e-a");
  boundClaim("e2e-a", "data", "e2e-a-pv", "Retain");
  // The claim goes first (allowed with a note: the PV keeps the data).
  CommandResult r = kubectl("bob", {"delete", "pvc", "data", "-n", "e2e-a", "--wait=false"});
  expectAllowed(r, "bob deleting claim e2e-a/data (PV Retain)");
  EXPECT_NE(r.err.find("stateguard pvc-delete"), std::string::npos) << r.err;
  ASSERT_TRUE(waitGoneUnrefused(pvcPath("e2e-a", "data"), "e2e-a", "data", seconds(30)))
      << "claim e2e-a/data still there after its deletion was allowed: "
      << show(pvcPath("e2e-a", "data"))
      << "\ncontrollers refused:" << controllerDenials("e2e-a", "data");
  ASSERT_TRUE(waitPhase(pvPath("e2e-a-pv"), "Released", seconds(30))) << show(pvPath("e2e-a-pv"));

  r = kubectl("bob", {"delete", "pv", "e2e-a-pv", "--wait=false"});
  expectAllowed(r, "bob deleting Released PV e2e-a-pv (Retain)");
  EXPECT_NE(r.err.find("Warning: stateguard pv-delete"), std::string::npos)
      << "no warning: " << r.err;
  EXPECT_TRUE(waitGoneUnrefused(pvPath("e2e-a-pv"), "", "e2e-a-pv", seconds(30)))
      << "PV e2e-a-pv still there after its deletion was allowed: " << show(pvPath("e2e-a-pv"))
      << "\ncontrollers refused:" << controllerDenials("", "e2e-a-pv");
  // Retain: the data stays in the backend (the hostPath folder).
  EXPECT_TRUE(fs::exists(cp().volumeDir() + "/e2e-a-pv/data"));
  expectAudit("bob", "DELETE", "PersistentVolume", "", "e2e-a-pv", "warn");
  EXPECT_EQ(controllerDenials("", "e2e-a-pv"), "");
}

// ---------------------------------------------------------------------------------------------
// b. Break-glass deletion of a claim whose PV reclaims with Delete: allowed, and everything the
//    controllers do to finish it (pvc-protection, the binder's reclaim, pv-protection) passes.

TEST_F(E2e, BreakGlassClaimDeleteCompletesTheReclaim) {
  makeNamespace("e2e-b");
  boundClaim("e2e-b", "data", "e2e-b-pv", "Delete");
  const std::string folder = cp().volumeDir() + "/e2e-b-pv";
  CommandResult r = kubectl(
      "alice", {"annotate", "pvc", "data", "-n", "e2e-b", kAllow + "=" + breakGlass("pvc-delete")});
  expectAllowed(r, "alice setting the break-glass annotation");
  r = kubectl("alice", {"delete", "pvc", "data", "-n", "e2e-b", "--wait=false"});
  expectAllowed(r, "alice's break-glass deletion of e2e-b/data");
  EXPECT_NE(r.err.find("break-glass by alice"), std::string::npos) << r.err;
  expectAudit("alice", "DELETE", "PersistentVolumeClaim", "e2e-b", "data", "break-glass");

  ASSERT_TRUE(waitGoneUnrefused(pvcPath("e2e-b", "data"), "e2e-b", "data", seconds(30)))
      << "claim e2e-b/data still there after the break-glass deletion: "
      << show(pvcPath("e2e-b", "data"))
      << "\ncontrollers refused:" << controllerDenials("e2e-b", "data");
  EXPECT_TRUE(waitGoneUnrefused(pvPath("e2e-b-pv"), "", "e2e-b-pv", seconds(30)))
      << "PV e2e-b-pv (reclaim Delete) still there after its claim's deletion: "
      << show(pvPath("e2e-b-pv")) << "\ncontrollers refused:" << controllerDenials("", "e2e-b-pv");
  EXPECT_TRUE(pollUntil([&] { return !fs::exists(folder); }, seconds(30)))
      << "the reclaim did not remove " << folder;
}

// ---------------------------------------------------------------------------------------------
// c. The same deletion by bob, who is not in a break-glass group: refused, nothing happens.

TEST_F(E2e, ClaimDeleteRefusedOutsideBreakGlass) {
  makeNamespace("e2e-c");
  boundClaim("e2e-c", "data", "e2e-c-pv", "Delete");
  CommandResult r = kubectl("bob", {"delete", "pvc", "data", "-n", "e2e-c", "--wait=false"});
  expectRefused(r,
                {"destructive.stateguard.io", "[pvc-delete]",
                 "deleting PersistentVolumeClaim e2e-c/data destroys its data", "e2e-c-pv"},
                "bob deleting e2e-c/data (PV Delete)");
  json pvc = cp().getObject(pvcPath("e2e-c", "data"));
  ASSERT_TRUE(pvc.is_object()) << "claim gone";
  EXPECT_EQ(k8s::str(pvc, "/metadata/deletionTimestamp"), "");
  EXPECT_TRUE(fs::exists(cp().volumeDir() + "/e2e-c-pv/data"));
  expectAudit("bob", "DELETE", "PersistentVolumeClaim", "e2e-c", "data", "deny");
}

// ---------------------------------------------------------------------------------------------
// d. Break-glass deletion of a namespace holding a claim on a Delete PV: the namespace
//    controller empties it (its claim deletions are not refused) and the namespace goes.

TEST_F(E2e, BreakGlassNamespaceDeleteFinishes) {
  makeNamespace("e2e-d");
  boundClaim("e2e-d", "data", "e2e-d-pv", "Delete");
  CommandResult r = kubectl(
      "alice", {"annotate", "namespace", "e2e-d", kAllow + "=" + breakGlass("namespace-delete")});
  expectAllowed(r, "alice annotating namespace e2e-d");
  r = kubectl("alice", {"delete", "namespace", "e2e-d", "--wait=false"});
  expectAllowed(r, "alice's break-glass deletion of namespace e2e-d");
  expectAudit("alice", "DELETE", "Namespace", "e2e-d", "e2e-d", "break-glass");

  std::string contentFailure;
  const bool gone = waitUnrefused(
      [&] {
        json ns = cp().getObject("/api/v1/namespaces/e2e-d");
        if (!ns.is_object()) return true;
        for (const auto& c : ns["status"].value("conditions", json::array())) {
          if (c.value("type", "") == "NamespaceDeletionContentFailure" &&
              c.value("status", "") == "True") {
            contentFailure = c.value("message", "");
          }
        }
        return false;
      },
      "e2e-d", "data", seconds(60));
  EXPECT_EQ(contentFailure, "") << "NamespaceDeletionContentFailure";
  ASSERT_TRUE(gone) << "namespace e2e-d still there after its deletion: "
                    << show("/api/v1/namespaces/e2e-d")
                    << "\ncontrollers refused:" << controllerDenials("e2e-d", "data");
  EXPECT_TRUE(waitGoneUnrefused(pvPath("e2e-d-pv"), "", "e2e-d-pv", seconds(30)))
      << "PV e2e-d-pv not reclaimed:" << controllerDenials("", "e2e-d-pv");
}

// ---------------------------------------------------------------------------------------------
// e. A StatefulSet whose retention policy deletes its claims: bob's deletion refused; alice's
//    break-glass deletion allowed, and the garbage collector then deletes the claims.

TEST_F(E2e, StatefulSetWithDeleteRetention) {
  makeNamespace("e2e-e");
  for (int i = 0; i < 2; ++i) {
    // Reserved for the claims the StatefulSet controller will create (data-web-<n>).
    const std::string n = std::to_string(i);
    create("admin", hostPathPv("e2e-e-pv-" + n, "Delete", "e2e-sts", "e2e-e", "data-web-" + n));
  }
  const json sts = json::parse(R"({
    "apiVersion": "apps/v1", "kind": "StatefulSet",
    "metadata": {"name": "web", "namespace": "e2e-e"},
    "spec": {
      "serviceName": "web", "replicas": 2, "podManagementPolicy": "Parallel",
      "selector": {"matchLabels": {"app": "web"}},
      "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
      "template": {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1",
                                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
      "volumeClaimTemplates": [{
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "e2e-sts",
                 "resources": {"requests": {"storage": "1Gi"}}}}]}})");
  ASSERT_TRUE(create("bob", sts));
  for (const char* c : {"data-web-0", "data-web-1"}) {
    ASSERT_TRUE(waitPhase(pvcPath("e2e-e", c), "Bound", seconds(30)))
        << c << " not Bound: " << show(pvcPath("e2e-e", c));
    // The StatefulSet controller makes the StatefulSet own claims it must delete with it.
    EXPECT_TRUE(pollUntil(
        [&] {
          json pvc = cp().getObject(pvcPath("e2e-e", c));
          for (const auto& o : pvc["metadata"].value("ownerReferences", json::array())) {
            if (o.value("kind", "") == "StatefulSet" && o.value("name", "") == "web") return true;
          }
          return false;
        },
        seconds(30)))
        << c << " not owned by StatefulSet web: " << show(pvcPath("e2e-e", c));
  }

  CommandResult r = kubectl("bob", {"delete", "statefulset", "web", "-n", "e2e-e", "--wait=false"});
  expectRefused(r, {"[statefulset-claims]", "deletes its claims", "data-web-0"},
                "bob deleting StatefulSet e2e-e/web");
  expectAudit("bob", "DELETE", "StatefulSet", "e2e-e", "web", "deny");

  r = kubectl("alice", {"annotate", "statefulset", "web", "-n", "e2e-e",
                        kAllow + "=" + breakGlass("statefulset-claims")});
  expectAllowed(r, "alice annotating StatefulSet web");
  r = kubectl("alice", {"delete", "statefulset", "web", "-n", "e2e-e", "--wait=false"});
  expectAllowed(r, "alice's break-glass deletion of StatefulSet web");
  expectAudit("alice", "DELETE", "StatefulSet", "e2e-e", "web", "break-glass");
  for (const char* c : {"data-web-0", "data-web-1"}) {
    ASSERT_TRUE(waitGoneUnrefused(pvcPath("e2e-e", c), "e2e-e", c, seconds(60)))
        << c << " still there after StatefulSet web was deleted: " << show(pvcPath("e2e-e", c))
        << "\ncontrollers refused:" << controllerDenials("e2e-e", c);
  }
  for (const char* pv : {"e2e-e-pv-0", "e2e-e-pv-1"}) {
    EXPECT_TRUE(waitGoneUnrefused(pvPath(pv), "", pv, seconds(30)))
        << pv << " not reclaimed:" << controllerDenials("", pv);
  }
}

// ---------------------------------------------------------------------------------------------
// f. With the webhook down, volumes still bind (the binder's updates are not sent to a webhook
//    that fails closed), while a user's deletion is still refused.

TEST_F(E2e, VolumesBindWhileTheWebhookIsDown) {
  makeNamespace("e2e-f");
  boundClaim("e2e-f", "kept", "e2e-f-kept", "Delete");
  stopWebhook();
  struct Restart {
    ~Restart() {
      std::string error;
      if (!startWebhook(&error)) ADD_FAILURE() << error;
    }
  } restart;

  create("admin", hostPathPv("e2e-f-pv", "Retain", "e2e-f"));
  create("bob", claim("e2e-f", "data", "e2e-f"));
  const bool bound = waitPhase(pvcPath("e2e-f", "data"), "Bound", seconds(30));
  EXPECT_TRUE(bound) << "claim e2e-f/data not Bound 30 s after creation with the webhook down: "
                     << show(pvcPath("e2e-f", "data")) << "\nPV: " << show(pvPath("e2e-f-pv"));
  if (bound) {
    EXPECT_TRUE(waitPhase(pvPath("e2e-f-pv"), "Bound", seconds(10)));
  }

  // Fail closed for people: the destructive entry refuses what it cannot judge.
  CommandResult r = kubectl("bob", {"delete", "pvc", "kept", "-n", "e2e-f", "--wait=false"});
  expectRefused(r, {"failed calling webhook", "destructive.stateguard.io"},
                "bob deleting e2e-f/kept while the webhook is down");
  EXPECT_TRUE(exists(pvcPath("e2e-f", "kept")));
}

// ---------------------------------------------------------------------------------------------
// g. kube-apiserver restarts after an etcd compaction: the webhook's watches come back with 410
//    Gone, it re-lists, and its verdicts follow a change made after the restart.

uint64_t metricValue(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stoull(line.substr(name.size() + 1));
  }
  return 0;
}

TEST_F(E2e, WebhookFollowsTheClusterAcrossAnApiServerRestartWithCompaction) {
  makeNamespace("e2e-g");
  boundClaim("e2e-g", "data", "e2e-g-pv", "Retain");
  CommandResult r =
      kubectl("bob", {"delete", "pvc", "data", "-n", "e2e-g", "--dry-run=server", "--wait=false"});
  expectAllowed(r, "bob's dry-run deletion of a claim on a Retain PV");
  // Later writes, so the webhook's last-seen versions are older than the compaction point.
  for (int i = 0; i < 5; ++i) {
    create("admin",
           {{"apiVersion", "v1"},
            {"kind", "ConfigMap"},
            {"metadata", {{"name", "bump-" + std::to_string(i)}, {"namespace", "e2e-g"}}}});
  }
  const uint64_t relistsBefore =
      metricValue(g->webhook->get("/metrics").second, "stateguard_watch_relists_total");

  const auto stopping = Clock::now();
  const std::string stopNote = cp().stopApiServer();
  std::cout << "[ INFO ] kube-apiserver stopped in "
            << std::chrono::duration<double>(Clock::now() - stopping).count() << " s"
            << (stopNote.empty() ? "" : ": " + stopNote) << std::endl;
  std::string error;
  const int64_t revision = cp().compactEtcd(&error);
  ASSERT_GT(revision, 0) << error;
  ASSERT_TRUE(cp().startApiServer(&error)) << error;

  // After the restart: alice arms the PV for deletion (break-glass, Retain -> Delete).
  const json patch = {{"metadata", {{"annotations", {{kAllow, breakGlass("reclaim-policy")}}}}},
                      {"spec", {{"persistentVolumeReclaimPolicy", "Delete"}}}};
  r = kubectl("alice", {"patch", "pv", "e2e-g-pv", "--type=merge", "-p", patch.dump()});
  ASSERT_EQ(r.exitCode, 0) << "alice's break-glass Retain -> Delete: " << r.err;

  // The webhook must now see the claim as one whose data its deletion destroys.
  CommandResult last;
  const bool follows = pollUntil(
      [&] {
        last = kubectl(
            "bob", {"delete", "pvc", "data", "-n", "e2e-g", "--dry-run=server", "--wait=false"});
        return last.exitCode != 0 && last.err.find("[pvc-delete]") != std::string::npos;
      },
      seconds(30));
  EXPECT_TRUE(follows) << "30 s after the PV became Delete the webhook still judges by the old "
                          "state (compacted at revision "
                       << revision << "): " << last.out << last.err
                       << "\nwebhook log: " << g->webhook->process().stderrText();
  r = kubectl("bob", {"delete", "pvc", "data", "-n", "e2e-g", "--wait=false"});
  expectRefused(r, {"[pvc-delete]", "e2e-g-pv"}, "bob deleting e2e-g/data after the restart");
  EXPECT_TRUE(exists(pvcPath("e2e-g", "data")));
  // The verdict can come from a live read (an allowance on cached state is confirmed first), so
  // the cache's own recovery is checked apart: it re-lists after 410 Gone once its watches are
  // back (they retry with a back-off).
  uint64_t relistsAfter = relistsBefore;
  pollUntil(
      [&] {
        relistsAfter =
            metricValue(g->webhook->get("/metrics").second, "stateguard_watch_relists_total");
        return relistsAfter > relistsBefore;
      },
      seconds(30));
  EXPECT_GT(relistsAfter, relistsBefore) << "no re-list after 410 Gone counted in 30 s";
  std::cout << "[ INFO ] etcd compacted at revision " << revision << "; webhook re-lists "
            << relistsBefore << " -> " << relistsAfter << std::endl;
}

// ---------------------------------------------------------------------------------------------
// h. Self-protection: re-applying the install with a changed policy as the cluster admin is the
//    upgrade path; bob, who may edit ConfigMaps in stateguard-system, may not change it.

/// The install with a policy ConfigMap that differs from the one applied.
std::vector<json> installWithPolicyNote(const std::string& note) {
  auto objs = renderInstall();
  EXPECT_TRUE(objs.ok()) << objs.error();
  if (!objs.ok()) return {};
  for (auto& o : objs.value()) {
    if (o.value("kind", "") == "ConfigMap" && k8s::name(o) == "stateguard-policy") {
      o["data"]["policy.yaml"] = o["data"]["policy.yaml"].get<std::string>() + "# " + note + "\n";
    }
  }
  return *objs;
}

std::string policyText() {
  json cm = g->cp->getObject("/api/v1/namespaces/" + kNs + "/configmaps/stateguard-policy");
  return cm.is_object() ? k8s::str(cm, "/data/policy.yaml") : "";
}

TEST_F(E2e, AdminUpgradeWithChangedPolicyIsAllowed) {
  CommandResult r =
      kubectl("admin", {"apply", "-f", "-"}, listOf(installWithPolicyNote("upgraded by admin")));
  expectAllowed(r, "admin (system:masters) re-applying the install with a changed policy");
  EXPECT_NE(policyText().find("# upgraded by admin"), std::string::npos);
  expectAudit("admin", "UPDATE", "ConfigMap", kNs, "stateguard-policy", "allow");
}

TEST_F(E2e, BreakGlassUpgradeAsDocumentedIsAllowed) {
  // manifests/README.md, "Upgrades": impersonating a break-glass group.
  CommandResult r = kubectl("admin",
                            {"apply", "--as=admin", "--as-group=system:masters",
                             "--as-group=stateguard:break-glass", "-f", "-"},
                            listOf(installWithPolicyNote("upgraded as break-glass")));
  expectAllowed(r, "admin re-applying as a member of stateguard:break-glass");
  EXPECT_NE(policyText().find("# upgraded as break-glass"), std::string::npos);
}

// docs/operations.md, "Upgrading stateguard itself": a GitOps controller the policy lists (Flux's
// kustomize-controller) may apply stateguard; another controller with the same RBAC may not.
TEST_F(E2e, GitOpsControllerUpgradeIsAllowedForTheListedIdentityOnly) {
  for (const char* sa : {"kustomize-controller", "source-controller"}) {
    create("admin", {{"apiVersion", "rbac.authorization.k8s.io/v1"},
                     {"kind", "ClusterRoleBinding"},
                     {"metadata", {{"name", std::string("e2e-flux-") + sa}}},
                     {"roleRef",
                      {{"apiGroup", "rbac.authorization.k8s.io"},
                       {"kind", "ClusterRole"},
                       {"name", "cluster-admin"}}},
                     {"subjects",
                      {{{"kind", "ServiceAccount"}, {"name", sa}, {"namespace", "flux-system"}}}}});
  }
  CommandResult r = kubectl("admin",
                            {"apply", "--as=system:serviceaccount:flux-system:kustomize-controller",
                             "--as-group=system:serviceaccounts",
                             "--as-group=system:serviceaccounts:flux-system", "-f", "-"},
                            listOf(installWithPolicyNote("upgraded by flux")));
  expectAllowed(r, "Flux's kustomize-controller re-applying the install");
  EXPECT_NE(policyText().find("# upgraded by flux"), std::string::npos);
  r = kubectl("admin",
              {"apply", "--as=system:serviceaccount:flux-system:source-controller",
               "--as-group=system:serviceaccounts", "--as-group=system:serviceaccounts:flux-system",
               "-f", "-"},
              listOf(installWithPolicyNote("upgraded by another controller")));
  expectRefused(r, {"[self-protection]", "source-controller"},
                "a controller outside allowedUsers re-applying the install");
  EXPECT_EQ(policyText().find("# upgraded by another controller"), std::string::npos);
}

TEST_F(E2e, PolicyTamperingRefusedForNamespaceEditor) {
  create("admin",
         {{"apiVersion", "rbac.authorization.k8s.io/v1"},
          {"kind", "RoleBinding"},
          {"metadata", {{"name", "bob-edit"}, {"namespace", kNs}}},
          {"roleRef",
           {{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "ClusterRole"}, {"name", "edit"}}},
          {"subjects",
           {{{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "User"}, {"name", "bob"}}}}});
  const std::string before = policyText();
  ASSERT_NE(before, "");
  const json patch = {{"data",
                       {{"policy.yaml",
                         "apiVersion: stateguard.io/v1alpha1\nkind: Policy\nrules:\n"
                         "  pvc-delete: {mode: \"off\"}\n"}}}};
  CommandResult r = kubectl("bob", {"patch", "configmap", "stateguard-policy", "-n", kNs,
                                    "--type=merge", "-p", patch.dump()});
  expectRefused(r, {"self.stateguard.io", "[self-protection]"},
                "bob switching pvc-delete off in the policy ConfigMap");
  EXPECT_EQ(policyText(), before);
  r = kubectl("bob", {"delete", "configmap", "stateguard-policy", "-n", kNs, "--wait=false"});
  expectRefused(r, {"[self-protection]"}, "bob deleting the policy ConfigMap");
  r = kubectl("bob", {"scale", "deployment", "stateguard-webhook", "-n", kNs, "--replicas=0"});
  expectRefused(r, {"[self-protection]"}, "bob scaling the webhook to 0");
  expectAudit("bob", "UPDATE", "ConfigMap", kNs, "stateguard-policy", "deny");
}

// ---------------------------------------------------------------------------------------------
// i. The seed incidents' requests, with the verdicts of the in-process suites.

// Only kube-apiserver may speak: a pod that reaches the webhook's port without the apiserver's
// client certificate cannot have a review judged (or audited), while the apiserver's own calls
// (every other test here) are.
TEST_F(E2e, ReviewsFromAnyoneButTheApiServerAreRefused) {
  const size_t before = audit().size();
  auto [status, body] =
      g->webhook->post(readText(sourcePath("examples/reviews/delete-bound-pv.json")));
  EXPECT_EQ(status, 403) << body;
  EXPECT_NE(body.find("presented no client certificate"), std::string::npos) << body;
  EXPECT_EQ(audit().size(), before) << "an unverified caller's review reached the audit log";
}

TEST_F(E2e, BoundPvDeleteRefused) {
  makeNamespace("e2e-i1");
  boundClaim("e2e-i1", "data", "e2e-i1-pv", "Delete");
  CommandResult r = kubectl("bob", {"delete", "pv", "e2e-i1-pv", "--wait=false"});
  expectRefused(r, {"[pv-delete]", "PersistentVolume e2e-i1-pv is Bound"},
                "bob deleting Bound PV e2e-i1-pv");
  json pv = cp().getObject(pvPath("e2e-i1-pv"));
  EXPECT_EQ(k8s::str(pv, "/metadata/deletionTimestamp"), "");
  expectAudit("bob", "DELETE", "PersistentVolume", "", "e2e-i1-pv", "deny");
}

TEST_F(E2e, ForceDeleteRefused) {
  makeNamespace("e2e-i2");
  boundClaim("e2e-i2", "data", "e2e-i2-pv", "Delete");
  CommandResult r =
      kubectl("bob", {"delete", "pv", "e2e-i2-pv", "--grace-period=0", "--force", "--wait=false"});
  expectRefused(r, {"[pv-delete]"}, "bob force-deleting PV e2e-i2-pv");
  r = kubectl("bob", {"delete", "pvc", "data", "-n", "e2e-i2", "--grace-period=0", "--force",
                      "--wait=false"});
  expectRefused(r, {"[pvc-delete]"}, "bob force-deleting claim e2e-i2/data");
  EXPECT_EQ(k8s::str(cp().getObject(pvPath("e2e-i2-pv")), "/metadata/deletionTimestamp"), "");
  EXPECT_EQ(k8s::str(cp().getObject(pvcPath("e2e-i2", "data")), "/metadata/deletionTimestamp"), "");
}

TEST_F(E2e, FinalizerStripRefused) {
  makeNamespace("e2e-i3");
  boundClaim("e2e-i3", "data", "e2e-i3-pv", "Delete");
  const std::string strip = R"([{"op": "remove", "path": "/metadata/finalizers"}])";
  CommandResult r =
      kubectl("bob", {"patch", "pvc", "data", "-n", "e2e-i3", "--type=json", "-p", strip});
  expectRefused(r, {"[protection-finalizer]", "kubernetes.io/pvc-protection"},
                "bob stripping the claim's finalizers");
  r = kubectl("bob", {"patch", "pv", "e2e-i3-pv", "--type=json", "-p", strip});
  expectRefused(r, {"[protection-finalizer]", "kubernetes.io/pv-protection"},
                "bob stripping the PV's finalizers");
  EXPECT_EQ(k8s::finalizers(cp().getObject(pvcPath("e2e-i3", "data"))),
            std::vector<std::string>{"kubernetes.io/pvc-protection"});
  EXPECT_EQ(k8s::finalizers(cp().getObject(pvPath("e2e-i3-pv"))),
            std::vector<std::string>{"kubernetes.io/pv-protection"});
  expectAudit("bob", "UPDATE", "PersistentVolumeClaim", "e2e-i3", "data", "deny");
  expectAudit("bob", "UPDATE", "PersistentVolume", "", "e2e-i3-pv", "deny");
}

TEST_F(E2e, RetainToDeleteRefusedOutsideBreakGlass) {
  makeNamespace("e2e-i4");
  boundClaim("e2e-i4", "data", "e2e-i4-pv", "Retain");
  CommandResult r = kubectl("bob", {"patch", "pv", "e2e-i4-pv", "-p",
                                    R"({"spec":{"persistentVolumeReclaimPolicy":"Delete"}})"});
  expectRefused(r, {"[reclaim-policy]", "from Retain to Delete"}, "bob's Retain -> Delete");
  EXPECT_EQ(k8s::str(cp().getObject(pvPath("e2e-i4-pv")), "/spec/persistentVolumeReclaimPolicy"),
            "Retain");
  expectAudit("bob", "UPDATE", "PersistentVolume", "", "e2e-i4-pv", "deny");
}

TEST_F(E2e, DryRunDeleteGetsTheSameVerdictAndChangesNothing) {
  makeNamespace("e2e-i5");
  boundClaim("e2e-i5", "data", "e2e-i5-pv", "Delete");
  CommandResult dry =
      kubectl("bob", {"delete", "pvc", "data", "-n", "e2e-i5", "--dry-run=server", "--wait=false"});
  CommandResult real = kubectl("bob", {"delete", "pvc", "data", "-n", "e2e-i5", "--wait=false"});
  expectRefused(dry, {"[pvc-delete]"}, "bob's dry-run deletion");
  expectRefused(real, {"[pvc-delete]"}, "bob's deletion");
  EXPECT_EQ(dry.err, real.err) << "a dry run must get the verdict of the real request";
  expectAudit("bob", "DELETE", "PersistentVolumeClaim", "e2e-i5", "data", "deny", true);
  expectAudit("bob", "DELETE", "PersistentVolumeClaim", "e2e-i5", "data", "deny", false);

  // Allowed as a dry run (break-glass), and nothing is deleted.
  CommandResult r = kubectl("alice", {"annotate", "pvc", "data", "-n", "e2e-i5",
                                      kAllow + "=" + breakGlass("pvc-delete")});
  expectAllowed(r, "alice setting the break-glass annotation");
  r = kubectl("alice",
              {"delete", "pvc", "data", "-n", "e2e-i5", "--dry-run=server", "--wait=false"});
  expectAllowed(r, "alice's break-glass dry-run deletion");
  expectAudit("alice", "DELETE", "PersistentVolumeClaim", "e2e-i5", "data", "break-glass", true);
  std::this_thread::sleep_for(milliseconds(500));
  json pvc = cp().getObject(pvcPath("e2e-i5", "data"));
  ASSERT_TRUE(pvc.is_object()) << "a dry run deleted the claim";
  EXPECT_EQ(k8s::str(pvc, "/metadata/deletionTimestamp"), "");
  EXPECT_TRUE(exists(pvPath("e2e-i5-pv")));
}

TEST_F(E2e, NamespaceDeleteMessageNamesTheNamespace) {
  makeNamespace("gitea");
  boundClaim("gitea", "gitea-data", "e2e-gitea-pv", "Delete");
  CommandResult r = kubectl("admin", {"delete", "namespace", "gitea", "--wait=false"});
  expectRefused(r, {"[namespace-delete]", "Namespace gitea", "gitea-data"},
                "admin deleting namespace gitea");
  EXPECT_EQ(r.err.find("Namespace gitea/gitea"), std::string::npos) << r.err;
  json ns = cp().getObject("/api/v1/namespaces/gitea");
  EXPECT_EQ(k8s::str(ns, "/status/phase"), "Active");
  expectAudit("admin", "DELETE", "Namespace", "gitea", "gitea", "deny");
}

// ---------------------------------------------------------------------------------------------
// Item 5 of issue 12: the watch cache can be milliseconds behind. A break-glass PATCH of a PV from
// Retain to Delete, then a claim DELETE a millisecond later on another connection: the cache may
// still say Retain, so the allowance is confirmed from the apiserver, and the DELETE is refused
// every time (before, 2 of 450 tries were allowed and would have destroyed the volume).

/// A TCP relay on 127.0.0.1 that holds every chunk the server sends for `delay` before passing
/// it on, in order (TLS passes through untouched): a watch cache behind it lags by that much, as a
/// busy apiserver or network makes it, while requests still reach the real apiserver.
class LaggingRelay {
 public:
  LaggingRelay(int targetPort, milliseconds delay) : target_(targetPort), delay_(delay) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::listen(listener_, 64) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { acceptLoop(); });
  }
  ~LaggingRelay() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    if (acceptor_.joinable()) acceptor_.join();
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    for (int fd : fds_) ::close(fd);
  }
  int port() const { return port_; }

 private:
  void acceptLoop() {
    while (!stopping_) {
      int client = ::accept(listener_, nullptr, nullptr);
      if (client < 0) return;
      int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(target_));
      if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(client);
        ::close(server);
        continue;
      }
      auto queue = std::make_shared<Queue>();
      std::lock_guard lock(mu_);
      fds_.push_back(client);
      fds_.push_back(server);
      threads_.emplace_back([=] { pump(client, server); });
      threads_.emplace_back([=, this] { readLagged(server, client, queue); });
      threads_.emplace_back([=, this] { writeLagged(client, queue); });
    }
  }
  static void pump(int from, int to) {
    char buf[16384];
    for (ssize_t n; (n = ::read(from, buf, sizeof buf)) > 0;) {
      if (::send(to, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
    }
    ::shutdown(to, SHUT_WR);
  }
  struct Queue {
    std::deque<std::pair<std::chrono::steady_clock::time_point, std::string>> chunks;
    bool closed = false;
  };
  void readLagged(int from, int to, const std::shared_ptr<Queue>& q) {
    char buf[16384];
    for (ssize_t n; (n = ::read(from, buf, sizeof buf)) > 0;) {
      std::lock_guard lock(mu_);
      q->chunks.emplace_back(std::chrono::steady_clock::now() + delay_,
                             std::string(buf, static_cast<size_t>(n)));
      cv_.notify_all();
    }
    std::lock_guard lock(mu_);
    q->closed = true;
    cv_.notify_all();
    (void)to;
  }
  void writeLagged(int to, const std::shared_ptr<Queue>& q) {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stopping_ || q->closed || !q->chunks.empty(); });
      if (q->chunks.empty()) break;  // closed or stopping, nothing left
      auto [due, bytes] = std::move(q->chunks.front());
      q->chunks.pop_front();
      lock.unlock();
      std::this_thread::sleep_until(due);
      const bool sent = ::send(to, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
                        static_cast<ssize_t>(bytes.size());
      lock.lock();
      if (!sent || stopping_) break;
    }
    ::shutdown(to, SHUT_WR);
  }

  int target_;
  milliseconds delay_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
};

/// A keep-alive HTTPS client to the apiserver as `user` (token and CA from its kubeconfig).
std::unique_ptr<httplib::SSLClient> apiClient(const std::string& user) {
  auto config = loadKubeconfig(g->cp->kubeconfig(user));
  if (!config.ok()) {
    ADD_FAILURE() << config.error();
    return nullptr;
  }
  auto cli = std::make_unique<httplib::SSLClient>("127.0.0.1", g->cp->apiPort());
  cli->set_ca_cert_path(g->cp->caPath().c_str());
  cli->enable_server_certificate_verification(true);
  cli->set_bearer_token_auth(config->token);
  cli->set_keep_alive(true);
  cli->set_tcp_nodelay(true);
  return cli;
}

TEST_F(E2e, ADeleteRightAfterRetainToDeleteIsRefusedEveryTime) {
  // The webhook reaches the apiserver through a relay that holds what the apiserver sends for
  // 300 ms: its cache lags that much behind every change, deterministically.
  LaggingRelay relay(cp().apiPort(), milliseconds(300));
  ASSERT_GT(relay.port(), 0);
  const std::string direct = g->webhookKubeconfig;
  std::string text = readText(direct);
  const std::string server = "127.0.0.1:" + std::to_string(cp().apiPort());
  ASSERT_NE(text.find(server), std::string::npos) << text;
  text.replace(text.find(server), server.size(), "127.0.0.1:" + std::to_string(relay.port()));
  g->webhookKubeconfig = direct + ".lagging";
  writeText(g->webhookKubeconfig, text);
  stopWebhook();
  struct Restore {
    std::string kubeconfig;
    ~Restore() {
      stopWebhook();
      g->webhookKubeconfig = kubeconfig;
      std::string error;
      if (!startWebhook(&error)) ADD_FAILURE() << error;
    }
  } restore{direct};
  std::string error;
  ASSERT_TRUE(startWebhook(&error)) << error;

  makeNamespace("e2e-race");
  boundClaim("e2e-race", "data", "e2e-race-pv", "Retain");
  CommandResult r = kubectl(
      "alice", {"annotate", "pv", "e2e-race-pv", kAllow + "=" + breakGlass("reclaim-policy")});
  expectAllowed(r, "alice arming break-glass for reclaim-policy");
  auto alice = apiClient("alice");
  auto bob = apiClient("bob");
  ASSERT_TRUE(alice && bob);
  const std::string pv = pvPath("e2e-race-pv");
  const std::string claimDelete = pvcPath("e2e-race", "data") + "?dryRun=All";
  int allowed = 0, refused = 0;
  for (int i = 0; i < 10; ++i) {
    auto back = alice->Patch(pv, R"({"spec":{"persistentVolumeReclaimPolicy":"Retain"}})",
                             "application/merge-patch+json");
    ASSERT_TRUE(back && back->status == 200) << (back ? back->body : "no answer");
    std::this_thread::sleep_for(milliseconds(600));  // the lagging cache has the Retain again
    auto flip = alice->Patch(pv, R"({"spec":{"persistentVolumeReclaimPolicy":"Delete"}})",
                             "application/merge-patch+json");
    ASSERT_TRUE(flip && flip->status == 200) << (flip ? flip->body : "no answer");
    auto del = bob->Delete(claimDelete);
    ASSERT_TRUE(del) << "no answer to the claim DELETE";
    if (del->status == 200) {
      ++allowed;
    } else {
      ++refused;
      EXPECT_NE(del->body.find("[pvc-delete]"), std::string::npos) << del->body;
    }
  }
  EXPECT_EQ(allowed, 0) << refused << " refused, " << allowed
                        << " allowed on a cache that had not seen the Retain -> Delete yet";
  const std::string metrics = g->webhook->get("/metrics").second;
  EXPECT_NE(metrics.find("stateguard_live_confirmations_total"), std::string::npos) << metrics;
}

// The garbage collector's exemption is not a way around pvc-delete: giving a claim on a Delete PV
// an owner that can be deleted at will is refused.
TEST_F(E2e, ClaimOwnerThatWouldLetTheGarbageCollectorDeleteItIsRefused) {
  makeNamespace("e2e-owner");
  boundClaim("e2e-owner", "data", "e2e-owner-pv", "Delete");
  CommandResult r = kubectl(
      "bob", {"patch", "pvc", "data", "-n", "e2e-owner", "--type=merge", "-p",
              R"({"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Pod","name":"tmp",)"
              R"("uid":"3c0d4c5e-0000-4000-8000-000000000001"}]}})"});
  expectRefused(r, {"[pvc-delete]", "garbage collector", "e2e-owner-pv"},
                "bob giving claim e2e-owner/data a disposable owner");
  EXPECT_FALSE(
      cp().getObject(pvcPath("e2e-owner", "data"))["metadata"].contains("ownerReferences"));
  expectAudit("bob", "UPDATE", "PersistentVolumeClaim", "e2e-owner", "data", "deny");
}

// ---------------------------------------------------------------------------------------------
// The background scan (webhook/background_scan.h): hazards that already exist become
// PolicyReports (written by the one replica holding the Lease) and gauges, and clear when fixed;
// another replica takes over when the leader dies or leaves.

const std::string kReports = "/apis/wgpolicyk8s.io/v1alpha2";
const std::string kLease =
    "/apis/coordination.k8s.io/v1/namespaces/" + kNs + "/leases/stateguard-scan";

/// A sample's value in a /metrics body (the line that starts with `series` and a space), or -1.
double sample(const std::string& metrics, const std::string& series) {
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  return -1;
}

double leaderGauge(WebhookProcess& w) {
  return sample(w.get("/metrics").second, "stateguard_scan_leader");
}

/// The result of report `r` for `kind` ns/name under `rule`, or null.
json resultFor(const json& r, const std::string& rule, const std::string& kind,
               const std::string& name) {
  for (const auto& x : k8s::at(r, "/results")) {
    const json& res = x.value("resources", json::array());
    if (x.value("rule", "") == rule && !res.empty() && res[0].value("kind", "") == kind &&
        res[0].value("name", "") == name)
      return x;
  }
  return nullptr;
}

TEST_F(E2e, BackgroundScanReportsWhatExistsAndOneReplicaWritesIt) {
  CommandResult r =
      kubectl("admin", {"apply", "-f", sourcePath("tests/fixtures/scan/policyreport-crds.yaml")});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  r = kubectl("admin",
              {"wait", "--for", "condition=established", "--timeout=30s",
               "crd/policyreports.wgpolicyk8s.io", "crd/clusterpolicyreports.wgpolicyk8s.io"});
  ASSERT_EQ(r.exitCode, 0) << r.err;

  // The suite's webhook is the only replica: it holds the Lease (created through the shipped
  // Role) and scans.
  ASSERT_TRUE(
      pollUntil([&] { return !k8s::str(cp().getObject(kLease), "/spec/holderIdentity").empty(); },
                seconds(20)))
      << "no holder on Lease " << kNs << "/stateguard-scan: " << show(kLease) << "\n"
      << g->webhook->process().stderrText();
  const std::string first = k8s::str(cp().getObject(kLease), "/spec/holderIdentity");
  EXPECT_EQ(leaderGauge(*g->webhook), 1);

  // A hazard: claim e2e-scan/data is bound but no Pod uses it (claim-unused).
  makeNamespace("e2e-scan");
  boundClaim("e2e-scan", "data", "e2e-scan-pv", "Retain");
  const std::string nsReport = kReports + "/namespaces/e2e-scan/policyreports/stateguard";
  json found;
  ASSERT_TRUE(pollUntil(
      [&] {
        found =
            resultFor(cp().getObject(nsReport), "claim-unused", "PersistentVolumeClaim", "data");
        return !found.is_null();
      },
      seconds(30)))
      << "no claim-unused result in " << nsReport << ": " << show(nsReport) << "\n"
      << g->webhook->process().stderrText();
  EXPECT_EQ(found.value("result", ""), "warn");
  EXPECT_EQ(found.value("severity", ""), "info");
  EXPECT_EQ(found.value("source", ""), "stateguard");
  EXPECT_EQ(found["resources"][0].value("apiVersion", ""), "v1");
  EXPECT_EQ(found["resources"][0].value("namespace", ""), "e2e-scan");
  EXPECT_NE(found.value("message", "").find("e2e-scan/data"), std::string::npos) << found.dump();
  EXPECT_TRUE(k8s::at(found, "/timestamp/seconds").is_number_integer()) << found.dump();
  const std::string metrics = g->webhook->get("/metrics").second;
  EXPECT_EQ(sample(metrics,
                   "stateguard_scan_findings{rule=\"claim-unused\",severity=\"note\","
                   "kind=\"PersistentVolumeClaim\",object_namespace=\"e2e-scan\"}"),
            1)
      << metrics;
  EXPECT_EQ(sample(metrics, "stateguard_policy_reports_available"), 1);

  // Fixed: the claim goes, so its namespace's report goes; the PV it leaves Released is
  // reported cluster-wide (pv-released), until it goes too.
  r = kubectl("bob", {"delete", "pvc", "data", "-n", "e2e-scan"});
  expectAllowed(r, "bob deleting claim e2e-scan/data (PV Retain)");
  EXPECT_TRUE(pollUntil([&] { return cp().get(nsReport).first == 404; }, seconds(30)))
      << "report still there after the hazard was fixed: " << show(nsReport);
  const std::string clusterReport = kReports + "/clusterpolicyreports/stateguard";
  EXPECT_TRUE(pollUntil(
      [&] {
        return !resultFor(cp().getObject(clusterReport), "pv-released", "PersistentVolume",
                          "e2e-scan-pv")
                    .is_null();
      },
      seconds(30)))
      << show(clusterReport);
  r = kubectl("bob", {"delete", "pv", "e2e-scan-pv"});
  expectAllowed(r, "bob deleting Released PV e2e-scan-pv (Retain)");
  EXPECT_TRUE(pollUntil(
      [&] {
        return resultFor(cp().getObject(clusterReport), "pv-released", "PersistentVolume",
                         "e2e-scan-pv")
            .is_null();
      },
      seconds(30)))
      << show(clusterReport);

  // Configuration the cache does not watch, set up before the next leader starts: a Longhorn
  // RecurringJob that keeps one backup (the seed; backup-retention warns, so it is created).
  r = kubectl("admin", {"apply", "-f", sourcePath("tests/fixtures/scan/recurringjob-crd.yaml")});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  r = kubectl("admin", {"wait", "--for", "condition=established", "--timeout=30s",
                        "crd/recurringjobs.longhorn.io"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  json job = {{"apiVersion", "longhorn.io/v1beta2"},
              {"kind", "RecurringJob"},
              {"metadata", {{"name", "nightly"}, {"namespace", "e2e-scan"}}},
              {"spec", {{"task", "backup"}, {"cron", "0 2 * * *"}, {"retain", 1}}}};
  ASSERT_TRUE(create("admin", job));

  // A second replica (another Pod name) only follows: it neither scans nor writes.
  const std::string dirB = g->webhookDir + "/replica-b";
  fs::create_directories(dirB);
  ::setenv("POD_NAME", "e2e-scan-b", 1);
  auto b = std::make_unique<WebhookProcess>(
      dirB, g->certs, std::vector<std::string>{"--kubeconfig", g->webhookKubeconfig},
      std::vector<std::string>{"--policy", sourcePath("manifests/base/policy.yaml"),
                               "--scan-after-change", "1s", "--scan-interval", "5s",
                               "--no-events"});
  ::unsetenv("POD_NAME");
  ASSERT_TRUE(b->started()) << b->process().stderrText();
  ASSERT_TRUE(pollUntil([&] { return b->get("/readyz").first == 200; }, seconds(60)));
  std::this_thread::sleep_for(seconds(3));
  EXPECT_EQ(leaderGauge(*b), 0);
  EXPECT_EQ(leaderGauge(*g->webhook), 1);
  EXPECT_EQ(sample(b->get("/metrics").second, "stateguard_scan_runs_total"), 0);

  // The leader dies without a word (SIGKILL): the follower takes over once the Lease has not
  // been renewed for its 15 s, and writes the reports from then on.
  ::kill(g->webhook->process().pid(), SIGKILL);
  stopWebhook();
  const auto killed = Clock::now();
  EXPECT_TRUE(pollUntil(
      [&] { return k8s::str(cp().getObject(kLease), "/spec/holderIdentity") == "e2e-scan-b"; },
      seconds(40)))
      << show(kLease) << "\n"
      << b->process().stderrText();
  const double takeover = std::chrono::duration<double>(Clock::now() - killed).count();
  EXPECT_GE(takeover, 10) << "taken over before the Lease expired";
  EXPECT_EQ(leaderGauge(*b), 1);
  std::cout << "background scan: replica b took over " << takeover
            << " s after the leader was killed" << std::endl;
  // The suite's webhook comes back (as before, under its first name): the Lease is b's now.
  std::string error;
  ASSERT_TRUE(startWebhook(&error)) << error;
  std::this_thread::sleep_for(seconds(3));
  EXPECT_EQ(leaderGauge(*g->webhook), 0);

  ASSERT_TRUE(create("admin", claim("e2e-scan", "again", "e2e-none")));
  EXPECT_TRUE(pollUntil(
      [&] {
        return !resultFor(cp().getObject(nsReport), "claim-unused", "PersistentVolumeClaim",
                          "again")
                    .is_null();
      },
      seconds(30)))
      << "the new leader did not write " << nsReport << ": " << show(nsReport) << "\n"
      << b->process().stderrText();
  EXPECT_EQ(sample(g->webhook->get("/metrics").second, "stateguard_policy_report_writes_total"), 0)
      << "a follower wrote reports";

  // The new leader listed the configuration kinds through the shipped RBAC (labelled ConfigMaps
  // included) and reports the RecurringJob; fixed, it clears at the next listing.
  EXPECT_TRUE(pollUntil(
      [&] {
        return !resultFor(cp().getObject(nsReport), "backup-retention", "RecurringJob", "nightly")
                    .is_null();
      },
      seconds(30)))
      << "no backup-retention result in " << nsReport << ": " << show(nsReport) << "\n"
      << b->process().stderrText();
  EXPECT_EQ(sample(b->get("/metrics").second, "stateguard_scan_configuration_list_failures"), 0);
  EXPECT_EQ(b->process().stderrText().find("forbidden (403)"), std::string::npos)
      << "the shipped ClusterRole must grant list on every configuration kind:\n"
      << b->process().stderrText();
  r = kubectl("admin", {"patch", "recurringjob.longhorn.io", "nightly", "-n", "e2e-scan", "--type",
                        "merge", "-p", R"({"spec":{"retain":7}})"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(pollUntil(
      [&] {
        return resultFor(cp().getObject(nsReport), "backup-retention", "RecurringJob", "nightly")
            .is_null();
      },
      seconds(30)))
      << "the fixed RecurringJob is still reported: " << show(nsReport);

  // b leaves as a Pod does (SIGTERM): it gives the Lease up, and the other replica takes over
  // at once instead of after 15 s.
  b->process().stop(milliseconds(5000));
  const auto left = Clock::now();
  EXPECT_TRUE(
      pollUntil([&] { return k8s::str(cp().getObject(kLease), "/spec/holderIdentity") == first; },
                seconds(10)))
      << show(kLease);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - left).count(), 8);
  EXPECT_TRUE(pollUntil([&] { return leaderGauge(*g->webhook) == 1; }, seconds(5)));

  r = kubectl("admin", {"delete", "namespace", "e2e-scan", "--wait=false"});
  EXPECT_EQ(r.exitCode, 0) << r.err;
}

// ---------------------------------------------------------------------------------------------
// CSI guard injection (manifests/components/csi-injection): the driver operator's own
// DaemonSet is stored with stateguard-csi, through delete and re-create and an UPDATE that drops
// it; other DaemonSets are untouched; one created while the injector is down is reported.

/// The DaemonSet as Longhorn's driver deployer creates it (manifests/csi-sidecar/example).
json pristineLonghornPlugin() {
  auto docs = parseDocuments(
      readText(sourcePath("manifests/csi-sidecar/example/longhorn-csi-plugin.yaml")), "longhorn");
  return docs.ok() && !docs->empty() ? docs->front() : json();
}

std::vector<std::string> containerNames(const json& ds) {
  std::vector<std::string> out;
  const json& cs = k8s::at(ds, "/spec/template/spec/containers");
  if (cs.is_array())
    for (const auto& c : cs) out.push_back(c.value("name", ""));
  return out;
}

bool hasSidecar(const json& ds) {
  auto names = containerNames(ds);
  return std::find(names.begin(), names.end(), "stateguard-csi") != names.end();
}

std::string dsPath(const std::string& ns, const std::string& name) {
  return "/apis/apps/v1/namespaces/" + ns + "/daemonsets/" + name;
}

std::string registrarArgs(const json& ds, const std::string& container) {
  const json& cs = k8s::at(ds, "/spec/template/spec/containers");
  if (cs.is_array())
    for (const auto& c : cs)
      if (c.value("name", "") == container) return c.value("args", json::array()).dump();
  return "";
}

class CsiInjection : public E2e {
 protected:
  void SetUp() override {
    E2e::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    for (const char* ns : {"longhorn-system", "rook-ceph"}) {
      if (cp().getObject("/api/v1/namespaces/" + std::string(ns)).is_null()) {
        create("admin",
               {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}});
      }
    }
    // kube-apiserver learns the MutatingWebhookConfiguration from its own watch: wait until a
    // dry-run create comes back injected (once per run).
    static bool wiredOnce = false;
    if (wiredOnce) return;
    removeDaemonSet("longhorn-system", "longhorn-csi-plugin");
    std::string last;
    const bool wired = pollUntil(
        [&] {
          CommandResult r =
              kubectl("admin", {"create", "--dry-run=server", "-o", "json", "-f", "-"},
                      pristineLonghornPlugin().dump());
          last = r.exitCode != 0 ? r.err : r.out.substr(0, 2000);
          if (r.exitCode != 0) return false;
          auto o = json::parse(r.out, nullptr, false);
          return !o.is_discarded() && hasSidecar(o);
        },
        seconds(30));
    ASSERT_TRUE(wired) << "a dry-run create of longhorn-csi-plugin is not injected 30 s after the "
                          "install; last answer: "
                       << last
                       << "\nwebhook: " << g->webhook->process().stderrText().substr(0, 3000);
    wiredOnce = true;
  }

  /// Deletes the DaemonSet and waits until it is gone.
  void removeDaemonSet(const std::string& ns, const std::string& name) {
    kubectl("admin", {"delete", "daemonset", name, "-n", ns, "--ignore-not-found", "--wait=true"});
    EXPECT_TRUE(pollUntil([&] { return cp().getObject(dsPath(ns, name)).is_null(); }, seconds(30)));
  }

  std::string metrics() { return g->webhook ? g->webhook->get("/metrics").second : ""; }
};

TEST_F(CsiInjection, LonghornsPluginIsStoredWithTheGuardAlsoAfterDeleteAndRecreate) {
  removeDaemonSet("longhorn-system", "longhorn-csi-plugin");
  const json pristine = pristineLonghornPlugin();
  ASSERT_FALSE(hasSidecar(pristine));
  for (int round = 1; round <= 2; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_TRUE(create("admin", pristine));
    json stored = cp().getObject(dsPath("longhorn-system", "longhorn-csi-plugin"));
    EXPECT_TRUE(hasSidecar(stored)) << "stored containers: " << json(containerNames(stored));
    EXPECT_NE(registrarArgs(stored, "node-driver-registrar")
                  .find("--kubelet-registration-path=/var/lib/kubelet/plugins/driver.longhorn.io/"
                        "stateguard.sock"),
              std::string::npos)
        << registrarArgs(stored, "node-driver-registrar");
    const json& inits = k8s::at(stored, "/spec/template/spec/initContainers");
    ASSERT_TRUE(inits.is_array());
    EXPECT_EQ(inits[0].value("name", ""), "stateguard-format-gate");
    // The driver deployer's next start: delete (foreground, as longhorn-manager does), create.
    if (round == 1) removeDaemonSet("longhorn-system", "longhorn-csi-plugin");
  }

  // An UPDATE of the stored, defaulted object changes nothing: the webhook sends no patch.
  const std::string before = metrics();
  const uint64_t unchanged =
      metricValue(before, "stateguard_csi_injections_total{outcome=\"unchanged\"}");
  json stored = cp().getObject(dsPath("longhorn-system", "longhorn-csi-plugin"));
  CommandResult r = kubectl("admin", {"annotate", "daemonset", "longhorn-csi-plugin", "-n",
                                      "longhorn-system", "e2e/touched=1"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  json after = cp().getObject(dsPath("longhorn-system", "longhorn-csi-plugin"));
  EXPECT_EQ(k8s::at(after, "/spec/template"), k8s::at(stored, "/spec/template"));
  EXPECT_EQ(k8s::at(after, "/metadata/generation"), k8s::at(stored, "/metadata/generation"))
      << "the pod template changed on an annotation: the injection is not idempotent";
  EXPECT_GT(metricValue(metrics(), "stateguard_csi_injections_total{outcome=\"unchanged\"}"),
            unchanged);
}

TEST_F(CsiInjection, AnUpdateThatDropsTheSidecarGetsItBack) {
  removeDaemonSet("longhorn-system", "longhorn-csi-plugin");
  ASSERT_TRUE(create("admin", pristineLonghornPlugin()));
  // longhorn-manager (or a GitOps tool holding an old copy) writes its own template back.
  json current = cp().getObject(dsPath("longhorn-system", "longhorn-csi-plugin"));
  ASSERT_TRUE(hasSidecar(current));
  json update = pristineLonghornPlugin();
  // No resourceVersion: an unconditional update (the DaemonSet controller writes its status
  // meanwhile).
  CommandResult r = kubectl("admin", {"replace", "-f", "-"}, update.dump());
  ASSERT_EQ(r.exitCode, 0) << r.err;
  json stored = cp().getObject(dsPath("longhorn-system", "longhorn-csi-plugin"));
  EXPECT_TRUE(hasSidecar(stored)) << "stored containers: " << json(containerNames(stored));
  EXPECT_NE(registrarArgs(stored, "node-driver-registrar").find("stateguard.sock"),
            std::string::npos);
}

TEST_F(CsiInjection, ADaemonSetNotNamedByThePolicyIsUntouched) {
  json other = pristineLonghornPlugin();
  other["metadata"]["name"] = "longhorn-other-plugin";
  other["spec"]["selector"]["matchLabels"]["app"] = "longhorn-other-plugin";
  other["spec"]["template"]["metadata"]["labels"]["app"] = "longhorn-other-plugin";
  removeDaemonSet("longhorn-system", "longhorn-other-plugin");
  ASSERT_TRUE(create("admin", other));
  json stored = cp().getObject(dsPath("longhorn-system", "longhorn-other-plugin"));
  EXPECT_FALSE(hasSidecar(stored));
  EXPECT_EQ(containerNames(stored), containerNames(other));
  EXPECT_EQ(k8s::at(stored, "/spec/template/spec/initContainers"), json())
      << "an init container was added to a DaemonSet the policy does not name";
  EXPECT_EQ(registrarArgs(stored, "node-driver-registrar"),
            registrarArgs(other, "node-driver-registrar"));
  removeDaemonSet("longhorn-system", "longhorn-other-plugin");
}

TEST_F(CsiInjection, ADaemonSetCreatedWhileTheInjectorIsDownIsReported) {
  auto docs = parseDocuments(
      readText(sourcePath("tests/fixtures/csi-guard/rook-csi-rbdplugin.yaml")), "rook");
  ASSERT_TRUE(docs.ok() && !docs->empty());
  const json rbd = docs->front();
  removeDaemonSet("rook-ceph", "csi-rbdplugin");

  stopWebhook();
  {
    // failurePolicy Ignore: the operator's create goes through, unguarded.
    ASSERT_TRUE(create("admin", rbd));
    EXPECT_FALSE(hasSidecar(cp().getObject(dsPath("rook-ceph", "csi-rbdplugin"))));
  }
  std::string error;
  ASSERT_TRUE(startWebhook(&error)) << error;

  const std::string series =
      "stateguard_csi_unguarded{driver=\"rook-ceph-rbd\",namespace=\"rook-ceph\",daemonset=\"csi-"
      "rbdplugin\"}";
  std::string text;
  EXPECT_TRUE(pollUntil(
      [&] {
        text = metrics();
        return text.find(series + " 1") != std::string::npos;
      },
      seconds(20)))
      << "no " << series << " 1 on /metrics:\n"
      << text;

  // And an Event on the DaemonSet, for `kubectl describe` and event exporters.
  json events;
  EXPECT_TRUE(pollUntil(
      [&] {
        events = cp().getObject("/api/v1/namespaces/rook-ceph/events");
        if (!events.contains("items")) return false;
        for (const auto& e : events["items"])
          if (e.value("reason", "") == "CSIGuardMissing" &&
              k8s::str(e, "/involvedObject/name") == "csi-rbdplugin" &&
              e.value("message", "").find("UNGUARDED") != std::string::npos)
            return true;
        return false;
      },
      seconds(20)))
      << events.dump(1);

  // What the Event tells a person to do puts the guard back, and the alarm clears.
  CommandResult r = kubectl("admin", {"annotate", "daemonset", "csi-rbdplugin", "-n", "rook-ceph",
                                      "stateguard.io/reinject=1"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(hasSidecar(cp().getObject(dsPath("rook-ceph", "csi-rbdplugin"))));
  EXPECT_TRUE(pollUntil(
      [&] {
        text = metrics();
        return text.find(series + " 0") != std::string::npos;
      },
      seconds(20)))
      << text;
  removeDaemonSet("rook-ceph", "csi-rbdplugin");
}

}  // namespace
}  // namespace stateguard::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new stateguard::testing::ClusterEnvironment);
  return RUN_ALL_TESTS();
}
