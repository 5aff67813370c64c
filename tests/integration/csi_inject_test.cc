// The CSI guard injection (webhook/csi_inject.h) and the unguarded check (webhook/csi_monitor.h):
// - the injection equals what the kustomize component manifests/csi-sidecar/component does to
//   the same DaemonSet (rendered by kubectl kustomize), so the two cannot drift apart;
// - it is idempotent (an injected DaemonSet, even with the apiserver's defaults filled in, gets
//   an empty patch), and a removed or changed part is put back;
// - targets by name and by labels, Longhorn's and Rook's Ceph RBD DaemonSets, registrars fed by
//   arguments or by environment variables;
// - csi-guard.yaml errors name the key; the AdmissionReview answer is a base64 JSONPatch;
// - the real stateguard-webhook serves /mutate-csi and reports an unguarded DaemonSet on /metrics.

#include "webhook/csi_inject.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "core/cluster_state.h"
#include "core/json_yaml.h"
#include "tests/support/process.h"
#include "tests/support/webhook_process.h"
#include "webhook/csi_monitor.h"

namespace stateguard::testing {
namespace {

json loadOne(const std::string& relative) {
  auto text = readFile(sourcePath(relative));
  EXPECT_TRUE(text.ok()) << text.error();
  auto docs = parseDocuments(text.value(), relative);
  EXPECT_TRUE(docs.ok()) << docs.error();
  return docs.ok() && !docs->empty() ? docs->front() : json();
}

CsiGuardConfig shippedConfig() {
  auto text = readFile(sourcePath("manifests/components/csi-injection/csi-guard.yaml"));
  EXPECT_TRUE(text.ok());
  auto c = parseCsiGuardConfig(text.value(), "csi-guard.yaml");
  EXPECT_TRUE(c.ok()) << c.error();
  return c.ok() ? c.value() : CsiGuardConfig{};
}

const CsiDriverTarget& driver(const CsiGuardConfig& c, const std::string& name) {
  for (const auto& d : c.drivers)
    if (d.name == name) return d;
  ADD_FAILURE() << "no driver " << name << " in csi-guard.yaml";
  static CsiDriverTarget none;
  return none;
}

json longhorn() { return loadOne("manifests/csi-sidecar/example/longhorn-csi-plugin.yaml"); }
json rookRbd() { return loadOne("tests/fixtures/csi-guard/rook-csi-rbdplugin.yaml"); }

json inject(const json& ds, const CsiDriverTarget& t, const CsiGuardConfig& c) {
  auto r = injectCsiGuard(ds, t, c);
  EXPECT_TRUE(r.ok()) << r.error();
  return r.ok() ? r.value() : json();
}

json* container(json& ds, const std::string& name) {
  for (auto& c : ds["spec"]["template"]["spec"]["containers"])
    if (c["name"] == name) return &c;
  return nullptr;
}

/// Lists keyed by name (containers, volumes, env, mounts) sorted, so the order kustomize's merge
/// happens to produce does not count; everything else compared as it is.
json normalized(json v) {
  if (v.is_object()) {
    for (auto& [k, x] : v.items()) x = normalized(x);
  } else if (v.is_array()) {
    for (auto& x : v) x = normalized(x);
    const bool named = !v.empty() && std::all_of(v.begin(), v.end(), [](const json& x) {
      return x.is_object() && x.contains("name") && x["name"].is_string();
    });
    if (named)
      std::sort(v.begin(), v.end(),
                [](const json& a, const json& b) { return a["name"] < b["name"]; });
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// One definition: the injection and the kustomize component agree

TEST(CsiInject, KustomizeComponentDoesExactlyWhatTheInjectionDoes) {
  const std::string k = findProgram("kubectl");
  if (k.empty()) GTEST_SKIP() << "kubectl is not installed: cannot render the component";
  CommandResult r = runCommand(k, {"kustomize", sourcePath("manifests/csi-sidecar/example")}, "",
                               std::chrono::milliseconds(60000));
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto objs = parseObjects(r.out, "kustomize");
  ASSERT_TRUE(objs.ok()) << objs.error();
  json kustomized;
  for (auto& o : *objs)
    if (o.object["kind"] == "DaemonSet") kustomized = o.object;
  ASSERT_TRUE(kustomized.is_object());

  const CsiGuardConfig config = shippedConfig();
  const json injected = inject(longhorn(), driver(config, "longhorn"), config);
  EXPECT_EQ(normalized(kustomized).dump(2), normalized(injected).dump(2))
      << "manifests/csi-sidecar/component and webhook/csi_inject.cc add different things to "
         "longhorn-csi-plugin: change both together";
  // And the injection finds nothing to add to what the component made.
  EXPECT_EQ(jsonPatch(kustomized, inject(kustomized, driver(config, "longhorn"), config)),
            json::array());
}

// ---------------------------------------------------------------------------------------------
// The patch

TEST(CsiInject, PatchTurnsThePristineDaemonSetIntoTheInjectedOne) {
  const CsiGuardConfig config = shippedConfig();
  const auto& t = driver(config, "longhorn");
  const json pristine = longhorn();
  const json injected = inject(pristine, t, config);
  const json patch = jsonPatch(pristine, injected);
  ASSERT_FALSE(patch.empty());
  EXPECT_EQ(pristine.patch(patch), injected);

  json ds = injected;
  ASSERT_NE(container(ds, "stateguard-csi"), nullptr);
  const json& args = (*container(ds, "stateguard-csi"))["args"];
  EXPECT_NE(std::find(args.begin(), args.end(), "/dev/longhorn/{volume_id}"), args.end());
  EXPECT_EQ((*container(ds, "node-driver-registrar"))["args"],
            json({"--v=2", "--csi-address=/csi/stateguard.sock",
                  "--kubelet-registration-path=/var/lib/kubelet/plugins/driver.longhorn.io/"
                  "stateguard.sock"}));
  EXPECT_EQ(ds["spec"]["template"]["spec"]["initContainers"][0]["name"], "stateguard-format-gate");
  // Nothing else: the liveness probe still probes the driver's own socket.
  json pristineCopy = pristine;
  EXPECT_EQ(*container(ds, "longhorn-liveness-probe"),
            *container(pristineCopy, "longhorn-liveness-probe"));
  EXPECT_EQ(ds["metadata"], pristine["metadata"]);
}

TEST(CsiInject, AnInjectedDaemonSetGetsAnEmptyPatchEvenWithTheApiserversDefaults) {
  const CsiGuardConfig config = shippedConfig();
  const auto& t = driver(config, "longhorn");
  json stored = inject(longhorn(), t, config);
  // What kube-apiserver fills in after the patch (SetDefaults_*): not a reason to patch again.
  json& sidecar = *container(stored, "stateguard-csi");
  sidecar["readinessProbe"]["successThreshold"] = 1;
  sidecar["readinessProbe"]["failureThreshold"] = 3;
  sidecar["readinessProbe"]["httpGet"]["scheme"] = "HTTP";
  sidecar["livenessProbe"]["httpGet"]["scheme"] = "HTTP";
  sidecar["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] = "v1";
  for (auto& v : stored["spec"]["template"]["spec"]["volumes"])
    if (v["name"] == "stateguard-host-dev") v["hostPath"]["extra"] = "defaulted";
  stored["spec"]["template"]["spec"]["initContainers"][0]["terminationMessagePath"] =
      "/dev/termination-log";
  EXPECT_EQ(jsonPatch(stored, inject(stored, t, config)), json::array());
}

TEST(CsiInject, ARemovedSidecarAndARevertedRegistrarArePutBack) {
  const CsiGuardConfig config = shippedConfig();
  const auto& t = driver(config, "longhorn");
  const json injected = inject(longhorn(), t, config);
  // An UPDATE with the operator's own pod template again (what longhorn-manager writes).
  json dropped = injected;
  auto& cs = dropped["spec"]["template"]["spec"]["containers"];
  cs.erase(std::remove_if(cs.begin(), cs.end(),
                          [](const json& c) { return c["name"] == "stateguard-csi"; }),
           cs.end());
  json pristine = longhorn();
  *container(dropped, "node-driver-registrar") = *container(pristine, "node-driver-registrar");
  const json again = inject(dropped, t, config);
  EXPECT_FALSE(jsonPatch(dropped, again).empty());
  EXPECT_EQ(normalized(again), normalized(injected));
}

TEST(CsiInject, AChangedSidecarIsReplaced) {
  const CsiGuardConfig config = shippedConfig();
  const auto& t = driver(config, "longhorn");
  json ds = inject(longhorn(), t, config);
  (*container(ds, "stateguard-csi"))["args"][7] = "/dev/other/{volume_id}";
  for (auto& e : (*container(ds, "longhorn-csi-plugin"))["env"])
    if (e["name"] == "PATH") e["value"] = "/usr/bin:/bin";
  const json fixed = inject(ds, t, config);
  EXPECT_EQ(normalized(fixed), normalized(inject(longhorn(), t, config)));
}

TEST(CsiInject, RookCephRbdPluginGetsTheGuardOnItsOwnNames) {
  const CsiGuardConfig config = shippedConfig();
  const auto& t = driver(config, "rook-ceph-rbd");
  const json pristine = rookRbd();
  ASSERT_TRUE(t.matches(pristine));
  json ds = inject(pristine, t, config);
  EXPECT_EQ((*container(ds, "driver-registrar"))["args"],
            json({"--v=0", "--csi-address=/csi/stateguard.sock",
                  "--kubelet-registration-path=/var/lib/kubelet/plugins/"
                  "rook-ceph.rbd.csi.ceph.com/stateguard.sock"}));
  const json& sidecar = *container(ds, "stateguard-csi");
  EXPECT_EQ(sidecar["volumeMounts"][0], json({{"name", "plugin-dir"}, {"mountPath", "/csi"}}));
  EXPECT_EQ(sidecar["args"][3], "unix:///csi/csi.sock");
  const json& plugin = *container(ds, "csi-rbdplugin");
  EXPECT_EQ(plugin["env"].back()["name"], "STATEGUARD_LEDGER_DIR");
  bool path = false;
  for (const auto& e : plugin["env"])
    if (e["name"] == "PATH") path = e["value"].get<std::string>().rfind("/stateguard/bin:", 0) == 0;
  EXPECT_TRUE(path);
  json p = pristine;
  EXPECT_EQ(*container(ds, "liveness-prometheus"), *container(p, "liveness-prometheus"));
  EXPECT_EQ(jsonPatch(ds, inject(ds, t, config)), json::array());
}

TEST(CsiInject, RegistrarFedThroughEnvironmentVariablesGetsThemChanged) {
  // The aws-ebs-csi-driver chart's shape: args read $(ADDRESS) and $(DRIVER_REG_SOCK_PATH).
  json ds = longhorn();
  json& reg = *container(ds, "node-driver-registrar");
  reg["args"] = {"--csi-address", "$(ADDRESS)",
                 "--kubelet-registration-path=$(DRIVER_REG_SOCK_PATH)", "--v=2"};
  reg["env"] = {{{"name", "ADDRESS"}, {"value", "/csi/csi.sock"}},
                {{"name", "DRIVER_REG_SOCK_PATH"},
                 {"value", "/var/lib/kubelet/plugins/driver.longhorn.io/csi.sock"}}};
  const CsiGuardConfig config = shippedConfig();
  json out = inject(ds, driver(config, "longhorn"), config);
  const json& r = *container(out, "node-driver-registrar");
  EXPECT_EQ(r["args"], json({"--csi-address", "/csi/stateguard.sock",
                             "--kubelet-registration-path=/var/lib/kubelet/plugins/"
                             "driver.longhorn.io/stateguard.sock",
                             "--v=2"}));
  EXPECT_EQ(r["env"][0]["value"], "/csi/stateguard.sock");
  EXPECT_EQ(r["env"][1]["value"], "/var/lib/kubelet/plugins/driver.longhorn.io/stateguard.sock");
}

TEST(CsiInject, ADaemonSetThatDoesNotFitTheTargetIsAnErrorNamingWhatIsMissing) {
  const CsiGuardConfig config = shippedConfig();
  const auto& t = driver(config, "longhorn");
  json ds = longhorn();
  (*container(ds, "node-driver-registrar"))["name"] = "registrar";
  auto r = injectCsiGuard(ds, t, config);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("no container \"node-driver-registrar\""), std::string::npos)
      << r.error();
  EXPECT_NE(r.error().find("registrar, longhorn-liveness-probe"), std::string::npos) << r.error();

  ds = longhorn();
  (*container(ds, "node-driver-registrar"))["args"] = {"--v=2"};
  r = injectCsiGuard(ds, t, config);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("--csi-address"), std::string::npos) << r.error();

  EXPECT_FALSE(injectCsiGuard(json{{"kind", "DaemonSet"}}, t, config).ok());
}

// ---------------------------------------------------------------------------------------------
// Which DaemonSets

TEST(CsiInject, TargetsMatchByNameOrLabelsInTheirNamespaceOnly) {
  auto c = parseCsiGuardConfig(R"(
drivers:
  - {name: a, namespace: ns1, daemonSet: plugin, driverName: a.csi.io, driverContainer: d,
     devicePathTemplate: "/dev/{volume_id}"}
  - {name: b, namespace: ns2, selector: {matchLabels: {app: node, tier: csi}},
     driverName: b.csi.io, driverContainer: d, devicePathTemplate: "/dev/{volume_id}"}
)",
                               "t");
  ASSERT_TRUE(c.ok()) << c.error();
  auto ds = [](std::string ns, std::string name, json labels) {
    return json{{"metadata", {{"namespace", ns}, {"name", name}, {"labels", labels}}}};
  };
  EXPECT_EQ(c->match(ds("ns1", "plugin", json::object()))->name, "a");
  EXPECT_EQ(c->match(ds("ns1", "other", json::object())), nullptr);
  EXPECT_EQ(c->match(ds("ns2", "plugin", json::object())), nullptr);
  EXPECT_EQ(c->match(ds("ns2", "x", {{"app", "node"}, {"tier", "csi"}, {"more", "1"}}))->name, "b");
  EXPECT_EQ(c->match(ds("ns2", "x", {{"app", "node"}})), nullptr);
  EXPECT_EQ(c->match(ds("ns1", "x", {{"app", "node"}, {"tier", "csi"}})), nullptr);
}

TEST(CsiInject, BadConfigurationIsRefusedWithTheKeyNamed) {
  const std::string ok =
      "name: a, namespace: ns, daemonSet: p, driverName: a.csi.io, driverContainer: d, "
      "devicePathTemplate: \"/dev/{volume_id}\"";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "expected one YAML mapping"},
      {"drivers: {}", "drivers must be a list"},
      {"image: 3\ndrivers: []", "image must be a non-empty string"},
      {"imagePullPolicy: Sometimes\ndrivers: []", "imagePullPolicy must be"},
      {"checkIntervalSeconds: 0\ndrivers: []", "checkIntervalSeconds must be"},
      {"driver: []", "key \"driver\" is unknown"},
      {"kind: Policy\ndrivers: []", "kind must be CSIGuard"},
      {"drivers: [{" + ok + ", colour: red}]", "drivers[0].colour is not a driver setting"},
      {"drivers: [{name: a, namespace: ns, driverName: a.csi.io, driverContainer: d, "
       "devicePathTemplate: /dev/x}]",
       "drivers[0] names no DaemonSet"},
      {"drivers: [{" + ok + ", selector: {matchLabels: {a: b}}}]", "names both daemonSet and"},
      {"drivers: [{name: a, namespace: ns, selector: {matchExpressions: []}, driverName: a.b, "
       "driverContainer: d, devicePathTemplate: /dev/x}]",
       "drivers[0].selector must be {matchLabels"},
      {"drivers: [{" + ok + "}, {" + ok + "}]", "drivers[1].name \"a\" is used twice"},
      {"drivers: [{name: a, namespace: Bad_NS, daemonSet: p, driverName: a.b, driverContainer: "
       "d, devicePathTemplate: /dev/x}]",
       "drivers[0].namespace \"Bad_NS\" is not a namespace"},
      {"drivers: [{name: a, namespace: ns, daemonSet: p, driverContainer: d, "
       "devicePathTemplate: /dev/x}]",
       "drivers[0].driverName is required"},
      {"drivers: [{" + ok + ", kubeletDir: relative/dir}]", "drivers[0].kubeletDir must be an"},
      {"drivers: [{" + ok + ", httpPort: 70000}]", "drivers[0].httpPort must be a port"},
      {"drivers: [{" + ok + ", driverSocket: a/b.sock}]", "drivers[0].driverSocket must be"},
      {"drivers: [{name: a, namespace: ns, daemonSet: p, driverName: a.b, driverContainer: d, "
       "devicePathTemplate: dev/x}]",
       "drivers[0].devicePathTemplate must be"},
      {"drivers: [{" + ok +
           "}, {name: b, namespace: ns, daemonSet: p, driverName: a.b, "
           "driverContainer: d, devicePathTemplate: /dev/x}]",
       "ns/p is named by two drivers"},
      {"drivers: [{", "t:"},
  };
  for (const auto& [text, want] : cases) {
    auto r = parseCsiGuardConfig(text, "t");
    ASSERT_FALSE(r.ok()) << "accepted: " << text;
    EXPECT_NE(r.error().find(want), std::string::npos) << text << "\n -> " << r.error();
  }
  EXPECT_TRUE(parseCsiGuardConfig("drivers: [{" + ok + "}]", "t").ok());
}

