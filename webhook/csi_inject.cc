#include "webhook/csi_inject.h"

#include <set>

#include "core/k8s.h"
#include "core/log.h"
#include "webhook/admission.h"
#include "webhook/server.h"

namespace stateguard {

// ---------------------------------------------------------------------------------------------
// Configuration

std::string CsiDriverTarget::describe() const {
  if (!daemonSet.empty()) return name + " (" + ns + "/" + daemonSet + ")";
  std::string labels;
  for (const auto& [k, v] : matchLabels) labels += (labels.empty() ? "" : ",") + k + "=" + v;
  return name + " (" + ns + ", labels " + labels + ")";
}

bool CsiDriverTarget::matches(const json& ds) const {
  if (k8s::namespaceOf(ds) != ns) return false;
  if (!daemonSet.empty()) return k8s::name(ds) == daemonSet;
  for (const auto& [k, v] : matchLabels) {
    auto have = k8s::label(ds, k);
    if (!have || *have != v) return false;
  }
  return !matchLabels.empty();
}

const CsiDriverTarget* CsiGuardConfig::match(const json& ds) const {
  for (const auto& d : drivers)
    if (d.matches(ds)) return &d;
  return nullptr;
}

namespace {

/// RFC 1123 label or subdomain: what Kubernetes accepts for names and namespaces.
bool isDnsName(const std::string& s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  }
  return s.front() != '-' && s.back() != '-' && s.front() != '.' && s.back() != '.';
}

bool isAbsolutePath(const std::string& s) {
  return !s.empty() && s.front() == '/' && s.find("..") == std::string::npos &&
         s.find('\0') == std::string::npos;
}

}  // namespace

