// The cluster add-on: the kustomize base and overlays (rendered by `kubectl kustomize`), the Helm
// chart (rendered by tests/helm-render, Helm's template engine and function library), and the
// Dockerfile, checked against what the binaries actually do:
// - the ValidatingWebhookConfiguration sends exactly the (group, version, resource, operation)
//   tuples of `stateguardctl rules -o json`, split into entries as manifests/webhook-groups.yaml
//   says (minus the targets kube-apiserver never sends), with the failure policy, timeout,
//   namespaceSelector and service of each entry;
// - the ClusterRole grants exactly list+watch on watchedKinds() (what the cache lists and
//   watches), plus create/patch on events, nothing else;
// - the Deployment is hardened, its flags are ones stateguard-webhook knows, and the policy in
//   the ConfigMap is accepted (and applied) by the real stateguardctl;
// - the kustomize base and the chart produce the same objects;
// - the CSI sidecar component (manifests/csi-sidecar), applied to a copy of Longhorn's
//   longhorn-csi-plugin DaemonSet, adds stateguard-csi with flags the binary knows, puts it
//   between kubelet and the driver (node-driver-registrar announces its socket), puts the format
//   gate first on the driver's PATH, changes nothing else, and grants exactly what the ledger
//   annotation needs on PersistentVolumes;
// - the runtime image installs the Debian package of every library the binaries load.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "core/cluster_state.h"
#include "core/json_yaml.h"
#include "tests/support/helm_render.h"
#include "tests/support/process.h"
#include "tests/support/tls_material.h"
#include "webhook/csi_inject.h"
#include "webhook/scan.h"

namespace stateguard::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

const std::string kNamespace = "stateguard-system";
const std::string kDestructive = "destructive.stateguard.io";
const std::string kAdvisory = "advisory.stateguard.io";
const std::string kSelf = "self.stateguard.io";

// webhook-groups.yaml's namespaceSelector values: NotIn [kube-system, own namespace, extras], or
// In [own namespace].
const std::string kExclusions = "exclusions";
const std::string kOwn = "own";

// ---------------------------------------------------------------------------------------------
// Running tools

std::string kubectl() {
  std::string k = findProgram("kubectl");
  if (k.empty()) {
    ADD_FAILURE() << "kubectl (1.24 or later: its built-in kustomize must support replacements) "
                     "is not installed, so the kustomize manifests cannot be rendered. Debian "
                     "12's kubernetes-client (1.20) is too old; install kubectl from the "
                     "Kubernetes packages.";
  }
  return k;
}

std::vector<json> parseAll(const std::string& text, const std::string& source) {
  auto objs = parseObjects(text, source);
  if (!objs.ok()) {
    ADD_FAILURE() << objs.error();
    return {};
  }
  std::vector<json> out;
  for (auto& o : *objs) out.push_back(std::move(o.object));
  return out;
}

/// `kubectl kustomize DIR`, parsed; empty (with a failure) if it does not render.
std::vector<json> kustomize(const std::string& dir) {
  std::string k = kubectl();
  if (k.empty()) return {};
  CommandResult r = runCommand(k, {"kustomize", dir}, "", milliseconds(60000));
  if (r.exitCode != 0) {
    ADD_FAILURE() << "kubectl kustomize " << dir << " failed (" << r.exitCode << "): " << r.err;
    return {};
  }
  return parseAll(r.out, dir);
}

/// Renders the chart like `helm template stateguard manifests/helm/stateguard -n NS ARGS`.
CommandResult helmTemplate(const std::vector<std::string>& extra,
                           const std::string& ns = kNamespace) {
  std::string error;
  if (helmRenderBinary(&error).empty()) {
    ADD_FAILURE() << error;
    return {};
  }
  return renderHelmChart(extra, ns);
}

std::vector<json> renderChart(const std::vector<std::string>& extra,
                              const std::string& ns = kNamespace) {
  CommandResult r = helmTemplate(extra, ns);
  if (r.exitCode != 0) {
    ADD_FAILURE() << "chart did not render with [" << ::testing::PrintToString(extra)
                  << "]: " << r.err;
    return {};
  }
  EXPECT_NE(r.err.find("kubectl delete validatingwebhookconfiguration stateguard"),
            std::string::npos)
      << "NOTES.txt: " << r.err;
  return parseAll(r.out, "helm template");
}

/// The rules the binary registers (`stateguardctl rules -o json`), read once.
const json& binaryRules() {
  static const json rules = [] {
    CommandResult r = runCommand(binaryPath("stateguardctl"), {"rules", "-o", "json"});
    if (r.exitCode != 0) {
      ADD_FAILURE() << "stateguardctl rules -o json: " << r.err;
      return json::array();
    }
    return json::parse(r.out);
  }();
  return rules;
}

const json& webhookGroups() {
  static const json groups = [] {
    auto docs = parseDocuments(readText(sourcePath("manifests/webhook-groups.yaml")),
                               "manifests/webhook-groups.yaml");
    if (!docs.ok() || docs->size() != 1) {
      ADD_FAILURE() << "manifests/webhook-groups.yaml: "
                    << (docs.ok() ? "not one document" : docs.error());
      return json::object();
    }
    return docs->front();
  }();
  return groups;
}

// ---------------------------------------------------------------------------------------------
// Looking at objects

const json* find(const std::vector<json>& objects, const std::string& kind,
                 const std::string& name) {
  const json* found = nullptr;
  for (const auto& o : objects) {
    if (o.value("kind", "") == kind && o["metadata"].value("name", "") == name) {
      EXPECT_EQ(found, nullptr) << "two " << kind << " " << name;
      found = &o;
    }
  }
  return found;
}

using Key = std::tuple<std::string, std::string, std::string>;  // kind, namespace, name

std::set<Key> keys(const std::vector<json>& objects, bool withNamespaceObject = true) {
  std::set<Key> out;
  for (const auto& o : objects) {
    if (!withNamespaceObject && o.value("kind", "") == "Namespace") continue;
    out.insert({o.value("kind", ""), o["metadata"].value("namespace", ""),
                o["metadata"].value("name", "")});
  }
  return out;
}

std::string describe(const std::set<Key>& ks) {
  std::string s;
  for (const auto& [k, ns, n] : ks) s += " " + k + "/" + (ns.empty() ? "" : ns + "/") + n;
  return s;
}

std::set<std::string> strings(const json& list) {
  std::set<std::string> out;
  if (!list.is_array()) return out;
  for (const auto& v : list) out.insert(v.is_string() ? v.get<std::string>() : v.dump());
  return out;
}

/// Every object is well-formed and unique; returns false (with failures) otherwise.
void checkWellFormed(const std::vector<json>& objects, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_FALSE(objects.empty());
  std::set<Key> seen;
  for (const auto& o : objects) {
    ASSERT_TRUE(o.is_object()) << o.dump();
    EXPECT_TRUE(o.contains("apiVersion") && o["apiVersion"].is_string()) << o.dump();
    EXPECT_TRUE(o.contains("kind") && o["kind"].is_string()) << o.dump();
    ASSERT_TRUE(o.contains("metadata") && o["metadata"].contains("name")) << o.dump();
    Key k{o.value("kind", ""), o["metadata"].value("namespace", ""),
          o["metadata"].value("name", "")};
    EXPECT_TRUE(seen.insert(k).second) << "duplicate " << describe(std::set<Key>{k});
    EXPECT_EQ(o["metadata"]["labels"].value("app.kubernetes.io/name", ""), "stateguard")
        << describe(std::set<Key>{k});
  }
}

// ---------------------------------------------------------------------------------------------
// The webhook configuration

using Tuple = std::tuple<std::string, std::string, std::string, std::string>;  // g, v, res, op

std::string describe(const std::set<Tuple>& ts) {
  std::string s;
  for (const auto& [g, v, r, op] : ts)
    s += " " + (g.empty() ? "core" : g) + "/" + v + "/" + r + ":" + op;
  return s.empty() ? " (none)" : s;
}

/// The tuples one rule of the binary guards.
std::set<Tuple> targetsOf(const json& rule) {
  std::set<Tuple> out;
  for (const auto& t : rule["targets"]) {
    for (const auto& op : t["operations"]) {
      out.insert({t["apiGroup"].get<std::string>(), t["apiVersion"].get<std::string>(),
                  t["resource"].get<std::string>(), op.get<std::string>()});
    }
  }
  return out;
}

struct ExpectedEntry {
  std::string name;
  std::string failurePolicy;
  std::string namespaceSelector;  // kExclusions or kOwn
  std::set<Tuple> tuples;
};

/// Resources kube-apiserver never sends to admission webhooks, whatever a webhook configuration
/// says, so that a broken webhook or policy cannot lock itself in (k8s.io/apiserver:
/// IsExemptAdmissionConfigurationResource). The only ones webhook-groups.yaml may list under
/// neverSent.
const std::set<std::pair<std::string, std::string>> kNeverSentByApiserver = {
    {"admissionregistration.k8s.io", "validatingwebhookconfigurations"},
    {"admissionregistration.k8s.io", "mutatingwebhookconfigurations"},
    {"admissionregistration.k8s.io", "validatingadmissionpolicies"},
    {"admissionregistration.k8s.io", "validatingadmissionpolicybindings"},
};

/// Whether a tuple is one webhook-groups.yaml lists under neverSent for one of its rules.
bool neverSent(const json& neverSentList, const std::string& rule, const Tuple& t) {
  if (!neverSentList.is_array()) return false;
  for (const auto& n : neverSentList) {
    if (n.value("rule", "") == rule && n.value("apiGroup", "") == std::get<0>(t) &&
        n.value("resource", "") == std::get<2>(t))
      return true;
  }
  return false;
}

/// The rule targets kube-apiserver never sends (webhook-groups.yaml's neverSent), checked: each
/// names a registered rule, one of that rule's targets, a resource kube-apiserver really never
/// sends, and why.
std::set<Tuple> neverSentTuples() {
  const json& list = webhookGroups().value("neverSent", json::array());
  EXPECT_TRUE(list.is_array()) << "webhook-groups.yaml: neverSent must be a list";
  std::set<Tuple> out;
  for (const auto& n : list) {
    EXPECT_TRUE(n.is_object()) << n.dump();
    if (!n.is_object()) continue;
    std::set<std::string> fields;
    for (const auto& [k, v] : n.items()) fields.insert(k);
    EXPECT_EQ(fields, (std::set<std::string>{"rule", "apiGroup", "resource", "why"})) << n.dump();
    EXPECT_FALSE(n.value("why", "").empty()) << n.dump() << ": say why";
    const std::pair<std::string, std::string> gr{n.value("apiGroup", ""), n.value("resource", "")};
    EXPECT_TRUE(kNeverSentByApiserver.count(gr))
        << n.dump() << ": kube-apiserver does send " << gr.second
        << " to webhooks; send it from an entry instead";
    bool found = false;
    for (const auto& r : binaryRules()) {
      if (r["id"] != n.value("rule", "")) continue;
      for (const auto& t : targetsOf(r)) {
        if (std::get<0>(t) == gr.first && std::get<2>(t) == gr.second) {
          out.insert(t);
          found = true;
        }
      }
    }
    EXPECT_TRUE(found) << n.dump() << ": stateguardctl rules lists no such target of that rule";
  }
  return out;
}

/// The webhook entries manifests/webhook-groups.yaml and the binary's rules call for: each
/// group sends its rules' tuples, minus the never-sent ones, minus those an earlier group with
/// the same namespaceSelector already sends (groups with disjoint selectors, exclusions and own,
/// each send a shared tuple for their own namespaces).
std::vector<ExpectedEntry> expectedEntries() {
  const json& groups = webhookGroups();
  const json& rules = binaryRules();
  std::map<std::string, const json*> byId;
  for (const auto& r : rules) byId[r["id"].get<std::string>()] = &r;

  for (const auto& [key, value] : groups.items()) {
    EXPECT_TRUE(key == "groups" || key == "overlap" || key == "neverSent")
        << "webhook-groups.yaml: unknown key " << key
        << " (every rule belongs to a group; only neverSent targets may be left out)";
  }
  const json neverSentList = groups.value("neverSent", json::array());
  std::map<std::string, int> listed;
  std::vector<ExpectedEntry> out;
  // (tuple, namespaceSelector) -> index of the group that sends it there
  std::map<std::pair<Tuple, std::string>, size_t> taken;
  EXPECT_EQ(groups.value("overlap", ""), "first-group-wins");
  for (const auto& g : groups["groups"]) {
    ExpectedEntry e{
        g.value("webhook", ""), g.value("failurePolicy", ""), g.value("namespaceSelector", ""), {}};
    EXPECT_TRUE(e.namespaceSelector == kExclusions || e.namespaceSelector == kOwn)
        << e.name << ": namespaceSelector must be " << kExclusions << " or " << kOwn;
    for (const auto& id : g["rules"]) {
      const std::string rid = id.get<std::string>();
      ++listed[rid];
      auto it = byId.find(rid);
      if (it == byId.end()) {
        ADD_FAILURE() << "webhook-groups.yaml names rule " << rid
                      << ", which stateguardctl rules does not list";
        continue;
      }
      for (const auto& t : targetsOf(*it->second)) {
        if (neverSent(neverSentList, rid, t)) continue;
        // An earlier group with the same namespaceSelector already sends it (first group wins);
        // one with the other (disjoint) selector sends it for other namespaces only, so this
        // group sends it too, for its own.
        const auto earlier = taken.find({t, e.namespaceSelector});
        if (earlier == taken.end()) e.tuples.insert(t);
      }
    }
    for (const auto& t : e.tuples)
      taken.emplace(std::make_pair(t, e.namespaceSelector), out.size());
    out.push_back(std::move(e));
  }
  for (const auto& [id, rule] : byId) {
    EXPECT_EQ(listed[id], 1) << "rule " << id
                             << " must be listed in exactly one group of "
                                "manifests/webhook-groups.yaml (the one whose failure policy and "
                                "namespaces fit it)";
  }
  return out;
}