TEST(CsiInject, ConfigFileIsReloadedAndABadChangeKeepsTheLastGoodOne) {
  const std::string dir = makeTempDir("sg-csi-reload");
  const std::string path = dir + "/csi-guard.yaml";
  const std::string driver =
      "drivers: [{name: a, namespace: ns, daemonSet: p, driverName: a.csi.io, driverContainer: d, "
      "devicePathTemplate: \"/dev/{volume_id}\"}]\n";
  writeText(path, "image: one:1\n" + driver);
  auto store = CsiGuardStore::fromFile(path, std::chrono::hours(1));  // checked by hand below
  ASSERT_TRUE(store.ok()) << store.error();
  EXPECT_EQ(store.value()->current()->image, "one:1");
  EXPECT_FALSE(store.value()->checkForChange());
  writeText(path, "image: two:2\ncheckIntervalSeconds: 5\n" + driver);
  EXPECT_TRUE(store.value()->checkForChange());
  EXPECT_EQ(store.value()->current()->image, "two:2");
  EXPECT_EQ(store.value()->current()->checkInterval, std::chrono::seconds(5));
  writeText(path, "image: three:3\nchecks: 1\n" + driver);
  EXPECT_FALSE(store.value()->checkForChange());
  EXPECT_EQ(store.value()->current()->image, "two:2");
  removeTree(dir);
}