Result<CsiGuardConfig> parseCsiGuardConfig(std::string_view text, const std::string& source) {
  auto docs = parseDocuments(text, source);
  if (!docs.ok()) return makeError(docs.error());
  CsiGuardConfig config;
  config.source = source;
  if (docs->size() != 1 || !docs->front().is_object())
    return makeError(source + ": expected one YAML mapping (image, drivers, ...)");
  const json& doc = docs->front();
  auto fail = [&](const std::string& where, const std::string& what) {
    return makeError(source + ": " + where + " " + what);
  };
  static const std::set<std::string> kTop = {
      "apiVersion", "kind", "image", "imagePullPolicy", "checkIntervalSeconds", "drivers"};
  for (const auto& [key, value] : doc.items()) {
    if (!kTop.count(key))
      return fail("key \"" + key + "\"",
                  "is unknown (expected apiVersion, kind, image, imagePullPolicy, "
                  "checkIntervalSeconds, drivers)");
  }
  if (doc.contains("kind") && doc["kind"] != "CSIGuard") return fail("kind", "must be CSIGuard");
  if (doc.contains("image")) {
    if (!doc["image"].is_string() || doc["image"].get<std::string>().empty())
      return fail("image", "must be a non-empty string (the stateguard image)");
    config.image = doc["image"];
  }
  if (doc.contains("imagePullPolicy")) {
    const json& p = doc["imagePullPolicy"];
    if (!p.is_string() || (p != "Always" && p != "IfNotPresent" && p != "Never"))
      return fail("imagePullPolicy", "must be Always, IfNotPresent or Never");
    config.imagePullPolicy = p;
  }
  if (doc.contains("checkIntervalSeconds")) {
    const json& c = doc["checkIntervalSeconds"];
    if (!c.is_number_integer() || c.get<long>() < 1 || c.get<long>() > 3600)
      return fail("checkIntervalSeconds", "must be a whole number of seconds from 1 to 3600");
    config.checkInterval = std::chrono::seconds(c.get<long>());
  }
  if (!doc.contains("drivers") || !doc["drivers"].is_array())
    return fail("drivers", "must be a list of the CSI drivers to guard (it may be empty: [])");

  static const std::set<std::string> kDriverKeys = {"name",
                                                    "namespace",
                                                    "daemonSet",
                                                    "selector",
                                                    "driverName",
                                                    "driverContainer",
                                                    "registrarContainer",
                                                    "socketVolume",
                                                    "driverSocket",
                                                    "devicePathTemplate",
                                                    "kubeletDir",
                                                    "ledgerDir",
                                                    "driverPath",
                                                    "httpPort"};
  std::set<std::string> names, targets;
  size_t i = 0;
  for (const json& d : doc["drivers"]) {
    const std::string at = "drivers[" + std::to_string(i++) + "]";
    if (!d.is_object()) return fail(at, "must be a mapping");
    for (const auto& [key, value] : d.items()) {
      if (!kDriverKeys.count(key))
        return fail(at + "." + key,
                    "is not a driver setting (expected name, namespace, daemonSet or selector, "
                    "driverName, driverContainer, devicePathTemplate, and optionally "
                    "registrarContainer, socketVolume, driverSocket, kubeletDir, ledgerDir, "
                    "driverPath, httpPort)");
    }
    CsiDriverTarget t;
    auto str = [&](const char* key, std::string* out, bool required) -> std::string {
      if (!d.contains(key)) return required ? at + "." + key + " is required" : "";
      if (!d[key].is_string() || d[key].get<std::string>().empty())
        return at + "." + key + " must be a non-empty string";
      *out = d[key].get<std::string>();
      return "";
    };
    for (auto [key, out, required] :
         {std::tuple{"name", &t.name, true}, std::tuple{"namespace", &t.ns, true},
          std::tuple{"daemonSet", &t.daemonSet, false},
          std::tuple{"driverName", &t.driverName, true},
          std::tuple{"driverContainer", &t.driverContainer, true},
          std::tuple{"registrarContainer", &t.registrarContainer, false},
          std::tuple{"socketVolume", &t.socketVolume, false},
          std::tuple{"driverSocket", &t.driverSocket, false},
          std::tuple{"devicePathTemplate", &t.devicePathTemplate, true},
          std::tuple{"kubeletDir", &t.kubeletDir, false},
          std::tuple{"ledgerDir", &t.ledgerDir, false},
          std::tuple{"driverPath", &t.driverPath, false}}) {
      if (auto e = str(key, out, required); !e.empty()) return makeError(source + ": " + e);
    }
    if (!names.insert(t.name).second) return fail(at + ".name", "\"" + t.name + "\" is used twice");
    if (!isDnsName(t.ns, 63)) return fail(at + ".namespace", "\"" + t.ns + "\" is not a namespace");
    if (d.contains("selector")) {
      if (!t.daemonSet.empty())
        return fail(at, "names both daemonSet and selector; give one of them");
      const json& s = d["selector"];
      if (!s.is_object() || !s.contains("matchLabels") || s.size() != 1 ||
          !s["matchLabels"].is_object() || s["matchLabels"].empty())
        return fail(at + ".selector",
                    "must be {matchLabels: {key: value, ...}} with at least one label "
                    "(matchExpressions are not supported)");
      for (const auto& [k, v] : s["matchLabels"].items()) {
        if (!v.is_string())
          return fail(at + ".selector.matchLabels." + k, "must be a string (quote numbers)");
        t.matchLabels[k] = v.get<std::string>();
      }
    } else if (t.daemonSet.empty()) {
      return fail(at, "names no DaemonSet: give daemonSet (its name) or selector (its labels)");
    } else if (!isDnsName(t.daemonSet, 253)) {
      return fail(at + ".daemonSet", "\"" + t.daemonSet + "\" is not a DaemonSet name");
    }
    if (!t.daemonSet.empty() && !targets.insert(t.ns + "/" + t.daemonSet).second)
      return fail(at + ".daemonSet", t.ns + "/" + t.daemonSet + " is named by two drivers");
    if (!isDnsName(t.driverName, 63))
      return fail(at + ".driverName",
                  "\"" + t.driverName + "\" is not a CSI driver name (e.g. driver.longhorn.io)");
    if (t.devicePathTemplate.front() != '/' && t.devicePathTemplate.front() != '{')
      return fail(at + ".devicePathTemplate",
                  "must be an absolute path or start with a placeholder, e.g. "
                  "/dev/longhorn/{volume_id}");
    for (auto [key, value] :
         {std::pair{"kubeletDir", &t.kubeletDir}, std::pair{"ledgerDir", &t.ledgerDir}}) {
      while (value->size() > 1 && value->back() == '/') value->pop_back();
      if (!isAbsolutePath(*value))
        return fail(at + "." + key, "must be an absolute path without \"..\", got " + *value);
    }
    if (t.driverSocket.find('/') != std::string::npos || t.driverSocket == kSidecarSocket)
      return fail(
          at + ".driverSocket",
          "must be a file name in the socket volume (e.g. csi.sock), not " + t.driverSocket);
    if (d.contains("httpPort")) {
      const json& p = d["httpPort"];
      if (!p.is_number_integer() || p.get<long>() < 1 || p.get<long>() > 65535)
        return fail(at + ".httpPort", "must be a port number from 1 to 65535");
      t.httpPort = p.get<int>();
    }
    config.drivers.push_back(std::move(t));
  }
  return config;
}