/// The tuples one ValidatingWebhookConfiguration entry sends (its rules' cross products).
std::set<Tuple> tuplesOf(const json& webhook) {
  std::set<Tuple> out;
  for (const auto& r : webhook["rules"]) {
    for (const auto* field : {"apiGroups", "apiVersions", "resources", "operations"}) {
      EXPECT_TRUE(r.contains(field) && r[field].is_array() && !r[field].empty())
          << webhook["name"] << ": rule without " << field;
      EXPECT_FALSE(strings(r[field]).count("*"))
          << webhook["name"] << ": wildcard in " << field << " would send more than the rules need";
    }
    for (const auto& g : r["apiGroups"])
      for (const auto& v : r["apiVersions"])
        for (const auto& res : r["resources"])
          for (const auto& op : r["operations"])
            out.insert({g.get<std::string>(), v.get<std::string>(), res.get<std::string>(),
                        op.get<std::string>()});
  }
  return out;
}

struct WebhookExpectations {
  std::string ns = kNamespace;
  std::map<std::string, std::string> failurePolicy;  // entry name -> policy, when overridden
  int timeoutSeconds = 5;
  std::set<std::string> alsoExcluded;
  enum class Ca { None, CertManager, Bundle } ca = Ca::None;
  std::string caBundlePem;  // for Ca::Bundle: the CA certificate the caBundle must hold
  /// Rendered for Kubernetes < 1.28: no matchConditions, PV and claim updates in the advisory
  /// (fail-open) entry instead of the destructive one, so volumes bind while the webhook is down.
  bool preMatchConditions = false;
};

/// PersistentVolume and claim UPDATEs: the tuples that move to the advisory entry before 1.28.
const std::set<Tuple>& volumeUpdateTuples() {
  static const std::set<Tuple> kTuples = {{"", "v1", "persistentvolumes", "UPDATE"},
                                          {"", "v1", "persistentvolumeclaims", "UPDATE"}};
  return kTuples;
}

std::string base64Decode(const std::string& in) {
  static const std::string chars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -8;
  for (char c : in) {
    if (c == '=' || c == '\n' || c == '\r' || c == ' ') continue;
    size_t pos = chars.find(c);
    if (pos == std::string::npos) return "<invalid base64>";
    val = (val << 6) + static_cast<int>(pos);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xFF));
      bits -= 8;
    }
  }
  return out;
}

/// Whether a namespaceSelector of kubernetes.io/metadata.name In/NotIn expressions selects the
/// namespace `ns` (a failure for anything else: the entries use nothing else).
bool selects(const json& selector, const std::string& ns) {
  EXPECT_FALSE(selector.contains("matchLabels") && !selector["matchLabels"].empty())
      << selector.dump();
  bool selected = true;
  for (const auto& e : selector.value("matchExpressions", json::array())) {
    EXPECT_EQ(e.value("key", ""), "kubernetes.io/metadata.name") << selector.dump();
    const bool listed = strings(e["values"]).count(ns) > 0;
    const std::string op = e.value("operator", "");
    if (op == "In") {
      selected = selected && listed;
    } else if (op == "NotIn") {
      selected = selected && !listed;
    } else {
      ADD_FAILURE() << "unexpected operator in " << selector.dump();
    }
  }
  return selected;
}

/// The webhook configuration sends exactly the binary's tuples (minus the never-sent ones),
/// split by group, with the agreed settings on every entry.
void checkWebhookConfiguration(const std::vector<json>& objects, const WebhookExpectations& x,
                               const std::string& what) {
  SCOPED_TRACE(what + ": ValidatingWebhookConfiguration stateguard");
  const json* vwc = find(objects, "ValidatingWebhookConfiguration", "stateguard");
  ASSERT_NE(vwc, nullptr);
  EXPECT_EQ((*vwc)["apiVersion"], "admissionregistration.k8s.io/v1");
  const std::vector<ExpectedEntry> expected = expectedEntries();
  const json& hooks = (*vwc)["webhooks"];
  ASSERT_TRUE(hooks.is_array());
  ASSERT_EQ(hooks.size(), expected.size());

  // What must be sent: every target of every rule, minus exactly the never-sent ones.
  std::set<Tuple> all, union_;
  size_t total = 0;
  std::set<std::pair<Tuple, std::string>> perSelector;
  for (const auto& r : binaryRules())
    for (const auto& t : targetsOf(r)) union_.insert(t);
  for (const auto& t : neverSentTuples()) union_.erase(t);
  for (size_t i = 0; i < expected.size(); ++i) {
    const json& h = hooks[i];
    const ExpectedEntry& e = expected[i];
    SCOPED_TRACE(e.name);
    EXPECT_EQ(h.value("name", ""), e.name);
    const std::string policy =
        x.failurePolicy.count(e.name) ? x.failurePolicy.at(e.name) : e.failurePolicy;
    EXPECT_EQ(h.value("failurePolicy", ""), policy);
    EXPECT_EQ(h.value("sideEffects", ""), "None");
    EXPECT_EQ(h["admissionReviewVersions"], json::array({"v1"}));
    EXPECT_EQ(h.value("matchPolicy", ""), "Equivalent");
    ASSERT_TRUE(h.contains("timeoutSeconds") && h["timeoutSeconds"].is_number_integer());
    EXPECT_EQ(h["timeoutSeconds"].get<int>(), x.timeoutSeconds);
    EXPECT_LE(h["timeoutSeconds"].get<int>(), 10) << "well under kube-apiserver's timeout";
    // No objectSelector: the rules look at the objects themselves, and a selector on labels would
    // let whoever may edit the labels remove them to escape the check.
    EXPECT_FALSE(h.contains("objectSelector") && !h["objectSelector"].empty());

    const json& cc = h["clientConfig"];
    EXPECT_FALSE(cc.contains("url"));
    EXPECT_EQ(cc["service"], (json{{"name", "stateguard-webhook"},
                                   {"namespace", x.ns},
                                   {"path", "/validate"},
                                   {"port", 443}}));
    switch (x.ca) {
      case WebhookExpectations::Ca::None:
        EXPECT_FALSE(cc.contains("caBundle"));
        break;
      case WebhookExpectations::Ca::CertManager:
        EXPECT_FALSE(cc.contains("caBundle")) << "cert-manager's CA injector fills it";
        break;
      case WebhookExpectations::Ca::Bundle:
        ASSERT_TRUE(cc.contains("caBundle") && cc["caBundle"].is_string());
        EXPECT_EQ(base64Decode(cc["caBundle"].get<std::string>()), x.caBundlePem);
        break;
    }

    // namespaceSelector: exactly one expression on the namespace name, nothing that narrows it
    // further. exclusions: NotIn kube-system and the webhook's own namespace (and any configured
    // extras). own: In the webhook's own namespace only, and only namespaced resources (a
    // namespaceSelector does not filter cluster-scoped objects, which would all be sent).
    const json& sel = h["namespaceSelector"];
    EXPECT_FALSE(sel.contains("matchLabels") && !sel["matchLabels"].empty());
    ASSERT_TRUE(sel.contains("matchExpressions") && sel["matchExpressions"].size() == 1)
        << sel.dump();
    const json& expr = sel["matchExpressions"][0];
    EXPECT_EQ(expr.value("key", ""), "kubernetes.io/metadata.name");
    if (e.namespaceSelector == kOwn) {
      EXPECT_EQ(expr.value("operator", ""), "In");
      EXPECT_EQ(strings(expr["values"]), std::set<std::string>{x.ns});
      for (const auto& r : h["rules"]) EXPECT_EQ(r.value("scope", ""), "Namespaced") << r.dump();
    } else {
      EXPECT_EQ(expr.value("operator", ""), "NotIn");
      std::set<std::string> excluded = {"kube-system", x.ns};
      excluded.insert(x.alsoExcluded.begin(), x.alsoExcluded.end());
      EXPECT_EQ(strings(expr["values"]), excluded);
    }
    // Who sees what: the own namespace only the own-namespace entries, kube-system and the
    // configured exclusions nobody, any other namespace every other entry.
    EXPECT_EQ(selects(sel, x.ns), e.namespaceSelector == kOwn) << x.ns;
    EXPECT_FALSE(selects(sel, "kube-system"));
    for (const auto& ns : x.alsoExcluded) EXPECT_FALSE(selects(sel, ns)) << ns;
    EXPECT_EQ(selects(sel, "some-app"), e.namespaceSelector == kExclusions);

    std::set<Tuple> want = e.tuples;
    if (x.preMatchConditions && e.name == "destructive.stateguard.io") {
      for (const auto& t : volumeUpdateTuples()) EXPECT_EQ(want.erase(t), 1u);
    }
    if (x.preMatchConditions && e.name == "advisory.stateguard.io")
      want.insert(volumeUpdateTuples().begin(), volumeUpdateTuples().end());
    // Only the destructive entry filters updates with matchConditions (1.28+): the PV binder's
    // updates of PVs and claims must never wait for the webhook.
    const bool filtered = e.name == "destructive.stateguard.io" && !x.preMatchConditions;
    EXPECT_EQ(h.contains("matchConditions"), filtered) << h.dump();
    if (filtered) {
      ASSERT_TRUE(h["matchConditions"].is_array() && h["matchConditions"].size() == 1);
      const std::string cel = h["matchConditions"][0].value("expression", "");
      for (const char* guarded :
           {"request.operation != 'UPDATE'", "kubernetes.io/pv-protection",
            "kubernetes.io/pvc-protection", "stateguard.io/allow", "persistentVolumeReclaimPolicy",
            "spec.replicas", "spec.template", "persistentVolumeClaimRetentionPolicy", "'scale'",
            "ownerReferences"})
        EXPECT_NE(cel.find(guarded), std::string::npos) << "matchConditions miss " << guarded;
    }
    const std::set<Tuple> got = tuplesOf(h);
    EXPECT_EQ(got, want) << "sends:" << describe(got) << "\nshould send:" << describe(want);
    total += got.size();
    all.insert(got.begin(), got.end());
    // Entries with the same selector see the same namespaces; exclusions and own (checked
    // above) see disjoint ones, so a tuple they share is still sent once per request.
    for (const auto& t : got) perSelector.insert({t, e.namespaceSelector});
  }
  EXPECT_EQ(total, perSelector.size()) << "a tuple is sent by two entries that see the same "
                                          "namespaces (the webhook would be called twice for "
                                          "one request)";
  EXPECT_EQ(all, union_) << "sent:" << describe(all) << "\nbinary guards:" << describe(union_);

  const json annotations = (*vwc)["metadata"].value("annotations", json::object());
  if (x.ca == WebhookExpectations::Ca::CertManager) {
    EXPECT_EQ(annotations.value("cert-manager.io/inject-ca-from", ""),
              x.ns + "/stateguard-webhook");
  } else {
    EXPECT_FALSE(annotations.contains("cert-manager.io/inject-ca-from"));
  }
}