// ---------------------------------------------------------------------------------------------
// The AdmissionReview answer

std::string unbase64(const std::string& in) {
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    auto pos = kAlphabet.find(c);
    if (pos == std::string::npos) ADD_FAILURE() << "not base64: " << c;
    buf = (buf << 6) | static_cast<uint32_t>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buf >> bits) & 0xff));
    }
  }
  return out;
}

json review(const std::string& operation, const json& object, const json& oldObject = nullptr) {
  const json& o = object.is_null() ? oldObject : object;
  return {{"apiVersion", "admission.k8s.io/v1"},
          {"kind", "AdmissionReview"},
          {"request",
           {{"uid", "u-1"},
            {"kind", {{"group", "apps"}, {"version", "v1"}, {"kind", "DaemonSet"}}},
            {"resource", {{"group", "apps"}, {"version", "v1"}, {"resource", "daemonsets"}}},
            {"name", o["metadata"]["name"]},
            {"namespace", o["metadata"]["namespace"]},
            {"operation", operation},
            {"userInfo", {{"username", "system:serviceaccount:longhorn-system:longhorn"}}},
            {"object", object},
            {"oldObject", oldObject}}}};
}

TEST(CsiInject, Base64IsStandardWithPadding) {
  EXPECT_EQ(base64(""), "");
  EXPECT_EQ(base64("f"), "Zg==");
  EXPECT_EQ(base64("fo"), "Zm8=");
  EXPECT_EQ(base64("foo"), "Zm9v");
  EXPECT_EQ(base64("\xff\xfe\xfd\x00"), "//79");
  EXPECT_EQ(base64(std::string("\xff\xfe\xfd\x00", 4)), "//79AA==");
}