// ---------------------------------------------------------------------------------------------
// The guard: one definition of every part the injection adds

namespace {

/// True when `have` has every field of `want` with the same value; extra fields in `have` (what
/// the apiserver defaults: terminationMessagePolicy, successThreshold, ...) do not count.
bool covers(const json& have, const json& want) {
  if (want.is_object()) {
    if (!have.is_object()) return false;
    for (const auto& [k, v] : want.items()) {
      auto it = have.find(k);
      if (it == have.end() || !covers(*it, v)) return false;
    }
    return true;
  }
  if (want.is_array()) {
    if (!have.is_array() || have.size() != want.size()) return false;
    for (size_t i = 0; i < want.size(); ++i)
      if (!covers(have[i], want[i])) return false;
    return true;
  }
  return have == want;
}

/// Puts `item` into the list `list` (created when absent) by its `key` ("name", "mountPath"):
/// kept when an item of that key covers it, replaced when it differs, appended when missing.
void upsert(json& parent, const char* list, const json& item, const char* key = "name") {
  if (!parent.contains(list) || !parent[list].is_array()) parent[list] = json::array();
  json& items = parent[list];
  for (auto& existing : items) {
    if (existing.is_object() && existing.value(key, json()) == item[key]) {
      if (!covers(existing, item)) existing = item;
      return;
    }
  }
  items.push_back(item);
}

json* findNamed(json& list, const std::string& name) {
  if (!list.is_array()) return nullptr;
  for (auto& item : list)
    if (item.is_object() && item.value("name", "") == name) return &item;
  return nullptr;
}

std::string namesOf(const json& list) {
  std::string out;
  if (list.is_array())
    for (const auto& item : list)
      if (item.is_object()) out += (out.empty() ? "" : ", ") + item.value("name", "?");
  return out.empty() ? "(none)" : out;
}

/// Where the sidecar mounts the driver's socket volume.
constexpr const char* kSidecarSocketDir = "/csi";
constexpr const char* kGateDir = "/stateguard/bin";

json sidecarContainer(const CsiDriverTarget& t, const CsiGuardConfig& c) {
  const std::string port = std::to_string(t.httpPort);
  return {
      {"name", kCsiSidecarContainer},
      {"image", c.image},
      {"imagePullPolicy", c.imagePullPolicy},
      {"command", {"stateguard-csi"}},
      {"args",
       {"--csi-address", std::string("unix://") + kSidecarSocketDir + "/" + kSidecarSocket,
        "--driver-address", std::string("unix://") + kSidecarSocketDir + "/" + t.driverSocket,
        "--ledger-dir", t.ledgerDir, "--device-path-template", t.devicePathTemplate, "--in-cluster",
        "--http-endpoint", "0.0.0.0:" + port, "--audit-log", "-"}},
      {"env",
       {{{"name", "NODE_NAME"}, {"valueFrom", {{"fieldRef", {{"fieldPath", "spec.nodeName"}}}}}}}},
      {"ports", {{{"name", "stateguard-csi"}, {"containerPort", t.httpPort}, {"protocol", "TCP"}}}},
      {"readinessProbe",
       {{"httpGet", {{"path", "/readyz"}, {"port", t.httpPort}}},
        {"periodSeconds", 5},
        {"timeoutSeconds", 4}}},
      {"livenessProbe",
       {{"httpGet", {{"path", "/healthz"}, {"port", t.httpPort}}},
        {"periodSeconds", 10},
        {"timeoutSeconds", 4},
        {"failureThreshold", 6}}},
      {"resources",
       {{"requests", {{"cpu", "20m"}, {"memory", "64Mi"}}},
        {"limits", {{"cpu", "500m"}, {"memory", "256Mi"}}}}},
      {"securityContext",
       {{"privileged", true},
        {"runAsUser", 0},
        {"runAsNonRoot", false},
        {"readOnlyRootFilesystem", true}}},
      {"terminationMessagePath", "/tmp/termination-log"},
      {"terminationMessagePolicy", "FallbackToLogsOnError"},
      {"volumeMounts",
       {{{"name", t.socketVolume}, {"mountPath", kSidecarSocketDir}},
        {{"name", "stateguard-host-dev"}, {"mountPath", "/dev"}, {"readOnly", true}},
        {{"name", "stateguard-kubelet-dir"},
         {"mountPath", t.kubeletDir},
         {"readOnly", true},
         {"mountPropagation", "HostToContainer"}},
        {{"name", "stateguard-ledger"}, {"mountPath", t.ledgerDir}}}},
  };
}

json formatGateContainer(const CsiGuardConfig& c) {
  return {{"name", kFormatGateContainer},
          {"image", c.image},
          {"imagePullPolicy", c.imagePullPolicy},
          {"command", {"stateguard-format-gate", "install", kGateDir}},
          {"resources",
           {{"requests", {{"cpu", "10m"}, {"memory", "16Mi"}}},
            {"limits", {{"cpu", "100m"}, {"memory", "64Mi"}}}}},
          {"securityContext",
           {{"runAsNonRoot", true},
            {"runAsUser", 65532},
            {"readOnlyRootFilesystem", true},
            {"allowPrivilegeEscalation", false},
            {"capabilities", {{"drop", {"ALL"}}}},
            {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
          {"volumeMounts", {{{"name", "stateguard-format-gate"}, {"mountPath", kGateDir}}}}};
}

std::vector<json> guardVolumes(const CsiDriverTarget& t) {
  return {
      {{"name", "stateguard-format-gate"}, {"emptyDir", {{"sizeLimit", "32Mi"}}}},
      {{"name", "stateguard-ledger"},
       {"hostPath", {{"path", t.ledgerDir}, {"type", "DirectoryOrCreate"}}}},
      {{"name", "stateguard-host-dev"}, {"hostPath", {{"path", "/dev"}, {"type", "Directory"}}}},
      {{"name", "stateguard-kubelet-dir"},
       {"hostPath", {{"path", t.kubeletDir}, {"type", "Directory"}}}}};
}

/// The registrar's socket paths after the change: inside its container, and on the host.
struct RegistrarPaths {
  std::string inContainer, onHost;
};

Result<RegistrarPaths> registrarPaths(const json& registrar, const CsiDriverTarget& t,
                                      const std::string& where) {
  std::string dir;
  if (registrar.contains("volumeMounts") && registrar["volumeMounts"].is_array())
    for (const auto& m : registrar["volumeMounts"])
      if (m.is_object() && m.value("name", "") == t.socketVolume) dir = m.value("mountPath", "");
  if (dir.empty())
    return makeError(where + ": container " + t.registrarContainer + " mounts no volume \"" +
                     t.socketVolume + "\" (socketVolume: the volume holding the driver's socket)");
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return RegistrarPaths{dir + "/" + kSidecarSocket,
                        t.kubeletDir + "/plugins/" + t.driverName + "/" + kSidecarSocket};
}

/// Points node-driver-registrar at the sidecar: --csi-address (the socket it asks) and
/// --kubelet-registration-path (the socket it announces), in `--flag=value` or `--flag value`
/// form, and the ADDRESS / DRIVER_REG_SOCK_PATH variables charts feed them through.
Result<bool> pointRegistrar(json& registrar, const RegistrarPaths& p, const std::string& where) {
  bool sawAddress = false, sawRegistration = false;
  if (registrar.contains("args") && registrar["args"].is_array()) {
    json& args = registrar["args"];
    for (size_t i = 0; i < args.size(); ++i) {
      if (!args[i].is_string()) continue;
      const std::string a = args[i];
      for (auto [flag, value, seen] :
           {std::tuple{std::string("--csi-address"), &p.inContainer, &sawAddress},
            std::tuple{std::string("--kubelet-registration-path"), &p.onHost, &sawRegistration}}) {
        if (a.rfind(flag + "=", 0) == 0) {
          args[i] = flag + "=" + *value;
          *seen = true;
        } else if (a == flag && i + 1 < args.size()) {
          args[i + 1] = *value;
          *seen = true;
        }
      }
    }
  }
  if (!sawAddress || !sawRegistration)
    return makeError(where + ": container " + registrar.value("name", "") + " has no " +
                     (sawAddress ? "--kubelet-registration-path" : "--csi-address") +
                     " argument to point at stateguard-csi (is registrarContainer the "
                     "node-driver-registrar?)");
  if (registrar.contains("env") && registrar["env"].is_array()) {
    for (auto& e : registrar["env"]) {
      if (!e.is_object() || !e.contains("value")) continue;
      if (e.value("name", "") == "ADDRESS") e["value"] = p.inContainer;
      if (e.value("name", "") == "DRIVER_REG_SOCK_PATH") e["value"] = p.onHost;
    }
  }
  return true;
}

}  // namespace

Result<json> injectCsiGuard(const json& daemonSet, const CsiDriverTarget& t,
                            const CsiGuardConfig& c) {
  const std::string where = "DaemonSet " + k8s::ref(daemonSet);
  json out = daemonSet;
  json* spec = nullptr;
  if (out.contains("spec") && out["spec"].is_object() && out["spec"].contains("template") &&
      out["spec"]["template"].is_object() && out["spec"]["template"].contains("spec") &&
      out["spec"]["template"]["spec"].is_object())
    spec = &out["spec"]["template"]["spec"];
  if (spec == nullptr) return makeError(where + " has no spec.template.spec");
  json& containers = (*spec)["containers"];
  json* registrar = findNamed(containers, t.registrarContainer);
  if (registrar == nullptr)
    return makeError(where + " has no container \"" + t.registrarContainer +
                     "\" (registrarContainer of driver " + t.name +
                     "); its containers: " + namesOf(containers));
  if (findNamed(containers, t.driverContainer) == nullptr)
    return makeError(where + " has no container \"" + t.driverContainer +
                     "\" (driverContainer of driver " + t.name +
                     "); its containers: " + namesOf(containers));
  if (findNamed((*spec)["volumes"], t.socketVolume) == nullptr)
    return makeError(where + " has no volume \"" + t.socketVolume + "\" (socketVolume of driver " +
                     t.name + "); its volumes: " + namesOf((*spec)["volumes"]));
  auto paths = registrarPaths(*registrar, t, where);
  if (!paths.ok()) return makeError(paths.error());
  auto pointed = pointRegistrar(*registrar, paths.value(), where);
  if (!pointed.ok()) return makeError(pointed.error());

  upsert(*spec, "containers", sidecarContainer(t, c));
  upsert(*spec, "initContainers", formatGateContainer(c));
  json* driver = findNamed((*spec)["containers"], t.driverContainer);
  upsert(*driver, "env", {{"name", "PATH"}, {"value", std::string(kGateDir) + ":" + t.driverPath}});
  upsert(*driver, "env", {{"name", "STATEGUARD_LEDGER_DIR"}, {"value", t.ledgerDir}});
  upsert(*driver, "volumeMounts",
         {{"name", "stateguard-format-gate"}, {"mountPath", kGateDir}, {"readOnly", true}});
  upsert(*driver, "volumeMounts", {{"name", "stateguard-ledger"}, {"mountPath", t.ledgerDir}});
  for (const json& v : guardVolumes(t)) upsert(*spec, "volumes", v);
  return out;
}

std::vector<std::string> csiGuardGaps(const json& podSpec, const CsiDriverTarget& t) {
  std::vector<std::string> gaps;
  const json kNone = json::array();
  const json& containers = podSpec.is_object() ? podSpec.value("containers", kNone) : kNone;
  const json& inits = podSpec.is_object() ? podSpec.value("initContainers", kNone) : kNone;
  bool sidecar = false, gate = false;
  for (const auto& ct : containers)
    if (ct.is_object() && ct.value("name", "") == kCsiSidecarContainer) sidecar = true;
  for (const auto& ct : inits)
    if (ct.is_object() && ct.value("name", "") == kFormatGateContainer) gate = true;
  if (!sidecar) gaps.push_back("no stateguard-csi container");
  if (!gate) gaps.push_back("no stateguard-format-gate init container");
  for (const auto& ct : containers) {
    if (!ct.is_object() || ct.value("name", "") != t.registrarContainer) continue;
    const std::string want = t.kubeletDir + "/plugins/" + t.driverName + "/" + kSidecarSocket;
    bool announces = false;
    for (const auto& a : ct.value("args", kNone))
      if (a.is_string() && a.get<std::string>().find(kSidecarSocket) != std::string::npos)
        announces = true;
    for (const auto& e : ct.value("env", kNone))
      if (e.is_object() && e.value("value", "") == want) announces = true;
    if (!announces)
      gaps.push_back(t.registrarContainer + " announces the driver's own socket, not " + want);
  }
  return gaps;
}

json jsonPatch(const json& from, const json& to) { return json::diff(from, to); }

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t n = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) |
                       uint32_t(uint8_t(in[i + 2]));
    for (int shift : {18, 12, 6, 0}) out.push_back(kAlphabet[(n >> shift) & 63]);
  }
  if (i < in.size()) {
    uint32_t n = uint32_t(uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) n |= uint32_t(uint8_t(in[i + 1])) << 8;
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The mutating review

namespace {
CsiMutation mutate(std::string_view body, const CsiGuardConfig& config);
}  // namespace

CsiMutation mutateCsiReview(std::string_view body, const CsiGuardConfig& config) {
  try {
    return mutate(body, config);
  } catch (const std::exception& e) {
    // A field of an unexpected type in a hand-made review (the apiserver sends typed objects):
    // a 400 naming it, never a crash.
    CsiMutation m;
    auto [code, out] = rejectedReview(body.size(), std::string("unexpected content: ") + e.what());
    m.httpStatus = code;
    m.body = std::move(out);
    m.outcome = "rejected";
    m.detail = e.what();
    return m;
  }
}

namespace {
CsiMutation mutate(std::string_view body, const CsiGuardConfig& config) {
  CsiMutation m;
  auto request = decodeReview(body);
  if (!request.ok()) {
    auto [code, out] = rejectedReview(body.size(), request.error());
    m.httpStatus = code;
    m.body = std::move(out);
    m.outcome = "rejected";
    m.detail = request.error();
    return m;
  }
  const AdmissionRequest& req = request.value();
  json response = reviewResponseJson(req.uid, AdmissionResponse{});
  json& resp = response["response"];
  m.object = req.kind + " " + req.ns + "/" + req.name;
  m.outcome = "not-targeted";
  const CsiDriverTarget* target = nullptr;
  if (req.kind == "DaemonSet" && req.group == "apps" && req.subResource.empty() &&
      (req.operation == "CREATE" || req.operation == "UPDATE") && req.object.is_object()) {
    json object = req.object;
    // On CREATE with generateName the namespace may only be in the request.
    if (k8s::namespaceOf(object).empty()) object["metadata"]["namespace"] = req.ns;
    target = config.match(object);
    if (target != nullptr) {
      auto injected = injectCsiGuard(object, *target, config);
      if (!injected.ok()) {
        m.outcome = "failed";
        m.detail = injected.error();
        // Allowed all the same: refusing would leave the nodes without the driver at all
        // (an operator that deletes and recreates its DaemonSet would have none). The unguarded
        // check reports it.
        resp["warnings"] =
            json::array({"stateguard could not add its CSI guard, the driver will run UNGUARDED: " +
                         injected.error().substr(0, 200)});
      } else {
        // The patch is computed against the object as sent (namespace included as sent).
        json patch = jsonPatch(object, injected.value());
        if (!req.object.contains("metadata") || !req.object["metadata"].contains("namespace")) {
          // Do not add the namespace the apiserver fills in itself.
          json filtered = json::array();
          for (const auto& op : patch)
            if (op.value("path", "") != "/metadata/namespace") filtered.push_back(op);
          patch = std::move(filtered);
        }
        if (patch.empty()) {
          m.outcome = "unchanged";
        } else {
          m.outcome = "injected";
          m.detail =
              std::to_string(patch.size()) + " patch operations for driver " + target->describe();
          resp["patchType"] = "JSONPatch";
          resp["patch"] = base64(patch.dump());
        }
      }
    }
  }
  m.body = response.dump(-1, ' ', false, json::error_handler_t::replace);
  return m;
}
}  // namespace

std::pair<int, std::string> CsiInjector::handle(const std::string& body) {
  CsiGuardConfigPtr config = store_->current();
  CsiMutation m = mutateCsiReview(body, *config);
  if (m.outcome == "injected") {
    log::info("csi-guard: added the guard to " + m.object + ": " + m.detail);
  } else if (m.outcome == "failed") {
    log::error("csi-guard: could not add the guard to " + m.object +
               ", its driver runs UNGUARDED: " + m.detail);
  } else if (m.outcome == "rejected") {
    log::warn("csi-guard: unreadable AdmissionReview on /mutate-csi: " + m.detail);
  }
  {
    std::lock_guard lock(mu_);
    ++outcomes_[m.outcome];
  }
  return {m.httpStatus, std::move(m.body)};
}

std::string CsiInjector::renderMetrics() const {
  std::lock_guard lock(mu_);
  std::string out =
      "# HELP stateguard_csi_injections_total Reviews on /mutate-csi by outcome: injected, "
      "unchanged (already guarded), not-targeted, failed (targeted but the DaemonSet cannot take "
      "the guard), rejected (unreadable review).\n# TYPE stateguard_csi_injections_total "
      "counter\n";
  for (const char* outcome : {"injected", "unchanged", "not-targeted", "failed", "rejected"}) {
    auto it = outcomes_.find(outcome);
    out += std::string("stateguard_csi_injections_total{outcome=\"") + outcome + "\"} " +
           std::to_string(it == outcomes_.end() ? 0 : it->second) + "\n";
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The file

Result<std::unique_ptr<CsiGuardStore>> CsiGuardStore::fromFile(
    const std::string& path, std::chrono::milliseconds pollInterval) {
  std::string seen = fileFingerprint(path);
  auto text = readFile(path);
  if (!text.ok()) return makeError("csi-guard: " + text.error());
  auto config = parseCsiGuardConfig(text.value(), path);
  if (!config.ok()) return makeError("csi-guard: " + config.error());
  auto store = std::make_unique<CsiGuardStore>(
      std::make_shared<const CsiGuardConfig>(std::move(config).value()));
  store->path_ = path;
  store->lastSeen_ = seen;
  CsiGuardStore* self = store.get();
  store->poller_ = std::make_unique<Poller>(pollInterval, [self] { self->checkForChange(); });
  return store;
}

CsiGuardStore::~CsiGuardStore() { poller_.reset(); }

CsiGuardConfigPtr CsiGuardStore::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

bool CsiGuardStore::checkForChange() {
  if (path_.empty()) return false;
  std::string seen = fileFingerprint(path_);
  if (seen == lastSeen_) return false;
  lastSeen_ = seen;
  auto text = readFile(path_);
  Result<CsiGuardConfig> config = makeError("not read");
  try {
    config = text.ok() ? parseCsiGuardConfig(text.value(), path_)
                       : Result<CsiGuardConfig>(makeError(text.error()));
  } catch (const std::exception& e) {
    config = makeError(path_ + ": " + e.what());
  }
  if (!config.ok()) {
    log::error("csi-guard " + path_ +
               " changed but is invalid, keeping the last good one: " + config.error());
    return false;
  }
  {
    std::lock_guard lock(mu_);
    current_ = std::make_shared<const CsiGuardConfig>(std::move(config).value());
  }
  log::info("csi-guard reloaded from " + path_);
  return true;
}

}  // namespace stateguard