/// The cert-manager objects: a CA chain and the serving Certificate the annotation names.
void checkCertManager(const std::vector<json>& objects, const std::string& ns,
                      const std::string& what) {
  SCOPED_TRACE(what + ": cert-manager Certificate");
  const json* cert = find(objects, "Certificate", "stateguard-webhook");
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ((*cert)["apiVersion"], "cert-manager.io/v1");
  EXPECT_EQ((*cert)["metadata"].value("namespace", ""), ns);
  const json& spec = (*cert)["spec"];
  EXPECT_EQ(spec.value("secretName", ""), "stateguard-webhook-tls");
  EXPECT_EQ(strings(spec["dnsNames"]),
            (std::set<std::string>{"stateguard-webhook." + ns + ".svc",
                                   "stateguard-webhook." + ns + ".svc.cluster.local"}));
  EXPECT_TRUE(strings(spec["usages"]).count("server auth"));
  // The issuer it names exists (or is a ClusterIssuer outside the chart).
  const std::string issuerKind = spec["issuerRef"].value("kind", "Issuer");
  if (issuerKind == "Issuer") {
    const json* issuer = find(objects, "Issuer", spec["issuerRef"].value("name", ""));
    ASSERT_NE(issuer, nullptr) << "issuerRef " << spec["issuerRef"].dump();
    if ((*issuer)["spec"].contains("ca")) {
      const std::string caSecret = (*issuer)["spec"]["ca"].value("secretName", "");
      bool made = false;
      for (const auto& o : objects)
        if (o.value("kind", "") == "Certificate" && o["spec"].value("secretName", "") == caSecret)
          made = o["spec"].value("isCA", false);
      EXPECT_TRUE(made) << "no CA Certificate makes " << caSecret;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// RBAC

using Grant = std::tuple<std::string, std::string, std::string>;  // group, resource, verb

std::string describeGrants(const std::set<Grant>& gs) {
  std::string s;
  for (const auto& [g, r, v] : gs) s += " " + (g.empty() ? "core" : g) + "/" + r + ":" + v;
  return s;
}

/// What the cache lists and watches, and what the background scan lists: group and resource from
/// each kind's API path ("/api/v1/pods", "/apis/apps/v1/statefulsets").
std::set<Grant> expectedGrants() {
  std::set<Grant> out;
  std::vector<std::pair<ResourceKind, bool>> kinds;  // kind, watched (else listed by the scan)
  for (const auto& k : watchedKinds()) kinds.emplace_back(k, true);
  for (const auto& k : scan::configurationKinds()) kinds.emplace_back(k, false);
  for (const auto& [k, watched] : kinds) {
    std::vector<std::string> parts;
    std::stringstream ss(k.apiPath);
    std::string p;
    while (std::getline(ss, p, '/'))
      if (!p.empty()) parts.push_back(p);
    std::string group, resource;
    if (parts.size() == 3 && parts[0] == "api") {
      resource = parts[2];
    } else if (parts.size() == 4 && parts[0] == "apis") {
      group = parts[1];
      resource = parts[3];
    } else {
      ADD_FAILURE() << "unexpected API path " << k.apiPath;
      continue;
    }
    out.insert({group, resource, "list"});
    if (!watched) continue;
    out.insert({group, resource, "watch"});
    // An allowance that destroys data is confirmed with a GET of what it read (confirmedLive()).
    if (confirmedLive(k.storeKey())) out.insert({group, resource, "get"});
  }
  // Events on denials: core and events.k8s.io.
  for (const std::string g : {"", "events.k8s.io"})
    for (const std::string v : {"create", "patch"}) out.insert({g, "events", v});
  // The background scan's reports (webhook/policy_reports.cc).
  for (const std::string r : {"policyreports", "clusterpolicyreports"})
    for (const std::string v : {"get", "list", "create", "update", "delete"})
      out.insert({"wgpolicyk8s.io", r, v});
  return out;
}

void checkRbac(const std::vector<json>& objects, const std::string& ns, const std::string& what) {
  SCOPED_TRACE(what + ": RBAC");
  const json* sa = find(objects, "ServiceAccount", "stateguard-webhook");
  ASSERT_NE(sa, nullptr);
  EXPECT_EQ((*sa)["metadata"].value("namespace", ""), ns);
  const json* role = find(objects, "ClusterRole", "stateguard-webhook");
  ASSERT_NE(role, nullptr);
  EXPECT_FALSE(role->contains("aggregationRule"));
  std::set<Grant> got;
  for (const auto& r : (*role)["rules"]) {
    EXPECT_FALSE(r.contains("resourceNames")) << r.dump();
    EXPECT_FALSE(r.contains("nonResourceURLs")) << r.dump();
    for (const auto* field : {"apiGroups", "resources", "verbs"})
      EXPECT_FALSE(strings(r[field]).count("*")) << "wildcard in " << r.dump();
    for (const auto& g : r["apiGroups"])
      for (const auto& res : r["resources"])
        for (const auto& v : r["verbs"])
          got.insert({g.get<std::string>(), res.get<std::string>(), v.get<std::string>()});
  }
  const std::set<Grant> want = expectedGrants();
  EXPECT_EQ(got, want) << "ClusterRole grants:" << describeGrants(got)
                       << "\nthe cache lists+watches (core/cluster_state.cc watchedKinds()), "
                          "live confirmation gets (confirmedLive()), events and the scan's "
                          "PolicyReports need:"
                       << describeGrants(want);
  for (const auto& [g, r, v] : got) {
    if (v != "list" && v != "watch" && v != "get") {
      EXPECT_TRUE(r == "events" || g == "wgpolicyk8s.io")
          << "only events and PolicyReports may be written, not " << g << "/" << r;
    }
  }
  // The scan Lease: created in the webhook's namespace, then read and renewed by name only.
  const json* leaseRole = find(objects, "Role", "stateguard-webhook-scan-lease");
  ASSERT_NE(leaseRole, nullptr);
  EXPECT_EQ((*leaseRole)["metadata"].value("namespace", ""), ns);
  for (const auto& r : (*leaseRole)["rules"]) {
    EXPECT_EQ(strings(r["apiGroups"]), std::set<std::string>{"coordination.k8s.io"});
    EXPECT_EQ(strings(r["resources"]), std::set<std::string>{"leases"});
    if (strings(r["verbs"]) != std::set<std::string>{"create"}) {
      EXPECT_EQ(strings(r["resourceNames"]), std::set<std::string>{"stateguard-scan"}) << r.dump();
      EXPECT_EQ(strings(r["verbs"]), (std::set<std::string>{"get", "update"})) << r.dump();
    }
  }
  const json* leaseBinding = find(objects, "RoleBinding", "stateguard-webhook-scan-lease");
  ASSERT_NE(leaseBinding, nullptr);
  EXPECT_EQ((*leaseBinding)["metadata"].value("namespace", ""), ns);
  EXPECT_EQ((*leaseBinding)["roleRef"].value("name", ""), "stateguard-webhook-scan-lease");
  EXPECT_EQ((*leaseBinding)["subjects"],
            json::array(
                {{{"kind", "ServiceAccount"}, {"name", "stateguard-webhook"}, {"namespace", ns}}}));

  const json* binding = find(objects, "ClusterRoleBinding", "stateguard-webhook");
  ASSERT_NE(binding, nullptr);
  EXPECT_EQ((*binding)["roleRef"], (json{{"apiGroup", "rbac.authorization.k8s.io"},
                                         {"kind", "ClusterRole"},
                                         {"name", "stateguard-webhook"}}));
  EXPECT_EQ((*binding)["subjects"],
            json::array(
                {{{"kind", "ServiceAccount"}, {"name", "stateguard-webhook"}, {"namespace", ns}}}));
}

// ---------------------------------------------------------------------------------------------
// Workload

const json& containerSecurity(const json& c) { return c["securityContext"]; }

void checkWorkload(const std::vector<json>& objects, const std::string& ns, int replicas,
                   const std::string& what,
                   const std::string& tlsSecret = "stateguard-webhook-tls") {
  SCOPED_TRACE(what + ": Deployment, Service, PodDisruptionBudget");
  const json selector = {{"app.kubernetes.io/name", "stateguard"},
                         {"app.kubernetes.io/component", "webhook"}};
  const json* dep = find(objects, "Deployment", "stateguard-webhook");
  ASSERT_NE(dep, nullptr);
  EXPECT_EQ((*dep)["metadata"].value("namespace", ""), ns);
  const json& spec = (*dep)["spec"];
  EXPECT_EQ(spec.value("replicas", 0), replicas);
  EXPECT_EQ(spec["selector"]["matchLabels"], selector);
  EXPECT_EQ(spec["strategy"]["rollingUpdate"].value("maxUnavailable", -1), 0);
  const json& pod = spec["template"];
  for (const auto& [k, v] : selector.items()) EXPECT_EQ(pod["metadata"]["labels"][k], v);
  const json& ps = pod["spec"];
  EXPECT_EQ(ps.value("serviceAccountName", ""), "stateguard-webhook");
  EXPECT_EQ(ps.value("automountServiceAccountToken", false), true);
  EXPECT_EQ(ps["securityContext"].value("runAsNonRoot", false), true);
  EXPECT_EQ(ps["securityContext"]["seccompProfile"].value("type", ""), "RuntimeDefault");
  const json& anti =
      ps["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
  ASSERT_TRUE(anti.is_array() && !anti.empty()) << ps["affinity"].dump();
  EXPECT_EQ(anti[0]["podAffinityTerm"].value("topologyKey", ""), "kubernetes.io/hostname");
  EXPECT_EQ(anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"], selector);

  ASSERT_EQ(ps["containers"].size(), 1u);
  const json& c = ps["containers"][0];
  EXPECT_EQ(c["image"], "ghcr.io/stateguard/stateguard:0.1.0");
  EXPECT_EQ(c["command"], json::array({"stateguard-webhook"}));
  EXPECT_EQ(c["args"], json::array({"--listen", "0.0.0.0:8443", "--metrics-listen", "0.0.0.0:9443",
                                    "--tls-cert", "/etc/stateguard/tls/tls.crt", "--tls-key",
                                    "/etc/stateguard/tls/tls.key", "--policy",
                                    "/etc/stateguard/policy/policy.yaml", "--audit-log", "-",
                                    "--audit-mode", "batch", "--in-cluster"}));
  // Every flag is one the binary knows.
  CommandResult help = runCommand(binaryPath("stateguard-webhook"), {"--help"});
  for (const auto& a : c["args"]) {
    const std::string arg = a.get<std::string>();
    if (arg.rfind("--", 0) == 0) {
      EXPECT_NE((help.out + help.err).find(arg + " "), std::string::npos) << "unknown flag " << arg;
    }
  }
  EXPECT_EQ(c["ports"],
            json::array({{{"name", "https"}, {"containerPort", 8443}, {"protocol", "TCP"}},
                         {{"name", "metrics"}, {"containerPort", 9443}, {"protocol", "TCP"}}}));
  for (const auto& [probe, path] : std::vector<std::pair<std::string, std::string>>{
           {"livenessProbe", "/healthz"}, {"readinessProbe", "/readyz"}}) {
    const json& g = c[probe]["httpGet"];
    EXPECT_EQ(g.value("path", ""), path) << probe;
    EXPECT_EQ(g.value("scheme", ""), "HTTPS") << probe;
    EXPECT_EQ(g.value("port", json()), "https") << probe;
  }
  for (const auto* kind : {"requests", "limits"})
    for (const auto* res : {"cpu", "memory"})
      EXPECT_TRUE(c["resources"][kind].contains(res)) << "resources." << kind << "." << res;
  const json& sc = containerSecurity(c);
  EXPECT_EQ(sc.value("runAsNonRoot", false), true);
  EXPECT_EQ(sc.value("runAsUser", 0), 65532);
  EXPECT_EQ(sc.value("readOnlyRootFilesystem", false), true);
  EXPECT_EQ(sc.value("allowPrivilegeEscalation", true), false);
  EXPECT_EQ(sc["capabilities"]["drop"], json::array({"ALL"}));
  EXPECT_EQ(sc["seccompProfile"].value("type", ""), "RuntimeDefault");

  // Mounts: the TLS Secret and the policy ConfigMap, where the flags point.
  std::map<std::string, std::string> mounts;
  for (const auto& m : c["volumeMounts"]) {
    mounts[m["name"].get<std::string>()] = m["mountPath"].get<std::string>();
    EXPECT_EQ(m.value("readOnly", false), true) << m.dump();
  }
  EXPECT_EQ(mounts["tls"], "/etc/stateguard/tls");
  EXPECT_EQ(mounts["policy"], "/etc/stateguard/policy");
  std::map<std::string, json> volumes;
  for (const auto& v : ps["volumes"]) volumes[v["name"].get<std::string>()] = v;
  EXPECT_EQ(volumes["tls"]["secret"].value("secretName", ""), tlsSecret);
  EXPECT_EQ(volumes["policy"]["configMap"].value("name", ""), "stateguard-policy");

  const json* svc = find(objects, "Service", "stateguard-webhook");
  ASSERT_NE(svc, nullptr);
  EXPECT_EQ((*svc)["metadata"].value("namespace", ""), ns);
  EXPECT_EQ((*svc)["spec"]["selector"], selector);
  ASSERT_EQ((*svc)["spec"]["ports"].size(), 1u);
  EXPECT_EQ((*svc)["spec"]["ports"][0].value("port", 0), 443);
  EXPECT_EQ((*svc)["spec"]["ports"][0].value("targetPort", json()), "https");

  const json* pdb = find(objects, "PodDisruptionBudget", "stateguard-webhook");
  ASSERT_NE(pdb, nullptr);
  EXPECT_EQ((*pdb)["apiVersion"], "policy/v1");
  EXPECT_EQ((*pdb)["metadata"].value("namespace", ""), ns);
  EXPECT_EQ((*pdb)["spec"].value("minAvailable", 0), 1);
  EXPECT_EQ((*pdb)["spec"]["selector"]["matchLabels"], selector);
}

// ---------------------------------------------------------------------------------------------
// Policy

/// The policy file in the ConfigMap.
std::string policyText(const std::vector<json>& objects) {
  const json* cm = find(objects, "ConfigMap", "stateguard-policy");
  if (cm == nullptr || !(*cm)["data"].contains("policy.yaml")) {
    ADD_FAILURE() << "no ConfigMap stateguard-policy with key policy.yaml";
    return "";
  }
  return (*cm)["data"]["policy.yaml"].get<std::string>();
}

json parsedPolicy(const std::string& text) {
  auto docs = parseDocuments(text, "policy.yaml");
  if (!docs.ok() || docs->size() != 1) {
    ADD_FAILURE() << "policy.yaml: " << (docs.ok() ? "not one document" : docs.error());
    return json();
  }
  return docs->front();
}

/// `stateguardctl review --policy <ConfigMap's policy.yaml>` on deleting a bound PV.
int reviewDeleteBoundPv(const std::vector<json>& objects, std::string* output = nullptr) {
  const std::string dir = makeTempDir("sg-manifest-policy");
  writeText(dir + "/policy.yaml", policyText(objects));
  CommandResult r = runCommand(binaryPath("stateguardctl"),
                               {"review", "--policy", dir + "/policy.yaml", "--cluster-state",
                                sourcePath("examples/cluster-state.yaml"),
                                sourcePath("examples/reviews/delete-bound-pv.json")});
  removeTree(dir);
  if (output) *output = r.out + r.err;
  return r.exitCode;
}

/// `stateguardctl review --policy <ConfigMap's policy.yaml>` on `user` changing stateguard's own
/// Deployment in `ns` (what `helm upgrade` sends through the self entry).
int reviewUpdateOwnDeployment(const std::vector<json>& objects, const std::string& ns,
                              const std::string& user, std::string* output = nullptr) {
  const json old = {{"apiVersion", "apps/v1"},
                    {"kind", "Deployment"},
                    {"metadata", {{"name", "stateguard-webhook"}, {"namespace", ns}}},
                    {"spec", {{"replicas", 2}}}};
  json updated = old;
  updated["spec"]["replicas"] = 3;
  const json review = {
      {"apiVersion", "admission.k8s.io/v1"},
      {"kind", "AdmissionReview"},
      {"request",
       {{"uid", "0d6b5f5e-6a3c-4f0e-9d43-1c2b3a4d5e6f"},
        {"kind", {{"group", "apps"}, {"version", "v1"}, {"kind", "Deployment"}}},
        {"resource", {{"group", "apps"}, {"version", "v1"}, {"resource", "deployments"}}},
        {"name", "stateguard-webhook"},
        {"namespace", ns},
        {"operation", "UPDATE"},
        {"userInfo", {{"username", user}, {"groups", {"system:authenticated"}}}},
        {"object", updated},
        {"oldObject", old},
        {"dryRun", false}}}};
  const std::string dir = makeTempDir("sg-manifest-self");
  writeText(dir + "/policy.yaml", policyText(objects));
  writeText(dir + "/review.json", review.dump());
  CommandResult r = runCommand(binaryPath("stateguardctl"),
                               {"review", "--policy", dir + "/policy.yaml", dir + "/review.json"});
  removeTree(dir);
  if (output) *output = r.out + r.err;
  return r.exitCode;
}

// ---------------------------------------------------------------------------------------------
// Comparing the kustomize base with the chart

/// An object without what legitimately differs between kustomize and Helm: labels (Helm adds
/// its own), the policy file's formatting (compared parsed), a caBundle (each has its own).
json comparable(json o) {
  o["metadata"].erase("labels");
  if (o["kind"] == "ConfigMap" && o["data"].contains("policy.yaml"))
    o["data"]["policy.yaml"] = parsedPolicy(o["data"]["policy.yaml"].get<std::string>());
  if (o["kind"] == "ConfigMap" && o["data"].contains("csi-guard.yaml"))
    o["data"]["csi-guard.yaml"] = parsedPolicy(o["data"]["csi-guard.yaml"].get<std::string>());
  if (o["kind"] == "ValidatingWebhookConfiguration" || o["kind"] == "MutatingWebhookConfiguration")
    for (auto& h : o["webhooks"]) h["clientConfig"].erase("caBundle");
  return o;
}

void expectSameObjects(const std::vector<json>& kustomized, const std::vector<json>& chart,
                       const std::string& what) {
  SCOPED_TRACE(what);
  // The chart does not make its namespace: `helm install -n NS --create-namespace` does.
  const auto k = keys(kustomized, false), c = keys(chart, false);
  EXPECT_EQ(k, c) << "kustomize:" << describe(k) << "\nchart:    " << describe(c);
  for (const auto& o : kustomized) {
    const json* other =
        find(chart, o["kind"].get<std::string>(), o["metadata"]["name"].get<std::string>());
    if (other == nullptr) continue;
    EXPECT_EQ(comparable(o).dump(2), comparable(*other).dump(2))
        << o["kind"] << " " << o["metadata"]["name"] << " differs";
  }
}

// ---------------------------------------------------------------------------------------------
// Copy of the manifests for the self-signed overlay (setup.sh writes certificates into it)

struct SelfSignedCopy {
  std::string root;     // temp dir with manifests/ and certs/gen-certs.sh
  std::string overlay;  // root/manifests/overlays/self-signed
  SelfSignedCopy() {
    root = makeTempDir("sg-self-signed");
    fs::copy(sourcePath("manifests"), root + "/manifests", fs::copy_options::recursive);
    fs::remove_all(root + "/manifests/overlays/self-signed/certs");  // a developer's own run
    fs::create_directories(root + "/certs");
    fs::copy_file(sourcePath("certs/gen-certs.sh"), root + "/certs/gen-certs.sh");
    overlay = root + "/manifests/overlays/self-signed";
  }
  ~SelfSignedCopy() { removeTree(root); }
};

// =============================================================================================
// Tests

TEST(WebhookGroups, EveryRuleHasExactlyOneGroupAndTheSplitIsAsAgreed) {
  const std::vector<ExpectedEntry> entries = expectedEntries();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].name, kDestructive);
  EXPECT_EQ(entries[0].failurePolicy, "Fail");
  EXPECT_EQ(entries[0].namespaceSelector, kExclusions);
  EXPECT_EQ(entries[1].name, kAdvisory);
  EXPECT_EQ(entries[1].failurePolicy, "Ignore");
  EXPECT_EQ(entries[1].namespaceSelector, kExclusions);
  EXPECT_EQ(entries[2].name, kSelf);
  EXPECT_EQ(entries[2].failurePolicy, "Ignore") << "a webhook that is down must be repairable";
  EXPECT_EQ(entries[2].namespaceSelector, kOwn);
  const json& groups = webhookGroups();
  EXPECT_EQ(
      strings(groups["groups"][0]["rules"]),
      (std::set<std::string>{"pv-delete", "pvc-delete", "namespace-delete", "protection-finalizer",
                             "reclaim-policy", "statefulset-claims", "backup-lifecycle"}));
  EXPECT_EQ(
      strings(groups["groups"][1]["rules"]),
      (std::set<std::string>{"statefulset-recreate", "break-glass-annotation", "backup-retention",
                             "backup-freshness", "backup-quarantine", "registry-no-fallback",
                             "registry-broken-fallback", "registry-cluster-dns",
                             "registry-self-pull", "registry-probe"}));
  EXPECT_EQ(strings(groups["groups"][2]["rules"]), (std::set<std::string>{"self-protection"}));
  // The self entry: stateguard's Deployment (and its scale) and ConfigMap; not the webhook
  // configuration, which kube-apiserver never sends.
  EXPECT_EQ(entries[2].tuples, (std::set<Tuple>{{"apps", "v1", "deployments", "UPDATE"},
                                                {"apps", "v1", "deployments", "DELETE"},
                                                {"apps", "v1", "deployments/scale", "UPDATE"},
                                                {"", "v1", "configmaps", "UPDATE"},
                                                {"", "v1", "configmaps", "DELETE"}}))
      << describe(entries[2].tuples);
  EXPECT_EQ(
      neverSentTuples(),
      (std::set<Tuple>{
          {"admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "UPDATE"},
          {"admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "DELETE"}}));
  // ConfigMap UPDATEs: the advisory entry (registry mirror rules) everywhere but the excluded
  // namespaces, the self entry in stateguard's own; disjoint selectors, so never both.
  const Tuple cmUpdate{"", "v1", "configmaps", "UPDATE"};
  EXPECT_TRUE(entries[1].tuples.count(cmUpdate));
  EXPECT_TRUE(entries[2].tuples.count(cmUpdate));
  // The overlap the brief names: statefulsets UPDATE goes to the destructive entry only.
  const Tuple stsUpdate{"apps", "v1", "statefulsets", "UPDATE"};
  EXPECT_TRUE(entries[0].tuples.count(stsUpdate));
  EXPECT_FALSE(entries[1].tuples.count(stsUpdate));
  // Every deletion the binary guards outside the webhook's own namespace fails closed (inside
  // it, failing open keeps a down webhook repairable).
  for (const auto& e : entries)
    for (const auto& t : e.tuples)
      if (std::get<3>(t) == "DELETE" && e.namespaceSelector == kExclusions) {
        EXPECT_EQ(e.name, kDestructive) << describe(std::set<Tuple>{t});
      }
}

TEST(WebhookGroups, SelfProtectionDefaultsNameTheInstalledObjects) {
  // When the binary has the self-protection rule, its defaults must name what we install.
  for (const auto& r : binaryRules()) {
    if (r["id"] != "self-protection") continue;
    const json& p = r["params"];
    EXPECT_EQ(p.value("namespace", kNamespace), kNamespace);
    EXPECT_EQ(p.value("deployment", "stateguard-webhook"), "stateguard-webhook");
    EXPECT_EQ(p.value("policyConfigMap", "stateguard-policy"), "stateguard-policy");
    EXPECT_EQ(p.value("webhookConfiguration", "stateguard"), "stateguard");
  }
}

TEST(Kustomize, BaseRendersAndMatchesTheBinary) {
  const auto objects = kustomize(sourcePath("manifests/base"));
  checkWellFormed(objects, "base");
  const json* ns = find(objects, "Namespace", kNamespace);
  ASSERT_NE(ns, nullptr);
  checkWebhookConfiguration(objects, {}, "base");
  checkRbac(objects, kNamespace, "base");
  checkWorkload(objects, kNamespace, 2, "base");
  // No TLS material in the base: the overlays bring it.
  EXPECT_EQ(find(objects, "Secret", "stateguard-webhook-tls"), nullptr);
  // Every namespaced object is in stateguard-system.
  for (const auto& o : objects) {
    const std::string kind = o["kind"];
    if (kind == "Namespace" || kind.rfind("Cluster", 0) == 0 ||
        kind == "ValidatingWebhookConfiguration")
      EXPECT_FALSE(o["metadata"].contains("namespace")) << kind;
    else
      EXPECT_EQ(o["metadata"].value("namespace", ""), kNamespace) << kind;
  }
}

TEST(Kustomize, BasePolicyIsTheExamplePolicyAndTheBinaryEnforcesIt) {
  const auto objects = kustomize(sourcePath("manifests/base"));
  ASSERT_FALSE(objects.empty());
  EXPECT_EQ(parsedPolicy(policyText(objects)),
            parsedPolicy(readText(sourcePath("examples/policy.yaml"))));
  std::string out;
  EXPECT_EQ(reviewDeleteBoundPv(objects, &out), 1) << out;  // parsed, and the PV delete denied
  EXPECT_NE(out.find("\"allowed\": false"), std::string::npos) << out;
}

TEST(Kustomize, CertManagerOverlay) {
  const auto objects = kustomize(sourcePath("manifests/overlays/cert-manager"));
  checkWellFormed(objects, "cert-manager overlay");
  WebhookExpectations x;
  x.ca = WebhookExpectations::Ca::CertManager;
  checkWebhookConfiguration(objects, x, "cert-manager overlay");
  checkCertManager(objects, kNamespace, "cert-manager overlay");
  checkRbac(objects, kNamespace, "cert-manager overlay");
  checkWorkload(objects, kNamespace, 2, "cert-manager overlay");
}

// Only the apiserver may speak (issue 13, docs/client-certificates.md): the NetworkPolicy
// component and the chart's networkPolicy admit the webhook's port only, for the webhook's pods;
// the chart's clientCA mounts the CA and passes --client-ca / --client-cert-names.
TEST(Kustomize, NetworkPolicyComponentAndTheChartsClientCa) {
  const std::string dir = makeTempDir("sg-netpol");
  const std::string rel =
      std::filesystem::relative(sourcePath("manifests"), std::filesystem::path(dir)).string();
  writeText(dir + "/kustomization.yaml", "resources: [" + rel + "/overlays/cert-manager]\n" +
                                             "components: [" + rel +
                                             "/components/network-policy]\n");
  const auto objects = kustomize(dir);
  const json* policy = find(objects, "NetworkPolicy", "stateguard-webhook");
  ASSERT_NE(policy, nullptr) << "the component adds no NetworkPolicy";
  const json* deployment = find(objects, "Deployment", "stateguard-webhook");
  ASSERT_NE(deployment, nullptr);
  EXPECT_EQ((*policy)["metadata"]["namespace"], kNamespace);
  // It selects the webhook's pods, and admits their serving port.
  for (const auto& [key, value] : (*policy)["spec"]["podSelector"]["matchLabels"].items()) {
    EXPECT_EQ((*deployment)["spec"]["template"]["metadata"]["labels"].value(key, ""), value)
        << "the NetworkPolicy selects " << key << "=" << value << ", the pods do not carry it";
  }
  EXPECT_EQ((*policy)["spec"]["ingress"],
            json::parse(R"([{"ports":[{"protocol":"TCP","port":8443}]},
                            {"ports":[{"protocol":"TCP","port":9443}],
                             "from":[{"namespaceSelector":{"matchLabels":
                                 {"kubernetes.io/metadata.name":"monitoring"}}}]}])"));
  EXPECT_EQ((*deployment)["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
            8443);

  const auto chart = renderChart({"--set", "networkPolicy.enabled=true"});
  const json* chartPolicy = find(chart, "NetworkPolicy", "stateguard-webhook");
  ASSERT_NE(chartPolicy, nullptr);
  EXPECT_EQ((*chartPolicy)["spec"], (*policy)["spec"]);
  EXPECT_EQ(find(renderChart({}), "NetworkPolicy", "stateguard-webhook"), nullptr)
      << "the chart ships a NetworkPolicy by default";

  auto tls = makeTlsMaterial(dir + "/ca");
  ASSERT_TRUE(tls.ok()) << tls.error();
  json values = {
      {"clientCA", {{"certificate", tls->caPem}, {"names", {"kube-apiserver-webhook-client"}}}}};
  writeText(dir + "/values.yaml", values.dump());
  const auto withCa = renderChart({"--values", dir + "/values.yaml"});
  removeTree(dir);
  const json* cm = find(withCa, "ConfigMap", "stateguard-client-ca");
  ASSERT_NE(cm, nullptr);
  EXPECT_EQ((*cm)["data"]["ca.crt"].get<std::string>(), tls->caPem);
  const json* d = find(withCa, "Deployment", "stateguard-webhook");
  ASSERT_NE(d, nullptr);
  const json& container = (*d)["spec"]["template"]["spec"]["containers"][0];
  const std::string args = container["args"].dump();
  EXPECT_NE(args.find(R"("--client-ca","/etc/stateguard/client-ca/ca.crt")"), std::string::npos)
      << args;
  EXPECT_NE(args.find(R"("--client-cert-names","kube-apiserver-webhook-client")"),
            std::string::npos)
      << args;
  EXPECT_NE(container["volumeMounts"].dump().find("/etc/stateguard/client-ca"), std::string::npos);
  EXPECT_NE((*d)["spec"]["template"]["spec"]["volumes"].dump().find("stateguard-client-ca"),
            std::string::npos);
  EXPECT_EQ(find(renderChart({}), "Deployment", "stateguard-webhook")
                ->at("spec")["template"]["spec"]["containers"][0]["args"]
                .dump()
                .find("--client-ca"),
            std::string::npos)
      << "the chart asks for client certificates by default";
}

// Kubernetes < 1.28: the pre-1.28 component beside an overlay drops matchConditions and moves PV
// and claim updates to the fail-open entry; the chart does the same from --kube-version.
TEST(Kustomize, Pre128ComponentAndTheChartForOlderClusters) {
  const std::string dir = makeTempDir("sg-pre128");
  const std::string rel =
      std::filesystem::relative(sourcePath("manifests"), std::filesystem::path(dir)).string();
  writeText(dir + "/kustomization.yaml", "resources: [" + rel + "/overlays/cert-manager]\n" +
                                             "components: [" + rel + "/components/pre-1.28]\n");
  const auto objects = kustomize(dir);
  removeTree(dir);
  checkWellFormed(objects, "cert-manager overlay + pre-1.28");
  WebhookExpectations x;
  x.ca = WebhookExpectations::Ca::CertManager;
  x.preMatchConditions = true;
  checkWebhookConfiguration(objects, x, "cert-manager overlay + pre-1.28");

  const auto chart = renderChart({"--kube-version", "v1.26.5"});
  checkWebhookConfiguration(chart, x, "chart for 1.26");
  expectSameObjects(objects, chart, "cert-manager overlay + pre-1.28 vs chart for 1.26");
  const auto current = renderChart({"--kube-version", "v1.28.0"});
  x.preMatchConditions = false;
  checkWebhookConfiguration(current, x, "chart for 1.28");

  // The chart's matchConditions follow a renamed break-glass annotation (kustomize users edit it).
  const auto renamed = renderChart({"--set", "policy.breakGlass.annotation=example.com/allow"});
  const json* vwc = find(renamed, "ValidatingWebhookConfiguration", "stateguard");
  ASSERT_NE(vwc, nullptr);
  const std::string cel = (*vwc)["webhooks"][0]["matchConditions"][0].value("expression", "");
  EXPECT_NE(cel.find("'example.com/allow' in object.metadata.annotations"), std::string::npos)
      << cel;
  EXPECT_EQ(cel.find("stateguard.io/allow"), std::string::npos) << cel;
}

TEST(Kustomize, SelfSignedOverlayAfterSetup) {
  SelfSignedCopy copy;
  std::string k = kubectl();
  ASSERT_FALSE(k.empty());
  // Before setup.sh there are no certificates: the overlay refuses to render.
  CommandResult before = runCommand(k, {"kustomize", copy.overlay}, "", milliseconds(60000));
  EXPECT_NE(before.exitCode, 0) << "rendered without certificates";

  CommandResult setup =
      runCommand("/bin/bash", {copy.overlay + "/setup.sh"}, "", milliseconds(60000));
  ASSERT_EQ(setup.exitCode, 0) << setup.err;
  const std::string ca = readText(copy.overlay + "/certs/ca.crt");
  ASSERT_NE(ca.find("BEGIN CERTIFICATE"), std::string::npos);
  // setup.sh prints the caBundle, like gen-certs.sh.
  EXPECT_EQ(base64Decode(setup.out), ca);

  const auto objects = kustomize(copy.overlay);
  checkWellFormed(objects, "self-signed overlay");
  WebhookExpectations x;
  x.ca = WebhookExpectations::Ca::Bundle;
  x.caBundlePem = ca;
  checkWebhookConfiguration(objects, x, "self-signed overlay");
  checkRbac(objects, kNamespace, "self-signed overlay");
  checkWorkload(objects, kNamespace, 2, "self-signed overlay");

  const json* secret = find(objects, "Secret", "stateguard-webhook-tls");
  ASSERT_NE(secret, nullptr);
  EXPECT_EQ((*secret)["metadata"].value("namespace", ""), kNamespace);
  EXPECT_EQ((*secret)["type"], "kubernetes.io/tls");
  for (const std::string key : {"tls.crt", "tls.key", "ca.crt"}) {
    ASSERT_TRUE((*secret)["data"].contains(key)) << key;
    EXPECT_EQ(base64Decode((*secret)["data"][key].get<std::string>()),
              readText(copy.overlay + "/certs/" + key))
        << key;
  }
  // The serving certificate is for the Service's DNS name and signed by that CA.
  std::string openssl = findProgram("openssl");
  ASSERT_FALSE(openssl.empty());
  CommandResult verify = runCommand(openssl, {"verify", "-CAfile", copy.overlay + "/certs/ca.crt",
                                              copy.overlay + "/certs/tls.crt"});
  EXPECT_EQ(verify.exitCode, 0) << verify.out << verify.err;
  CommandResult text =
      runCommand(openssl, {"x509", "-noout", "-text", "-in", copy.overlay + "/certs/tls.crt"});
  EXPECT_NE(text.out.find("DNS:stateguard-webhook.stateguard-system.svc"), std::string::npos);
}

TEST(Kustomize, NoPrivateKeysInTheTreeAndCertificatesIgnored) {
  for (const auto& entry : fs::recursive_directory_iterator(sourcePath("manifests"))) {
    if (!entry.is_regular_file()) continue;
    const std::string p = entry.path().string();
    if (p.find("/overlays/self-signed/certs/") != std::string::npos) continue;  // git-ignored
    EXPECT_EQ(readText(p).find("PRIVATE KEY"), std::string::npos) << p;
  }
  // manifests/.gitignore keeps setup.sh's output out of git.
  const std::string git = findProgram("git");
  if (!git.empty() && fs::exists(sourcePath(".git"))) {
    CommandResult r = runCommand(git, {"-C", sourcePath(""), "check-ignore", "-q",
                                       "manifests/overlays/self-signed/certs/tls.key"});
    EXPECT_EQ(r.exitCode, 0) << "manifests/overlays/self-signed/certs/ is not git-ignored";
  } else {
    EXPECT_NE(readText(sourcePath("manifests/.gitignore")).find("/overlays/self-signed/certs/"),
              std::string::npos);
  }
}

TEST(HelmChart, DefaultValuesRenderTheSameObjectsAsTheCertManagerOverlay) {
  const auto chart = renderChart({});
  checkWellFormed(chart, "chart (defaults)");
  WebhookExpectations x;
  x.ca = WebhookExpectations::Ca::CertManager;
  checkWebhookConfiguration(chart, x, "chart (defaults)");
  checkCertManager(chart, kNamespace, "chart (defaults)");
  checkRbac(chart, kNamespace, "chart (defaults)");
  checkWorkload(chart, kNamespace, 2, "chart (defaults)");
  std::string out;
  EXPECT_EQ(reviewDeleteBoundPv(chart, &out), 1) << out;
  // `helm upgrade` by a user outside the break-glass groups and allowedUsers is denied.
  EXPECT_EQ(reviewUpdateOwnDeployment(chart, kNamespace, "admin@example.com", &out), 1) << out;
  EXPECT_EQ(parsedPolicy(policyText(chart)),
            parsedPolicy(readText(sourcePath("examples/policy.yaml"))));
  for (const auto& o : chart)
    EXPECT_EQ(o["metadata"]["labels"].value("app.kubernetes.io/managed-by", ""), "Helm");

  expectSameObjects(kustomize(sourcePath("manifests/overlays/cert-manager")), chart,
                    "cert-manager overlay vs chart (defaults)");
}

// The CSI guard injection: the kustomize component beside an overlay and the chart with
// csiGuard.enabled render the same objects (the same drivers, MutatingWebhookConfiguration, flag
// and RBAC); without it neither has any of them.
TEST(HelmChart, CsiGuardValuesRenderTheSameObjectsAsTheCsiInjectionComponent) {
  const std::string dir = makeTempDir("sg-csi-injection");
  const std::string rel =
      std::filesystem::relative(sourcePath("manifests"), std::filesystem::path(dir)).string();
  writeText(dir + "/kustomization.yaml", "resources: [" + rel + "/overlays/cert-manager]\n" +
                                             "components: [" + rel +
                                             "/components/csi-injection]\n");
  const auto objects = kustomize(dir);
  removeTree(dir);
  checkWellFormed(objects, "cert-manager overlay + csi-injection");
  const json* mwc = find(objects, "MutatingWebhookConfiguration", "stateguard-csi");
  ASSERT_NE(mwc, nullptr);
  const json& hook = (*mwc)["webhooks"][0];
  EXPECT_EQ(hook["failurePolicy"], "Ignore");
  EXPECT_EQ(hook["clientConfig"]["service"]["path"], "/mutate-csi");
  EXPECT_EQ(hook["namespaceSelector"]["matchExpressions"][0]["values"],
            json({"longhorn-system", "rook-ceph"}));
  const json* deployment = find(objects, "Deployment", "stateguard-webhook");
  ASSERT_NE(deployment, nullptr);
  const json& args = (*deployment)["spec"]["template"]["spec"]["containers"][0]["args"];
  auto flag = std::find(args.begin(), args.end(), "--csi-guard");
  ASSERT_NE(flag, args.end());
  EXPECT_EQ(*(flag + 1), "/etc/stateguard/policy/csi-guard.yaml");
  const json* config = find(objects, "ConfigMap", "stateguard-policy");
  ASSERT_NE(config, nullptr);
  ASSERT_TRUE((*config)["data"].contains("csi-guard.yaml"));
  ASSERT_TRUE((*config)["data"].contains("policy.yaml"));

  const auto chart = renderChart({"--set", "csiGuard.enabled=true"});
  checkWellFormed(chart, "chart (csiGuard.enabled)");
  // The file the chart renders is one the webhook takes (it refuses to start on a bad one).
  const json* chartConfig = find(chart, "ConfigMap", "stateguard-policy");
  ASSERT_NE(chartConfig, nullptr);
  auto guard =
      parseCsiGuardConfig((*chartConfig)["data"]["csi-guard.yaml"].get<std::string>(), "chart");
  ASSERT_TRUE(guard.ok()) << guard.error();
  EXPECT_EQ(guard->image, "ghcr.io/stateguard/stateguard:0.1.0");
  EXPECT_EQ(guard->drivers.size(), 2u);
  expectSameObjects(objects, chart, "cert-manager overlay + csi-injection vs chart (csiGuard)");

  for (const auto& o : renderChart({}))
    EXPECT_NE(o["kind"], "MutatingWebhookConfiguration") << "csiGuard is off by default";
}

// Monitoring (docs/operations.md, "Monitoring"): the kustomize component beside an overlay and
// the chart's metrics.* values render the same objects; the chart's copies of the alerts and the
// dashboard are the component's; the ServiceMonitor and PodMonitor point at ports that exist;
// nothing of it is rendered by default. What the alerts and panels query is checked against the
// running binaries by monitoring_test.
TEST(HelmChart, MetricsValuesRenderTheSameObjectsAsTheMonitoringComponent) {
  for (const char* file : {"prometheusrule.yaml", "grafana-dashboard.json"}) {
    EXPECT_EQ(
        readText(sourcePath(std::string("manifests/components/monitoring/") + file)),
        readText(sourcePath(std::string("manifests/helm/stateguard/files/monitoring/") + file)))
        << "copy manifests/components/monitoring/" << file
        << " to manifests/helm/stateguard/files/monitoring/";
  }
  const std::string dir = makeTempDir("sg-monitoring");
  const std::string rel =
      std::filesystem::relative(sourcePath("manifests"), std::filesystem::path(dir)).string();
  writeText(dir + "/kustomization.yaml", "resources: [" + rel + "/overlays/cert-manager]\n" +
                                             "components: [" + rel + "/components/monitoring]\n");
  const auto objects = kustomize(dir);
  removeTree(dir);
  checkWellFormed(objects, "cert-manager overlay + monitoring");
  const auto chart = renderChart({"--set", "metrics.serviceMonitor.enabled=true", "--set",
                                  "metrics.podMonitor.enabled=true", "--set",
                                  "metrics.prometheusRule.enabled=true", "--set",
                                  "metrics.grafanaDashboard.enabled=true"});
  checkWellFormed(chart, "chart (metrics.*.enabled)");
  expectSameObjects(objects, chart, "cert-manager overlay + monitoring vs chart (metrics)");

  for (const auto* rendered : {&objects, &chart}) {
    SCOPED_TRACE(rendered == &objects ? "kustomize" : "chart");
    // The ServiceMonitor selects the metrics Service alone, whose port reaches the container's.
    const json* monitor = find(*rendered, "ServiceMonitor", "stateguard-webhook");
    const json* service = find(*rendered, "Service", "stateguard-webhook-metrics");
    const json* deployment = find(*rendered, "Deployment", "stateguard-webhook");
    ASSERT_TRUE(monitor && service && deployment);
    for (const auto& o : *rendered) {
      if (o["kind"] != "Service") continue;
      bool selected = true;
      for (const auto& [k, v] : (*monitor)["spec"]["selector"]["matchLabels"].items())
        selected = selected && o["metadata"]["labels"].value(k, "") == v;
      EXPECT_EQ(selected, o["metadata"]["name"] == "stateguard-webhook-metrics")
          << "ServiceMonitor selects Service " << o["metadata"]["name"];
    }
    const json& endpoint = (*monitor)["spec"]["endpoints"][0];
    const json& port = (*service)["spec"]["ports"][0];
    EXPECT_EQ(endpoint["port"], port["name"]);
    bool containerPort = false;
    for (const auto& p : (*deployment)["spec"]["template"]["spec"]["containers"][0]["ports"])
      containerPort =
          containerPort || (p["name"] == port["targetPort"] && p["containerPort"] == 9443);
    EXPECT_TRUE(containerPort) << "no container port " << port["targetPort"] << " = 9443";
    const json& args = (*deployment)["spec"]["template"]["spec"]["containers"][0]["args"];
    auto flag = std::find(args.begin(), args.end(), "--metrics-listen");
    ASSERT_NE(flag, args.end());
    EXPECT_EQ(*(flag + 1), "0.0.0.0:9443");
    EXPECT_EQ(endpoint["scheme"], "https");
    EXPECT_EQ(endpoint["honorLabels"], true)
        << "the alerts read stateguard_csi_unguarded's own namespace label (monitoring_test)";
    EXPECT_EQ(endpoint["tlsConfig"]["ca"]["secret"]["name"], "stateguard-webhook-tls");
    for (const auto& [k, v] : (*service)["spec"]["selector"].items())
      EXPECT_EQ((*deployment)["spec"]["template"]["metadata"]["labels"].value(k, ""), v);
    // The PodMonitor's port is the one the CSI injection gives the sidecar's container.
    const json* pods = find(*rendered, "PodMonitor", "stateguard-csi");
    ASSERT_NE(pods, nullptr);
    EXPECT_EQ((*pods)["spec"]["podMetricsEndpoints"][0]["port"], "stateguard-csi");
    EXPECT_EQ((*pods)["spec"]["namespaceSelector"]["matchNames"],
              json({"longhorn-system", "rook-ceph"}));
    const json* dashboard = find(*rendered, "ConfigMap", "stateguard-grafana-dashboard");
    ASSERT_NE(dashboard, nullptr);
    EXPECT_EQ((*dashboard)["metadata"]["labels"].value("grafana_dashboard", ""), "1");
    EXPECT_EQ(json::parse((*dashboard)["data"]["stateguard.json"].get<std::string>())["uid"],
              "stateguard");
    ASSERT_NE(find(*rendered, "PrometheusRule", "stateguard"), nullptr);
  }
  // The injected sidecar's container port carries that name (webhook/csi_inject.cc).
  const std::string sidecar = readText(sourcePath("manifests/csi-sidecar/component/sidecar.yaml"));
  EXPECT_NE(sidecar.find("- name: stateguard-csi\n              containerPort: 9810"),
            std::string::npos);

  for (const auto& o : renderChart({})) {
    const std::string kind = o["kind"];
    EXPECT_TRUE(kind != "ServiceMonitor" && kind != "PodMonitor" && kind != "PrometheusRule")
        << kind << " rendered by default";
    EXPECT_NE(o["metadata"]["name"], "stateguard-grafana-dashboard");
  }
}

TEST(HelmChart, ProvidedCertificatesRenderTheSameObjectsAsTheBase) {
  const std::string bundle =
      "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCnRlc3QKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";
  const auto chart = renderChart(
      {"--set", "certificates.mode=provided", "--set", "certificates.provided.caBundle=" + bundle});
  checkWellFormed(chart, "chart (provided certificates)");
  WebhookExpectations x;
  x.ca = WebhookExpectations::Ca::Bundle;
  x.caBundlePem = base64Decode(bundle);
  checkWebhookConfiguration(chart, x, "chart (provided certificates)");
  checkWorkload(chart, kNamespace, 2, "chart (provided certificates)");
  for (const auto& o : chart)
    EXPECT_NE(o["apiVersion"].get<std::string>().rfind("cert-manager.io", 0), 0u) << o.dump();
  expectSameObjects(kustomize(sourcePath("manifests/base")), chart, "base vs chart (provided)");

  // An existing Secret of another name.
  const auto other = renderChart({"--set", "certificates.mode=provided", "--set",
                                  "certificates.provided.caBundle=" + bundle, "--set",
                                  "certificates.provided.secretName=my-tls"});
  checkWorkload(other, kNamespace, 2, "chart (provided, my-tls)", "my-tls");
}

TEST(HelmChart, OverriddenValuesReachTheObjects) {
  const std::string dir = makeTempDir("sg-chart-values");
  writeText(dir + "/values.yaml", R"(replicaCount: 3
policy:
  breakGlass:
    groups: [platform-admins, "stateguard:break-glass"]
  rules:
    pv-delete: {mode: warn}
    namespace-delete: {params: {maxListed: 3}}
    self-protection:
      params:
        allowedUsers: ["system:serviceaccount:flux-system:helm-controller"]
failurePolicy:
  advisory: Fail
timeoutSeconds: 8
namespaceExclusions: [monitoring, kube-system]
resources:
  requests: {cpu: 100m, memory: 128Mi}
  limits: {cpu: "1", memory: 512Mi}
certificates:
  certManager:
    issuerRef: {kind: ClusterIssuer, name: corporate-ca}
)");
  const auto chart = renderChart({"--values", dir + "/values.yaml"}, "guard");
  removeTree(dir);
  checkWellFormed(chart, "chart (overrides)");
  WebhookExpectations x;
  x.ns = "guard";
  x.ca = WebhookExpectations::Ca::CertManager;
  x.failurePolicy[kAdvisory] = "Fail";
  x.timeoutSeconds = 8;
  x.alsoExcluded = {"monitoring"};
  checkWebhookConfiguration(chart, x, "chart (overrides)");
  checkCertManager(chart, "guard", "chart (overrides)");
  checkRbac(chart, "guard", "chart (overrides)");
  checkWorkload(chart, "guard", 3, "chart (overrides)");
  // With an issuer of one's own, the chart makes no CA of its own.
  EXPECT_EQ(find(chart, "Issuer", "stateguard-ca"), nullptr);
  const json* dep = find(chart, "Deployment", "stateguard-webhook");
  ASSERT_NE(dep, nullptr);
  EXPECT_EQ((*dep)["spec"]["template"]["spec"]["containers"][0]["resources"],
            (json{{"requests", {{"cpu", "100m"}, {"memory", "128Mi"}}},
                  {"limits", {{"cpu", "1"}, {"memory", "512Mi"}}}}));

  // The policy: overrides merged into the defaults, and the binary applies them.
  const json policy = parsedPolicy(policyText(chart));
  EXPECT_EQ(policy["breakGlass"]["groups"],
            json::array({"platform-admins", "stateguard:break-glass"}));
  EXPECT_EQ(policy["breakGlass"]["maxDurationHours"], 24);
  EXPECT_EQ(policy["rules"]["pv-delete"]["mode"], "warn");
  EXPECT_EQ(policy["rules"]["namespace-delete"],
            (json{{"mode", "enforce"}, {"params", {{"maxListed", 3}}}}));
  // self-protection guards the objects in the release namespace; allowedUsers replaces the
  // default list, the other parameters keep their defaults.
  EXPECT_EQ(policy["rules"]["self-protection"],
            (json{{"mode", "enforce"},
                  {"params",
                   {{"namespace", "guard"},
                    {"deployment", "stateguard-webhook"},
                    {"policyConfigMap", "stateguard-policy"},
                    {"webhookConfiguration", "stateguard"},
                    {"allowedGroups", {"system:masters"}},
                    {"allowedUsers", {"system:serviceaccount:flux-system:helm-controller"}}}}}));
  // The GitOps controller may upgrade stateguard; another user outside the break-glass groups
  // may not.
  std::string self;
  EXPECT_EQ(reviewUpdateOwnDeployment(chart, "guard",
                                      "system:serviceaccount:flux-system:helm-controller", &self),
            0)
      << self;
  EXPECT_EQ(reviewUpdateOwnDeployment(chart, "guard", "admin@example.com", &self), 1) << self;
  EXPECT_NE(self.find("may not change Deployment guard/stateguard-webhook"), std::string::npos)
      << self;
  std::string out;
  EXPECT_EQ(reviewDeleteBoundPv(chart, &out), 0) << out;  // pv-delete: warn -> allowed
  EXPECT_NE(out.find("\"allowed\": true"), std::string::npos) << out;
  EXPECT_NE(out.find("warnings"), std::string::npos) << out;
}

TEST(HelmChart, SetFlagsAndModeOff) {
  const auto chart =
      renderChart({"--set", "policy.rules.pv-delete.mode=off", "--set", "replicaCount=4", "--set",
                   "failurePolicy.destructive=Ignore", "--set", "failurePolicy.self=Fail"});
  checkWorkload(chart, kNamespace, 4, "chart (--set)");
  WebhookExpectations x;
  x.ca = WebhookExpectations::Ca::CertManager;
  x.failurePolicy[kDestructive] = "Ignore";
  x.failurePolicy[kSelf] = "Fail";
  checkWebhookConfiguration(chart, x, "chart (--set)");
  EXPECT_EQ(reviewDeleteBoundPv(chart), 0);
}

TEST(HelmChart, ValuesOfAnOlderReleaseWithoutFailurePolicySelfRender) {
  // `helm upgrade --reuse-values` of a release installed before the self entry existed: its
  // values have no failurePolicy.self (a null removes the key, as there), and the entry keeps
  // its default, Ignore.
  const std::string dir = makeTempDir("sg-chart-old-values");
  writeText(dir + "/values.yaml", "failurePolicy:\n  self: null\n");
  CommandResult r = helmTemplate({"--values", dir + "/values.yaml"});
  removeTree(dir);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.err.find("self.stateguard.io         failurePolicy Ignore"), std::string::npos)
      << "NOTES.txt: " << r.err;
  WebhookExpectations x;
  x.ca = WebhookExpectations::Ca::CertManager;
  checkWebhookConfiguration(parseAll(r.out, "helm template"), x, "chart (no failurePolicy.self)");
}

TEST(HelmChart, ScanValuesReachTheWebhooksFlags) {
  auto argsOf = [](const std::vector<json>& chart) {
    const json* d = find(chart, "Deployment", "stateguard-webhook");
    return d ? (*d)["spec"]["template"]["spec"]["containers"][0]["args"].dump() : "";
  };
  const std::string defaults = argsOf(renderChart({}));
  EXPECT_EQ(defaults.find("--scan-"), std::string::npos) << "defaults need no flag: " << defaults;
  const std::string set =
      argsOf(renderChart({"--set", "scan.interval=30m", "--set-string", "scan.afterChange=1m"}));
  EXPECT_NE(set.find(R"("--scan-interval","30m")"), std::string::npos) << set;
  EXPECT_NE(set.find(R"("--scan-after-change","1m")"), std::string::npos) << set;
  EXPECT_NE(argsOf(renderChart({"--set", "scan.enabled=false"})).find("--no-scan"),
            std::string::npos);
}

TEST(HelmChart, InvalidValuesAreRefused) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--set", "failurePolicy.destructive=Maybe"},
       "failurePolicy.destructive must be Fail or Ignore"},
      {{"--set", "failurePolicy.self=fail"}, "failurePolicy.self must be Fail or Ignore"},
      {{"--set", "timeoutSeconds=30"}, "timeoutSeconds must be between 1 and 10"},
      {{"--set", "certificates.mode=provided"}, "certificates.provided.caBundle is required"},
      {{"--set", "certificates.mode=vault"}, "certificates.mode must be certManager or provided"},
      {{"--set", "replicaCount=0"}, "replicaCount must be at least 1"},
      {{"--set", "csiGuard.enabled=true", "--set", "csiGuard.failurePolicy=Sometimes"},
       "csiGuard.failurePolicy must be Fail or Ignore"},
      {{"--set", "csiGuard.enabled=true", "--set", "csiGuard.drivers={}"},
       "csiGuard.enabled is true but csiGuard.drivers is empty"},
      // A number (seconds?) or a Go duration the webhook would refuse at start, said at render.
      {{"--set", "scan.interval=600"},
       "scan.interval must be a duration such as 10m (a number with s, m, h or d), not 600"},
      {{"--set", "scan.afterChange=1m30s"}, "scan.afterChange must be a duration such as 15s"},
  };
  for (const auto& c : cases) {
    CommandResult r = helmTemplate(c.args);
    EXPECT_NE(r.exitCode, 0) << ::testing::PrintToString(c.args);
    EXPECT_NE(r.err.find(c.message), std::string::npos)
        << ::testing::PrintToString(c.args) << ": " << r.err;
  }
  // A broken policy value renders, but the binary refuses the file and names the key.
  const auto chart = renderChart({"--set", "policy.rules.pv-delete.mode=sometimes"});
  std::string out;
  EXPECT_EQ(reviewDeleteBoundPv(chart, &out), 2) << out;
  EXPECT_NE(out.find("pv-delete"), std::string::npos) << out;
}

// ---------------------------------------------------------------------------------------------
// The CSI sidecar component (manifests/csi-sidecar): stateguard-csi added to a CSI driver's
// node DaemonSet, checked on the worked example (Longhorn's longhorn-csi-plugin)

const std::string kCsiDaemonSet = "longhorn-csi-plugin";
const std::string kCsiNamespace = "longhorn-system";
const std::string kDriverContainer = "longhorn-csi-plugin";
const std::string kRegistrarContainer = "node-driver-registrar";
const std::string kSidecarContainer = "stateguard-csi";
const std::string kGateDir = "/stateguard/bin";

/// The flags stateguard-csi takes (its --help), and whether each takes a value.
const std::map<std::string, bool> kSidecarFlags = {
    {"--csi-address", true},          {"--driver-address", true}, {"--ledger-dir", true},
    {"--device-path-template", true}, {"--device-root", true},    {"--in-cluster", false},
    {"--kubeconfig", true},           {"--node-name", true},      {"--driver-name", true},
    {"--http-endpoint", true},        {"--audit-log", true}};

/// Flags of a container's args: "--flag value", "--flag=value" or a boolean "--flag"; a
/// failure for anything else.
std::multimap<std::string, std::string> sidecarFlags(const json& args) {
  std::multimap<std::string, std::string> out;
  std::vector<std::string> a;
  for (const auto& v : args) a.push_back(v.get<std::string>());
  for (size_t i = 0; i < a.size(); ++i) {
    std::string flag = a[i], value;
    if (flag.rfind("--", 0) != 0) {
      ADD_FAILURE() << "stateguard-csi argument " << flag << " is not a flag";
      continue;
    }
    const auto eq = flag.find('=');
    if (eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag.resize(eq);
    }
    auto known = kSidecarFlags.find(flag);
    if (known == kSidecarFlags.end()) {
      ADD_FAILURE() << "stateguard-csi has no flag " << flag;
      continue;
    }
    if (known->second && eq == std::string::npos) {
      if (i + 1 >= a.size()) {
        ADD_FAILURE() << flag << " without a value";
        continue;
      }
      value = a[++i];
    }
    EXPECT_TRUE(known->second || eq == std::string::npos) << flag << " takes no value";
    out.emplace(flag, value);
  }
  return out;
}

std::string flagValue(const std::multimap<std::string, std::string>& flags,
                      const std::string& flag) {
  EXPECT_EQ(flags.count(flag), 1u) << flag;
  auto it = flags.find(flag);
  return it == flags.end() ? "" : it->second;
}

/// A container of a pod spec by name (among containers or initContainers).
const json* containerNamed(const json& podSpec, const std::string& name,
                           const char* list = "containers") {
  const json* found = nullptr;
  if (!podSpec.contains(list)) return nullptr;
  for (const auto& c : podSpec[list]) {
    if (c.value("name", "") == name) {
      EXPECT_EQ(found, nullptr) << "two " << list << " named " << name;
      found = &c;
    }
  }
  return found;
}

/// `$(VAR)` references in a string replaced with the container's literal env values.
std::string expandEnv(std::string s, const json& container) {
  for (const auto& e : container.value("env", json::array())) {
    if (!e.contains("value")) continue;
    const std::string ref = "$(" + e["name"].get<std::string>() + ")";
    const std::string value = e["value"].get<std::string>();
    for (size_t at = s.find(ref); at != std::string::npos; at = s.find(ref, at + value.size()))
      s.replace(at, ref.size(), value);
  }
  return s;
}

/// The value of a "--flag=value" argument of a container, with env references expanded.
std::string argValue(const json& container, const std::string& flag) {
  std::string found;
  int n = 0;
  for (const auto& a : container.value("args", json::array())) {
    const std::string arg = a.get<std::string>();
    if (arg.rfind(flag + "=", 0) == 0) {
      found = expandEnv(arg.substr(flag.size() + 1), container);
      ++n;
    }
  }
  EXPECT_EQ(n, 1) << container.value("name", "") << ": " << flag;
  return found;
}

std::string envValue(const json& container, const std::string& name) {
  for (const auto& e : container.value("env", json::array()))
    if (e.value("name", "") == name) return e.value("value", "");
  return "";
}

std::string withoutUnixScheme(const std::string& address) {
  EXPECT_EQ(address.rfind("unix://", 0), 0u) << address;
  return address.rfind("unix://", 0) == 0 ? address.substr(7) : address;
}

/// The volume mount under which `path` lies in a container (the longest mountPath that is
/// `path` or a parent of it), or nullptr.
const json* mountOf(const json& container, const std::string& path) {
  const json* best = nullptr;
  size_t bestLen = 0;
  if (!container.contains("volumeMounts")) return nullptr;
  for (const auto& m : container["volumeMounts"]) {
    std::string mp = m.value("mountPath", "");
    while (mp.size() > 1 && mp.back() == '/') mp.pop_back();
    const bool under = path == mp || (path.rfind(mp + "/", 0) == 0) || mp == "/";
    if (under && mp.size() >= bestLen) {
      best = &m;
      bestLen = mp.size();
    }
  }
  return best;
}

const json* volumeNamed(const json& podSpec, const std::string& name) {
  if (!podSpec.contains("volumes")) return nullptr;
  for (const auto& v : podSpec["volumes"])
    if (v.value("name", "") == name) return &v;
  return nullptr;
}

/// Where a path inside a container is on the host: the hostPath of the volume mounted there
/// plus the rest of the path; "" when it is not on a hostPath volume.
std::string hostPathOf(const json& podSpec, const json& container, const std::string& path) {
  const json* m = mountOf(container, path);
  if (m == nullptr) return "";
  const json* v = volumeNamed(podSpec, m->value("name", ""));
  if (v == nullptr || !v->contains("hostPath")) return "";
  std::string mp = m->value("mountPath", "");
  while (mp.size() > 1 && mp.back() == '/') mp.pop_back();
  std::string host = (*v)["hostPath"].value("path", "");
  while (host.size() > 1 && host.back() == '/') host.pop_back();
  return host + path.substr(mp.size());
}

/// The DaemonSet without what the component adds, for comparing with the fixture: the
/// stateguard containers, init containers and volumes, and the gate's env and mounts on the
/// driver container. The registrar's args and env are compared separately.
json withoutStateguard(json ds) {
  json& spec = ds["spec"]["template"]["spec"];
  auto drop = [](json& list, auto pred) {
    json kept = json::array();
    for (auto& e : list)
      if (!pred(e)) kept.push_back(e);
    list = kept;
  };
  auto isOurs = [](const json& e) { return e.value("name", "").rfind("stateguard-", 0) == 0; };
  drop(spec["containers"], isOurs);
  if (spec.contains("initContainers")) {
    drop(spec["initContainers"], isOurs);
    if (spec["initContainers"].empty()) spec.erase("initContainers");
  }
  drop(spec["volumes"], isOurs);
  for (auto& c : spec["containers"]) {
    if (c.contains("volumeMounts")) drop(c["volumeMounts"], isOurs);
    if (c.contains("env")) {
      drop(c["env"], [](const json& e) {
        const std::string n = e.value("name", "");
        return n == "PATH" || n.rfind("STATEGUARD_", 0) == 0;
      });
    }
    if (c.value("name", "") == kRegistrarContainer) {
      c.erase("args");
      c.erase("env");
    }
  }
  // Order of containers and volumes is not meaningful; sort by name.
  for (const auto* list : {"containers", "volumes"}) {
    std::vector<json> v(spec[list].begin(), spec[list].end());
    std::sort(v.begin(), v.end(), [](const json& a, const json& b) {
      return a.value("name", "") < b.value("name", "");
    });
    spec[list] = v;
  }
  return ds;
}

/// The rendered example and pointers into it (so not copyable).
struct CsiRender {
  explicit CsiRender(const std::string& dir) : objects(kustomize(dir)) {
    ds = find(objects, "DaemonSet", kCsiDaemonSet);
    if (ds == nullptr) {
      ADD_FAILURE() << "no DaemonSet " << kCsiDaemonSet << " rendered from " << dir;
      return;
    }
    podSpec = &(*ds)["spec"]["template"]["spec"];
    sidecar = containerNamed(*podSpec, kSidecarContainer);
    registrar = containerNamed(*podSpec, kRegistrarContainer);
    driver = containerNamed(*podSpec, kDriverContainer);
  }
  CsiRender(const CsiRender&) = delete;
  CsiRender& operator=(const CsiRender&) = delete;

  const std::vector<json> objects;
  const json* ds = nullptr;
  const json* podSpec = nullptr;
  const json* sidecar = nullptr;
  const json* registrar = nullptr;
  const json* driver = nullptr;
};

TEST(CsiSidecarComponent, IsAComponentWhosePatchesAllTargetTheDriverDaemonSet) {
  auto docs =
      parseDocuments(readText(sourcePath("manifests/csi-sidecar/component/kustomization.yaml")),
                     "manifests/csi-sidecar/component/kustomization.yaml");
  ASSERT_TRUE(docs.ok()) << docs.error();
  ASSERT_EQ(docs->size(), 1u);
  const json& k = docs->front();
  EXPECT_EQ(k.value("apiVersion", ""), "kustomize.config.k8s.io/v1alpha1");
  EXPECT_EQ(k.value("kind", ""), "Component");
  ASSERT_TRUE(k.contains("patches") && k["patches"].is_array() && !k["patches"].empty());
  // One target for every patch: retargeting the component is one edit.
  const json want = {
      {"group", "apps"}, {"version", "v1"}, {"kind", "DaemonSet"}, {"name", kCsiDaemonSet}};
  std::set<std::string> paths;
  for (const auto& p : k["patches"]) {
    EXPECT_EQ(p["target"], want) << p.dump();
    paths.insert(p.value("path", ""));
  }
  EXPECT_EQ(paths, (std::set<std::string>{"sidecar.yaml", "registrar.yaml", "format-gate.yaml"}));
}

TEST(CsiSidecarComponent, LonghornExampleGetsTheSidecarWithTheAgreedFlags) {
  const CsiRender r(sourcePath("manifests/csi-sidecar/example"));
  ASSERT_NE(r.ds, nullptr);
  ASSERT_NE(r.sidecar, nullptr) << "no container " << kSidecarContainer;
  ASSERT_NE(r.registrar, nullptr);
  ASSERT_NE(r.driver, nullptr);
  const json& ps = *r.podSpec;
  const json& c = *r.sidecar;
  EXPECT_EQ((*r.ds)["metadata"].value("namespace", ""), kCsiNamespace);

  EXPECT_EQ(c["image"], "ghcr.io/stateguard/stateguard:0.1.0");
  EXPECT_EQ(c["command"], json::array({"stateguard-csi"}));
  const auto flags = sidecarFlags(c["args"]);
  EXPECT_EQ(flagValue(flags, "--csi-address"), "unix:///csi/stateguard.sock");
  EXPECT_EQ(flagValue(flags, "--driver-address"), "unix:///csi/csi.sock");
  EXPECT_EQ(flagValue(flags, "--ledger-dir"), "/var/lib/stateguard/ledger");
  EXPECT_EQ(flagValue(flags, "--device-path-template"), "/dev/longhorn/{volume_id}");
  EXPECT_EQ(flagValue(flags, "--http-endpoint"), "0.0.0.0:9810");
  EXPECT_EQ(flagValue(flags, "--in-cluster"), "");
  EXPECT_EQ(flags.count("--kubeconfig"), 0u) << "--in-cluster and --kubeconfig exclude each other";
  EXPECT_EQ(flagValue(flags, "--audit-log"), "-");

  // The driver keeps serving its own socket, which the sidecar forwards to; the sidecar's
  // socket sits next to it, in the same volume.
  const std::string driverSocket = withoutUnixScheme(flagValue(flags, "--driver-address"));
  const std::string sidecarSocket = withoutUnixScheme(flagValue(flags, "--csi-address"));
  EXPECT_EQ(withoutUnixScheme(expandEnv(argValue(*r.driver, "--endpoint"), *r.driver)),
            driverSocket);
  const json* sockMount = mountOf(c, sidecarSocket);
  ASSERT_NE(sockMount, nullptr) << sidecarSocket << " is on no volume";
  EXPECT_FALSE(sockMount->value("readOnly", false)) << "the sidecar creates its socket there";
  const json* driverMount = mountOf(*r.driver, driverSocket);
  ASSERT_NE(driverMount, nullptr);
  EXPECT_EQ(sockMount->value("name", ""), driverMount->value("name", ""));
  ASSERT_NE(mountOf(c, driverSocket), nullptr);
  EXPECT_EQ(mountOf(c, driverSocket)->value("name", ""), driverMount->value("name", ""));

  // node-driver-registrar announces the sidecar's socket to kubelet, by its host path, and
  // asks the sidecar (not the driver) for the driver's name.
  const std::string registrarAddress = argValue(*r.registrar, "--csi-address");
  EXPECT_EQ(registrarAddress, sidecarSocket);
  ASSERT_NE(mountOf(*r.registrar, registrarAddress), nullptr);
  EXPECT_EQ(mountOf(*r.registrar, registrarAddress)->value("name", ""),
            sockMount->value("name", ""));
  const std::string registrationPath = argValue(*r.registrar, "--kubelet-registration-path");
  EXPECT_EQ(registrationPath, "/var/lib/kubelet/plugins/driver.longhorn.io/stateguard.sock");
  EXPECT_EQ(registrationPath, hostPathOf(ps, c, sidecarSocket))
      << "kubelet must reach the socket the sidecar serves";
  for (const auto& a : (*r.registrar)["args"])
    EXPECT_EQ(expandEnv(a.get<std::string>(), *r.registrar).find("csi.sock"), std::string::npos)
        << "the registrar still names the driver's socket: " << a;

  // Volumes: host /dev read-only, kubelet's directory read-only with mounts propagated in, the
  // ledger on the node.
  const json* dev = mountOf(c, "/dev/longhorn/pvc-1");
  ASSERT_NE(dev, nullptr);
  EXPECT_EQ(dev->value("mountPath", ""), "/dev");
  EXPECT_TRUE(dev->value("readOnly", false));
  EXPECT_EQ(hostPathOf(ps, c, "/dev/longhorn/pvc-1"), "/dev/longhorn/pvc-1");
  const json* kubelet = mountOf(c, "/var/lib/kubelet/plugins/kubernetes.io/csi");
  ASSERT_NE(kubelet, nullptr);
  EXPECT_EQ(kubelet->value("mountPath", ""), "/var/lib/kubelet");
  EXPECT_TRUE(kubelet->value("readOnly", false));
  EXPECT_EQ(kubelet->value("mountPropagation", ""), "HostToContainer");
  EXPECT_EQ(hostPathOf(ps, c, "/var/lib/kubelet"), "/var/lib/kubelet");
  const std::string ledgerDir = flagValue(flags, "--ledger-dir");
  const json* ledger = mountOf(c, ledgerDir);
  ASSERT_NE(ledger, nullptr);
  EXPECT_EQ(ledger->value("mountPath", ""), ledgerDir);
  EXPECT_FALSE(ledger->value("readOnly", false));
  const json* ledgerVolume = volumeNamed(ps, ledger->value("name", ""));
  ASSERT_NE(ledgerVolume, nullptr);
  EXPECT_EQ((*ledgerVolume)["hostPath"],
            (json{{"path", "/var/lib/stateguard/ledger"}, {"type", "DirectoryOrCreate"}}));

  // Identity, hardening, resources, health.
  bool nodeName = false;
  for (const auto& e : c.value("env", json::array()))
    if (e.value("name", "") == "NODE_NAME")
      nodeName = e["valueFrom"]["fieldRef"].value("fieldPath", "") == "spec.nodeName";
  EXPECT_TRUE(nodeName) << "NODE_NAME from spec.nodeName";
  const json& sc = c["securityContext"];
  EXPECT_TRUE(sc.value("privileged", false)) << "it opens host block devices";
  EXPECT_TRUE(sc.value("readOnlyRootFilesystem", false));
  EXPECT_EQ(sc.value("runAsUser", -1), 0);
  const std::string termination = c.value("terminationMessagePath", "/dev/termination-log");
  EXPECT_NE(termination.rfind("/dev/", 0), 0u)
      << "/dev is the host's, read-only: the runtime cannot create " << termination;
  for (const auto* kind : {"requests", "limits"})
    for (const auto* res : {"cpu", "memory"})
      EXPECT_TRUE(c["resources"][kind].contains(res)) << "resources." << kind << "." << res;
  const json& live = c["livenessProbe"]["httpGet"];
  EXPECT_EQ(live.value("path", ""), "/healthz") << "liveness must not depend on the driver";
  EXPECT_EQ(c["readinessProbe"]["httpGet"].value("path", ""), "/readyz");
  json port = live.value("port", json());
  if (port.is_string()) {
    for (const auto& p : c.value("ports", json::array()))
      if (p.value("name", "") == port.get<std::string>()) port = p["containerPort"];
  }
  EXPECT_EQ(port, 9810);
  EXPECT_EQ(flagValue(flags, "--http-endpoint")
                .substr(flagValue(flags, "--http-endpoint").rfind(':') + 1),
            "9810");

  // The binary knows every flag the manifest uses (when it is built).
  const std::string binary = std::string(STATEGUARD_BIN_DIR) + "/stateguard-csi";
  if (::access(binary.c_str(), X_OK) == 0) {
    CommandResult help = runCommand(binary, {"--help"});
    for (const auto& [flag, value] : flags)
      EXPECT_NE((help.out + help.err).find(flag + " "), std::string::npos)
          << "stateguard-csi --help does not list " << flag;
  } else {
    std::cout << "[ note ] " << binary << " is not built: its --help is not checked\n";
  }
}

TEST(CsiSidecarComponent, LonghornExampleGetsTheFormatGateFirstOnTheDriversPath) {
  const CsiRender r(sourcePath("manifests/csi-sidecar/example"));
  ASSERT_NE(r.ds, nullptr);
  ASSERT_NE(r.driver, nullptr);
  ASSERT_NE(r.sidecar, nullptr);
  const json& ps = *r.podSpec;

  // The init container installs the gate into an emptyDir.
  const json* init = containerNamed(ps, "stateguard-format-gate", "initContainers");
  ASSERT_NE(init, nullptr);
  EXPECT_EQ((*init)["image"], "ghcr.io/stateguard/stateguard:0.1.0");
  EXPECT_EQ((*init)["command"], json::array({"stateguard-format-gate", "install", kGateDir}));
  const json* initMount = mountOf(*init, kGateDir);
  ASSERT_NE(initMount, nullptr);
  EXPECT_EQ(initMount->value("mountPath", ""), kGateDir);
  const json* gateVolume = volumeNamed(ps, initMount->value("name", ""));
  ASSERT_NE(gateVolume, nullptr);
  EXPECT_TRUE(gateVolume->contains("emptyDir")) << gateVolume->dump();
  EXPECT_TRUE((*init)["securityContext"].value("runAsNonRoot", false));
  EXPECT_FALSE((*init)["securityContext"].value("privileged", false));

  // The driver container sees that directory first on its PATH, and the sidecar's ledger.
  const json* driverMount = mountOf(*r.driver, kGateDir);
  ASSERT_NE(driverMount, nullptr);
  EXPECT_EQ(driverMount->value("mountPath", ""), kGateDir);
  EXPECT_EQ(driverMount->value("name", ""), initMount->value("name", ""));
  const std::string path = envValue(*r.driver, "PATH");
  EXPECT_EQ(path.rfind(kGateDir + ":", 0), 0u) << "PATH=" << path;
  for (const std::string dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin"})
    EXPECT_NE((path + ":").find(":" + dir + ":"), std::string::npos)
        << "PATH=" << path << " lost " << dir << ", where the real mkfs lives";
  const std::string ledgerDir = envValue(*r.driver, "STATEGUARD_LEDGER_DIR");
  EXPECT_EQ(ledgerDir, flagValue(sidecarFlags((*r.sidecar)["args"]), "--ledger-dir"));
  ASSERT_NE(mountOf(*r.driver, ledgerDir), nullptr);
  EXPECT_EQ(mountOf(*r.driver, ledgerDir)->value("mountPath", ""), ledgerDir);
  EXPECT_EQ(hostPathOf(ps, *r.driver, ledgerDir), hostPathOf(ps, *r.sidecar, ledgerDir))
      << "the gate must read the ledger the sidecar writes";
}

TEST(CsiSidecarComponent, LonghornExampleKeepsEverythingElseOfTheDaemonSet) {
  const CsiRender r(sourcePath("manifests/csi-sidecar/example"));
  ASSERT_NE(r.ds, nullptr);
  const auto fixture =
      parseAll(readText(sourcePath("manifests/csi-sidecar/example/longhorn-csi-plugin.yaml")),
               "longhorn-csi-plugin.yaml");
  ASSERT_EQ(fixture.size(), 1u);
  EXPECT_EQ(withoutStateguard(*r.ds).dump(2), withoutStateguard(fixture[0]).dump(2));
  // The registrar keeps its container, only its address and kubelet path change.
  const json* before = containerNamed(fixture[0]["spec"]["template"]["spec"], kRegistrarContainer);
  ASSERT_NE(before, nullptr);
  ASSERT_NE(r.registrar, nullptr);
  EXPECT_EQ((*r.registrar)["args"].size(), (*before)["args"].size());
  EXPECT_EQ((*r.registrar)["args"][0], (*before)["args"][0]) << "--v level";
  // Exactly the three objects: the DaemonSet and the sidecar's RBAC.
  EXPECT_EQ(keys(r.objects), (std::set<Key>{{"DaemonSet", kCsiNamespace, kCsiDaemonSet},
                                            {"ClusterRole", "", "stateguard-csi"},
                                            {"ClusterRoleBinding", "", "stateguard-csi"}}));
}

TEST(CsiSidecarComponent, RbacGrantsExactlyTheLedgerAnnotationOnPersistentVolumes) {
  const CsiRender r(sourcePath("manifests/csi-sidecar/example"));
  ASSERT_NE(r.ds, nullptr);
  const json* role = find(r.objects, "ClusterRole", "stateguard-csi");
  ASSERT_NE(role, nullptr);
  EXPECT_FALSE(role->contains("aggregationRule"));
  std::set<Grant> got;
  for (const auto& rule : (*role)["rules"]) {
    EXPECT_FALSE(rule.contains("resourceNames")) << rule.dump();
    EXPECT_FALSE(rule.contains("nonResourceURLs")) << rule.dump();
    for (const auto& g : rule["apiGroups"])
      for (const auto& res : rule["resources"])
        for (const auto& v : rule["verbs"])
          got.insert({g.get<std::string>(), res.get<std::string>(), v.get<std::string>()});
  }
  EXPECT_EQ(got, (std::set<Grant>{{"", "persistentvolumes", "get"},
                                  {"", "persistentvolumes", "list"},
                                  {"", "persistentvolumes", "watch"},
                                  {"", "persistentvolumes", "patch"}}))
      << describeGrants(got);

  // Bound to the service account the DaemonSet's pods run as: the sidecar has no other.
  const json* binding = find(r.objects, "ClusterRoleBinding", "stateguard-csi");
  ASSERT_NE(binding, nullptr);
  EXPECT_EQ((*binding)["roleRef"], (json{{"apiGroup", "rbac.authorization.k8s.io"},
                                         {"kind", "ClusterRole"},
                                         {"name", "stateguard-csi"}}));
  const json& ps = *r.podSpec;
  EXPECT_EQ((*binding)["subjects"],
            json::array({{{"kind", "ServiceAccount"},
                          {"name", ps.value("serviceAccountName", "")},
                          {"namespace", (*r.ds)["metadata"].value("namespace", "")}}}));
  EXPECT_EQ(ps.value("serviceAccountName", ""), "longhorn-service-account");
}

TEST(CsiSidecarComponent, RetargetingIsOneEditOfTheComponentsTarget) {
  // README "Another driver": a copy of the component with another DaemonSet name in the target
  // anchor patches that DaemonSet.
  const std::string dir = makeTempDir("sg-csi-retarget");
  fs::copy(sourcePath("manifests/csi-sidecar/component"), dir + "/component",
           fs::copy_options::recursive);
  std::string k = readText(dir + "/component/kustomization.yaml");
  const std::string from = "name: " + kCsiDaemonSet;
  ASSERT_NE(k.find(from), std::string::npos);
  k.replace(k.find(from), from.size(), "name: my-csi-node");
  EXPECT_EQ(k.find(from), std::string::npos) << "the target is named more than once";
  writeText(dir + "/component/kustomization.yaml", k);
  std::string ds = readText(sourcePath("manifests/csi-sidecar/example/longhorn-csi-plugin.yaml"));
  const std::string dsName = "  name: " + kCsiDaemonSet + "\n  namespace:";
  ASSERT_NE(ds.find(dsName), std::string::npos);
  ds.replace(ds.find(dsName), dsName.size(), "  name: my-csi-node\n  namespace:");
  fs::create_directories(dir + "/example");
  writeText(dir + "/example/ds.yaml", ds);
  writeText(dir + "/example/kustomization.yaml",
            "resources: [ds.yaml]\ncomponents: [../component]\n");
  const auto objects = kustomize(dir + "/example");
  removeTree(dir);
  const json* renamed = find(objects, "DaemonSet", "my-csi-node");
  ASSERT_NE(renamed, nullptr);
  const json& ps = (*renamed)["spec"]["template"]["spec"];
  EXPECT_NE(containerNamed(ps, kSidecarContainer), nullptr);
  EXPECT_NE(containerNamed(ps, "stateguard-format-gate", "initContainers"), nullptr);
  const json* registrar = containerNamed(ps, kRegistrarContainer);
  ASSERT_NE(registrar, nullptr);
  EXPECT_EQ(argValue(*registrar, "--csi-address"), "/csi/stateguard.sock");
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// Instructions of a Dockerfile with continuation lines joined and comments dropped.
std::vector<std::string> dockerInstructions(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string line, current;
  while (std::getline(ss, line)) {
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    if (line[first] == '#') continue;
    const bool continues = !line.empty() && line.back() == '\\';
    current += (current.empty() ? "" : " ") +
               line.substr(first, continues ? line.size() - first - 1 : std::string::npos);
    if (!continues) {
      out.push_back(current);
      current.clear();
    }
  }
  if (!current.empty()) out.push_back(current);
  return out;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string w;
  while (ss >> w) out.push_back(w);
  return out;
}

/// Debian packages named by `apt-get install` commands in some instructions.
std::set<std::string> aptInstalled(const std::vector<std::string>& stage) {
  std::set<std::string> out;
  for (const auto& ins : stage) {
    if (ins.rfind("RUN ", 0) != 0) continue;
    auto w = words(ins);
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      if (w[i] != "apt-get" || w[i + 1] != "install") continue;
      for (size_t j = i + 2; j < w.size() && w[j] != "&&" && w[j] != ";"; ++j)
        if (w[j][0] != '-') out.insert(w[j]);
    }
  }
  return out;
}

/// The Debian package of every shared library `ldd` lists for a binary.
std::set<std::string> librariesPackages(const std::string& binary, std::string* report) {
  CommandResult ldd = runCommand(findProgram("ldd"), {binary});
  EXPECT_EQ(ldd.exitCode, 0) << ldd.err;
  std::vector<std::string> libs;
  std::stringstream ss(ldd.out);
  std::string line;
  while (std::getline(ss, line)) {
    auto w = words(line);
    if (w.size() >= 3 && w[1] == "=>") {
      if (w[2] == "not")
        ADD_FAILURE() << "ldd: " << line;
      else
        libs.push_back(w[2]);
    } else if (!w.empty() && w[0][0] == '/') {
      libs.push_back(w[0]);  // the dynamic loader
    }
  }
  std::set<std::string> packages;
  for (const auto& lib : libs) {
    // dpkg knows each file under one spelling: /lib/... or /usr/lib/... (merged /usr), or the
    // symlink's target.
    std::vector<std::string> candidates = {lib};
    if (lib.rfind("/usr/", 0) == 0)
      candidates.push_back(lib.substr(4));
    else
      candidates.push_back("/usr" + lib);
    std::error_code ec;
    const std::string real = fs::canonical(lib, ec).string();
    if (!ec) {
      candidates.push_back(real);
      if (real.rfind("/usr/", 0) == 0)
        candidates.push_back(real.substr(4));
      else
        candidates.push_back("/usr" + real);
    }
    std::string pkg;
    for (const auto& c : candidates) {
      CommandResult r = runCommand(findProgram("dpkg-query"), {"-S", c});
      if (r.exitCode != 0) continue;
      const std::string first = r.out.substr(0, r.out.find(": "));
      pkg = first.substr(0, first.find(':'));  // "libssl3:amd64" -> "libssl3"
      break;
    }
    EXPECT_FALSE(pkg.empty()) << "no Debian package holds " << lib;
    if (!pkg.empty()) packages.insert(pkg);
    *report += "  " + lib + " -> " + pkg + "\n";
  }
  return packages;
}

TEST(Dockerfile, RuntimeStageInstallsEveryLibraryTheBinariesLoad) {
  const auto instructions = dockerInstructions(readText(sourcePath("Dockerfile")));
  std::vector<std::vector<std::string>> stages;
  for (const auto& ins : instructions) {
    if (ins.rfind("FROM ", 0) == 0) stages.emplace_back();
    if (!stages.empty()) stages.back().push_back(ins);
  }
  ASSERT_EQ(stages.size(), 2u) << "a build stage and a runtime stage";
  EXPECT_EQ(words(stages[0][0])[1], "debian:12");
  EXPECT_EQ(words(stages[1][0])[1], "debian:12-slim");

  // Build stage: the project's own package list, tests off.
  std::string build;
  for (const auto& i : stages[0]) build += i + "\n";
  EXPECT_NE(build.find("scripts/install-deps.sh"), std::string::npos);
  EXPECT_NE(build.find("-DSTATEGUARD_BUILD_TESTS=OFF"), std::string::npos);

  // Runtime stage: non-root, the webhook as entry point, both binaries copied.
  std::string runtime;
  for (const auto& i : stages[1]) runtime += i + "\n";
  EXPECT_NE(runtime.find("\nUSER 65532:65532\n"), std::string::npos) << runtime;
  EXPECT_NE(runtime.find("\nENTRYPOINT [\"stateguard-webhook\"]\n"), std::string::npos);
  const std::vector<std::string> all = {"stateguard-webhook", "stateguardctl", "stateguard-csi",
                                        "stateguard-format-gate"};
  for (const auto& b : all) EXPECT_NE(runtime.find("/build/bin/" + b), std::string::npos) << b;
  EXPECT_EQ(runtime.find("-dev"), std::string::npos) << "no development packages at run time";

  const std::set<std::string> installed = aptInstalled(stages[1]);
  ASSERT_FALSE(installed.empty());
  std::string report;
  std::set<std::string> needed;
  for (const auto& b : all) {
    // The CSI binaries are checked once they are built (the webhook and stateguardctl always
    // are: the test depends on them).
    if (::access(binaryPath(b).c_str(), X_OK) != 0) {
      std::cout << "[ note ] " << binaryPath(b) << " is not built: not checked\n";
      continue;
    }
    CommandResult ldd = runCommand(findProgram("ldd"), {binaryPath(b)});
    const std::string lddText = ldd.out + ldd.err;
    const bool isStatic = lddText.find("not a dynamic executable") != std::string::npos ||
                          lddText.find("statically linked") != std::string::npos;
    if (b == "stateguard-format-gate") {
      // Copied into the driver's container, whatever its distribution: it must load nothing
      // (sanitizer builds link it dynamically on purpose).
      const bool sanitized = lddText.find("libasan") != std::string::npos ||
                             lddText.find("libubsan") != std::string::npos;
      if (!sanitized) {
        EXPECT_TRUE(isStatic) << b << " loads shared libraries:\n" << lddText;
      }
    }
    if (isStatic) continue;
    auto p = librariesPackages(binaryPath(b), &report);
    needed.insert(p.begin(), p.end());
  }
  for (const auto& p : needed)
    EXPECT_TRUE(installed.count(p)) << "the runtime stage does not install " << p << "\n" << report;
  // Every package named is a real Debian 12 package (installed here: the build uses it).
  for (const auto& p : installed) {
    CommandResult r = runCommand(findProgram("dpkg-query"), {"-W", "-f=${Status}", p});
    EXPECT_NE(r.out.find("install ok installed"), std::string::npos) << p << ": " << r.err;
  }

  // The build context leaves out build trees and local certificates.
  const std::string ignore = readText(sourcePath(".dockerignore"));
  for (const std::string e : {"build/", "build-*/", "certs/dev/"})
    EXPECT_NE(ignore.find("\n" + e + "\n"), std::string::npos) << e;
}

TEST(InstallDeps, ListsTheChartRendererPackages) {
  const std::string script = readText(sourcePath("scripts/install-deps.sh"));
  for (const std::string p :
       {"golang-go", "golang-github-masterminds-sprig-dev", "golang-gopkg-yaml.v2-dev"})
    EXPECT_NE(script.find(p), std::string::npos) << p;
}

}  // namespace
}  // namespace stateguard::testing