TEST(CsiInject, ReviewAnswerIsABase64JsonPatchOnlyWhenSomethingIsMissing) {
  const CsiGuardConfig config = shippedConfig();
  const json pristine = longhorn();
  CsiMutation m = mutateCsiReview(review("CREATE", pristine).dump(), config);
  ASSERT_EQ(m.httpStatus, 200);
  EXPECT_EQ(m.outcome, "injected");
  json answer = json::parse(m.body);
  EXPECT_EQ(answer["apiVersion"], "admission.k8s.io/v1");
  EXPECT_EQ(answer["kind"], "AdmissionReview");
  EXPECT_EQ(answer["response"]["uid"], "u-1");
  EXPECT_EQ(answer["response"]["allowed"], true);
  EXPECT_EQ(answer["response"]["patchType"], "JSONPatch");
  const json patch = json::parse(unbase64(answer["response"]["patch"]));
  const json injected = pristine.patch(patch);
  EXPECT_EQ(injected, inject(pristine, driver(config, "longhorn"), config));

  // Already guarded: allowed, no patch at all.
  m = mutateCsiReview(review("UPDATE", injected, injected).dump(), config);
  EXPECT_EQ(m.outcome, "unchanged");
  answer = json::parse(m.body);
  EXPECT_FALSE(answer["response"].contains("patch"));
  EXPECT_FALSE(answer["response"].contains("patchType"));

  // UPDATE dropping the sidecar: put back.
  m = mutateCsiReview(review("UPDATE", pristine, injected).dump(), config);
  EXPECT_EQ(m.outcome, "injected");

  // Not named by the policy: untouched.
  json other = pristine;
  other["metadata"]["name"] = "longhorn-manager";
  m = mutateCsiReview(review("CREATE", other).dump(), config);
  EXPECT_EQ(m.outcome, "not-targeted");
  EXPECT_FALSE(json::parse(m.body)["response"].contains("patch"));

  // DELETE: nothing to add.
  m = mutateCsiReview(review("DELETE", nullptr, pristine).dump(), config);
  EXPECT_EQ(m.outcome, "not-targeted");

  // A targeted DaemonSet that cannot take the guard: allowed, with a warning, no patch.
  json broken = pristine;
  broken["spec"]["template"]["spec"]["containers"][0]["name"] = "registrar";
  m = mutateCsiReview(review("CREATE", broken).dump(), config);
  EXPECT_EQ(m.outcome, "failed");
  answer = json::parse(m.body);
  EXPECT_EQ(answer["response"]["allowed"], true);
  EXPECT_FALSE(answer["response"].contains("patch"));
  ASSERT_TRUE(answer["response"]["warnings"].is_array());
  EXPECT_NE(answer["response"]["warnings"][0].get<std::string>().find("UNGUARDED"),
            std::string::npos);

  // Garbage: a 400 naming the problem.
  m = mutateCsiReview("{not json", config);
  EXPECT_EQ(m.httpStatus, 400);
  EXPECT_EQ(m.outcome, "rejected");
}

TEST(CsiInject, ReviewsWithFieldsOfTheWrongTypeAreRefusedNotCrashed) {
  const CsiGuardConfig config = shippedConfig();
  json ds = longhorn();
  ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] = 7;
  ds["spec"]["template"]["spec"]["containers"][0]["name"] = 3;
  for (const json& bad :
       {ds,
        json{{"metadata",
              {{"name", "longhorn-csi-plugin"}, {"namespace", "longhorn-system"}, {"labels", "x"}}},
             {"spec", "nothing"}}}) {
    json r = review("CREATE", longhorn());
    r["request"]["object"] = bad;
    CsiMutation m = mutateCsiReview(r.dump(), config);
    EXPECT_TRUE(m.httpStatus == 200 || m.httpStatus == 400) << m.body;
    EXPECT_FALSE(json::parse(m.body, nullptr, false).is_discarded()) << m.body;
  }
}

// ---------------------------------------------------------------------------------------------
// The unguarded check

json podOf(const json& ds, const std::string& name, bool guarded) {
  json spec = ds["spec"]["template"]["spec"];
  if (!guarded) {
    auto& cs = spec["containers"];
    cs.erase(std::remove_if(cs.begin(), cs.end(),
                            [](const json& c) { return c["name"] == "stateguard-csi"; }),
             cs.end());
  }
  return {
      {"apiVersion", "v1"},
      {"kind", "Pod"},
      {"metadata",
       {{"name", name},
        {"namespace", ds["metadata"]["namespace"]},
        {"ownerReferences",
         {{{"apiVersion", "apps/v1"}, {"kind", "DaemonSet"}, {"name", ds["metadata"]["name"]}}}}}},
      {"spec", spec}};
}

TEST(CsiInject, CheckReportsAnUnguardedTemplateAndUnguardedPods) {
  const CsiGuardConfig config = shippedConfig();
  ObjectStore store;
  const json injected = inject(longhorn(), driver(config, "longhorn"), config);
  store.upsert("DaemonSet", injected);
  store.upsert("DaemonSet", rookRbd());  // created while the injector was down
  store.upsert("Pod", podOf(injected, "longhorn-csi-plugin-a", true));
  store.setReady(true);

  auto found = checkCsiGuard(store, config);
  ASSERT_EQ(found.size(), 2u);
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.driver < b.driver; });
  EXPECT_EQ(found[0].driver, "longhorn");
  EXPECT_FALSE(found[0].unguarded()) << found[0].message();
  EXPECT_EQ(found[0].pods, 1u);
  EXPECT_EQ(found[1].driver, "rook-ceph-rbd");
  EXPECT_TRUE(found[1].unguarded());
  EXPECT_NE(found[1].message().find("no stateguard-csi container"), std::string::npos);
  EXPECT_NE(found[1].message().find("rook-ceph/csi-rbdplugin"), std::string::npos);

  // A pod still from before the injection: the DaemonSet is unguarded until it is replaced.
  store.upsert("Pod", podOf(injected, "longhorn-csi-plugin-b", false));
  found = checkCsiGuard(store, config);
  for (const auto& f : found) {
    if (f.driver != "longhorn") continue;
    EXPECT_TRUE(f.unguarded());
    EXPECT_EQ(f.unguardedPods, std::vector<std::string>{"longhorn-csi-plugin-b"});
    EXPECT_NE(f.message().find("1 of 2 pods"), std::string::npos) << f.message();
  }
}

TEST(CsiInject, MonitorExportsTheMetric) {
  const CsiGuardConfig config = shippedConfig();
  auto store = std::make_shared<ObjectStore>();
  store->upsert("DaemonSet", longhorn());
  store->setReady(true);
  auto c = std::make_shared<const CsiGuardConfig>(config);
  CsiGuardMonitor monitor(
      store, [c] { return c; }, nullptr);
  monitor.checkNow();
  const std::string text = monitor.renderMetrics();
  EXPECT_NE(text.find("stateguard_csi_unguarded{driver=\"longhorn\",namespace=\"longhorn-system\","
                      "daemonset=\"longhorn-csi-plugin\"} 1"),
            std::string::npos)
      << text;

  store->upsert("DaemonSet", inject(longhorn(), driver(config, "longhorn"), config));
  monitor.checkNow();
  EXPECT_NE(monitor.renderMetrics().find("daemonset=\"longhorn-csi-plugin\"} 0"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// The real binary

TEST(CsiInject, WebhookServesMutateCsiAndReportsUnguardedDaemonSets) {
  const std::string dir = makeTempDir("sg-csi-inject");
  DevCerts certs = makeDevCerts(dir + "/certs");
  std::string config = readText(sourcePath("manifests/components/csi-injection/csi-guard.yaml"));
  writeText(dir + "/csi-guard.yaml", config);
  json list = {{"apiVersion", "v1"}, {"kind", "List"}, {"items", {rookRbd()}}};
  writeText(dir + "/state.json", list.dump());
  {
    WebhookProcess webhook(dir, certs, {"--cluster-state", dir + "/state.json"},
                           {"--csi-guard", dir + "/csi-guard.yaml"});
    ASSERT_TRUE(webhook.started()) << webhook.process().stderrText();
    auto client = webhook.client();
    auto res = client->Post("/mutate-csi", review("CREATE", longhorn()).dump(), "application/json");
    ASSERT_TRUE(res) << "no answer";
    ASSERT_EQ(res->status, 200) << res->body;
    json answer = json::parse(res->body);
    EXPECT_EQ(answer["response"]["patchType"], "JSONPatch");
    const json patched = longhorn().patch(json::parse(unbase64(answer["response"]["patch"])));
    json p = patched;
    EXPECT_NE(container(p, "stateguard-csi"), nullptr);

    // /validate is untouched by it; /mutate-csi with GET is a 405.
    res = client->Get("/mutate-csi");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 405);

    std::string metrics;
    for (int i = 0; i < 50; ++i) {
      metrics = webhook.get("/metrics").second;
      if (metrics.find("daemonset=\"csi-rbdplugin\"} 1") != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_NE(metrics.find("stateguard_csi_unguarded{driver=\"rook-ceph-rbd\",namespace=\"rook-"
                           "ceph\",daemonset=\"csi-rbdplugin\"} 1"),
              std::string::npos)
        << metrics;
    EXPECT_NE(metrics.find("stateguard_csi_injections_total{outcome=\"injected\"} 1"),
              std::string::npos)
        << metrics;
  }
  removeTree(dir);
}

TEST(CsiInject, WebhookRefusesToStartWithABadCsiGuardFile) {
  const std::string dir = makeTempDir("sg-csi-bad");
  DevCerts certs = makeDevCerts(dir + "/certs");
  writeText(dir + "/csi-guard.yaml", "drivers: [{name: a}]\n");
  writeText(dir + "/state.json", R"({"apiVersion":"v1","kind":"List","items":[]})");
  CommandResult r = runCommand(
      binaryPath("stateguard-webhook"),
      {"--tls-cert", certs.tlsCert, "--tls-key", certs.tlsKey, "--cluster-state",
       dir + "/state.json", "--csi-guard", dir + "/csi-guard.yaml", "--listen", "127.0.0.1:0"},
      "", std::chrono::milliseconds(10000));
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_NE(r.err.find("drivers[0].namespace is required"), std::string::npos) << r.err;
  removeTree(dir);
}

}  // namespace
}  // namespace stateguard::testing
