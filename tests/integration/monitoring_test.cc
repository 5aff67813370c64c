// The alerts and the dashboard that ship with stateguard (manifests/components/monitoring, the
// chart's copies of them are checked equal by manifests_test) query only what the binaries
// export: the real stateguard-webhook and stateguard-csi are started in the configurations listed
// in kTargets, their /metrics scraped, and every metric name, every label in a matcher, a
// `by`/`without`/`on`/`ignoring` clause, a legend format or an alert's `$labels.x` must be in what
// they served. The PromQL is read by a small tokenizer: names are identifiers not followed by
// "(", matchers are read inside {...}, ranges [...] and strings are skipped. Its syntax is
// promtool's to judge (`promtool check rules`, skipped when Debian's prometheus is not
// installed).
//
// With promtool, the alerts are also run on the scraped series (labelled as the ServiceMonitor
// and PodMonitor would): those the test configurations should raise fire, the others stay quiet.
//
// To scrape another binary or configuration, add one line to kTargets.

#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "core/json_yaml.h"
#include "tests/support/csi_rig.h"
#include "tests/support/process.h"
#include "tests/support/test_apiserver.h"
#include "tests/support/tls_material.h"
#include "tests/support/webhook_process.h"

// Designated initializers of CsiRigOptions name only what a test changes.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace stateguard::testing {
namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// What the binaries export

/// Where Prometheus scrapes a binary from: the labels it gives the target's series, and whether
/// the binary's own labels win over them (honorLabels) or are renamed exported_<name>.
struct TargetLabels {
  std::map<std::string, std::string> labels;
  bool honorLabels = false;
};

/// One series as Prometheus would store it: labels (the target's merged in) and its value.
struct Series {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string value;

  /// name{label="value",...} in PromQL's series notation.
  std::string text() const {
    std::string out = name + "{";
    for (const auto& [k, v] : labels) {
      if (out.back() != '{') out += ",";
      out += k + "=" + json(v).dump();
    }
    return out + "}";
  }
};

/// Sample names and the label names each carries, from Prometheus text expositions, and the
/// series as Prometheus would hold them.
struct Catalog {
  std::set<std::string> names;
  std::map<std::string, std::set<std::string>> labels;
  std::vector<Series> series;

  /// Adds one exposition. A family declared by "# TYPE" counts even without samples (a
  /// histogram as its _bucket, _sum and _count series); a sample's labels count for its name.
  void add(const std::string& text, const TargetLabels& target) {
    series.push_back(Series{"up", target.labels, "1"});
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("# TYPE ", 0) == 0) {
        std::istringstream t(line.substr(7));
        std::string name, type;
        t >> name >> type;
        if (type == "histogram" || type == "summary") {
          for (const char* suffix : {"_sum", "_count"}) names.insert(name + suffix);
          if (type == "histogram") names.insert(name + "_bucket");
        } else {
          names.insert(name);
        }
        continue;
      }
      if (line.empty() || line[0] == '#') continue;
      const size_t end = line.find_first_of("{ ");
      Series one{line.substr(0, end), {}, ""};
      names.insert(one.name);
      size_t i = end;
      if (end != std::string::npos && line[end] == '{') {
        // label="value",... ; values may hold escaped quotes.
        i = end + 1;
        while (i < line.size() && line[i] != '}') {
          const size_t eq = line.find('=', i);
          if (eq == std::string::npos) break;
          const std::string label = line.substr(i, eq - i);
          labels[one.name].insert(label);
          std::string value;
          i = eq + 2;  // past ="
          while (i < line.size() && line[i] != '"') {
            if (line[i] == '\\' && i + 1 < line.size()) {
              value += line[i + 1] == 'n' ? '\n' : line[i + 1];
              i += 2;
            } else {
              value += line[i++];
            }
          }
          one.labels[label] = value;
          ++i;  // closing quote
          if (i < line.size() && line[i] == ',') ++i;
        }
        ++i;  // past }
      }
      std::istringstream rest(i == std::string::npos ? "" : line.substr(i));
      rest >> one.value;
      // Prometheus keeps no label with an empty value (stateguard_csi_volume_quarantined{pv=""}
      // without cluster access).
      std::erase_if(one.labels, [](const auto& kv) { return kv.second.empty(); });
      for (const auto& [k, v] : target.labels) {
        auto clash = one.labels.find(k);
        if (clash == one.labels.end()) {
          one.labels[k] = v;
        } else if (!target.honorLabels) {
          one.labels["exported_" + k] = clash->second;
          clash->second = v;
        }
      }
      series.push_back(std::move(one));
    }
  }
};

/// Labels Prometheus itself puts on every series of a ServiceMonitor or PodMonitor target. The
/// ServiceMonitor sets honorLabels, so the webhook's own `namespace` label (stateguard_csi_*)
/// is kept rather than renamed exported_namespace (manifests_test checks it is set).
const std::set<std::string> kTargetLabels = {"job",     "instance",  "namespace", "pod",
                                             "service", "container", "endpoint"};
/// Series Prometheus makes for every target.
const std::set<std::string> kPrometheusSeries = {"up"};

// ---------------------------------------------------------------------------------------------
// PromQL, as far as names go

struct Selector {
  std::string metric;
  std::map<std::string, std::string> matchers;  ///< label -> value (last one wins)
};

struct Parsed {
  std::vector<Selector> selectors;
  std::set<std::string> grouping;  ///< by / without / on / ignoring / group_left|right labels
  bool aggregatesBy = false;       ///< has a by (...) clause: only its labels survive
  std::set<std::string> byLabels;
  std::string error;
};

bool identStart(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}
bool identChar(char c) { return identStart(c) || std::isdigit(static_cast<unsigned char>(c)); }

Parsed parsePromQL(const std::string& q) {
  static const std::set<std::string> kGrouping = {"by",       "without",    "on",
                                                  "ignoring", "group_left", "group_right"};
  static const std::set<std::string> kKeywords = {
      "and",   "or",     "unless", "bool", "offset",  "inf",      "nan",
      "start", "end",    "sum",    "min",  "max",     "avg",      "group",
      "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"};
  Parsed p;
  size_t i = 0;
  const size_t n = q.size();
  auto skipSpace = [&] {
    while (i < n && std::isspace(static_cast<unsigned char>(q[i]))) ++i;
  };
  auto skipString = [&] {
    const char quote = q[i++];
    while (i < n && q[i] != quote) i += (q[i] == '\\' && quote != '`') ? 2 : 1;
    ++i;
  };
  auto readIdent = [&] {
    const size_t start = i;
    while (i < n && identChar(q[i])) ++i;
    return q.substr(start, i - start);
  };
  auto readStringValue = [&]() -> std::string {
    skipSpace();
    if (i >= n || (q[i] != '"' && q[i] != '\'' && q[i] != '`')) return "";
    const size_t start = i + 1;
    skipString();
    return q.substr(start, i - 1 - start);
  };
  while (i < n) {
    const char c = q[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '"' || c == '\'' || c == '`') {
      skipString();
    } else if (c == '#') {
      while (i < n && q[i] != '\n') ++i;
    } else if (c == '[') {  // range or subquery: durations, $__rate_interval
      while (i < n && q[i] != ']') ++i;
      ++i;
    } else if (c == '$') {  // a Grafana variable outside a range
      ++i;
      readIdent();
    } else if (std::isdigit(static_cast<unsigned char>(c)) ||
               (c == '.' && i + 1 < n && std::isdigit(static_cast<unsigned char>(q[i + 1])))) {
      while (i < n && (std::isalnum(static_cast<unsigned char>(q[i])) || q[i] == '.')) ++i;
    } else if (identStart(c)) {
      const std::string word = readIdent();
      skipSpace();
      if (kGrouping.count(word)) {
        if (i < n && q[i] == '(') {
          ++i;
          std::set<std::string> list;
          while (true) {
            skipSpace();
            if (i >= n) {
              p.error = "unclosed " + word + " (...)";
              return p;
            }
            if (q[i] == ')') {
              ++i;
              break;
            }
            if (q[i] == ',') {
              ++i;
              continue;
            }
            if (!identStart(q[i])) {
              p.error = "unexpected '" + std::string(1, q[i]) + "' in " + word + " (...)";
              return p;
            }
            list.insert(readIdent());
          }
          p.grouping.insert(list.begin(), list.end());
          if (word == "by") {
            p.aggregatesBy = true;
            p.byLabels.insert(list.begin(), list.end());
          }
        }
      } else if (i < n && q[i] == '(') {
        // a function or an aggregation: not a metric
      } else if (kKeywords.count(word)) {
        // an operator, a modifier, or an aggregation followed by its by/without clause
      } else {
        Selector s{word, {}};
        if (i < n && q[i] == '{') {
          ++i;
          while (true) {
            skipSpace();
            if (i >= n) {
              p.error = "unclosed {...} after " + word;
              return p;
            }
            if (q[i] == '}') {
              ++i;
              break;
            }
            if (q[i] == ',') {
              ++i;
              continue;
            }
            if (!identStart(q[i])) {
              p.error = "unexpected '" + std::string(1, q[i]) + "' in the matchers of " + word;
              return p;
            }
            const std::string label = readIdent();
            skipSpace();
            while (i < n && (q[i] == '=' || q[i] == '!' || q[i] == '~')) ++i;
            s.matchers[label] = readStringValue();
          }
        }
        p.selectors.push_back(std::move(s));
      }
    } else if (c == '{') {
      p.error = "a selector without a metric name ({...}) is not checked; name the metric";
      return p;
    } else {
      ++i;
    }
  }
  return p;
}

/// Labels named in a Grafana legend format ({{label}}).
std::set<std::string> legendLabels(const std::string& text) {
  static const std::regex kLegend(R"(\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\})");
  std::set<std::string> out;
  for (std::sregex_iterator it(text.begin(), text.end(), kLegend), end; it != end; ++it)
    out.insert((*it)[1]);
  return out;
}

/// Labels named in an alert's annotation or label template ({{ $labels.label }}).
std::set<std::string> alertTemplateLabels(const std::string& text) {
  static const std::regex kAlert(R"(\$labels\.([A-Za-z_][A-Za-z0-9_]*))");
  std::set<std::string> out;
  for (std::sregex_iterator it(text.begin(), text.end(), kAlert), end; it != end; ++it)
    out.insert((*it)[1]);
  return out;
}

/// What is wrong with one expression (and the labels its templates name) against `catalog`;
/// empty when nothing is.
std::vector<std::string> problems(const Catalog& catalog, const std::string& expr,
                                  const std::set<std::string>& templated) {
  std::vector<std::string> out;
  const Parsed p = parsePromQL(expr);
  if (!p.error.empty()) return {p.error};
  if (p.selectors.empty()) out.push_back("names no metric");
  std::set<std::string> available = kTargetLabels;
  for (const Selector& s : p.selectors) {
    const bool known = catalog.names.count(s.metric) || kPrometheusSeries.count(s.metric);
    if (!known) out.push_back("metric " + s.metric + " is not exported");
    auto it = catalog.labels.find(s.metric);
    const std::set<std::string> none;
    const std::set<std::string>& has = it == catalog.labels.end() ? none : it->second;
    available.insert(has.begin(), has.end());
    for (const auto& [label, value] : s.matchers) {
      if (known && !has.count(label) && !kTargetLabels.count(label) && label != "__name__")
        out.push_back("metric " + s.metric + " has no label " + label);
    }
  }
  for (const std::string& label : p.grouping) {
    if (!available.count(label))
      out.push_back("label " + label + " (by/without/on) is on none of its metrics");
  }
  for (const std::string& label : templated) {
    if (!available.count(label)) {
      out.push_back("label " + label + " in a legend or annotation is on none of its metrics");
    } else if (p.aggregatesBy && !p.byLabels.count(label)) {
      out.push_back("label " + label + " in a legend or annotation is aggregated away (by (...))");
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The scraped configurations

/// One binary in one configuration: returns its /metrics text, or fails the test.
struct Target {
  std::string name;
  std::function<std::string(const std::string& dir)> scrape;
  TargetLabels prometheus;  ///< as the ServiceMonitor or PodMonitor would label it
};

/// A webhook replica scraped by the ServiceMonitor (honorLabels, job = the metrics Service).
TargetLabels webhookPod(const std::string& pod) {
  return {{{"job", "stateguard-webhook-metrics"},
           {"service", "stateguard-webhook-metrics"},
           {"namespace", "stateguard-system"},
           {"pod", pod},
           {"container", "webhook"},
           {"endpoint", "metrics"},
           {"instance", pod + ":9443"}},
          true};
}

/// A CSI node pod scraped by the PodMonitor.
TargetLabels csiPod(const std::string& pod) {
  return {{{"job", "stateguard-system/stateguard-csi"},
           {"namespace", "longhorn-system"},
           {"pod", pod},
           {"container", "stateguard-csi"},
           {"endpoint", "stateguard-csi"},
           {"instance", pod + ":9810"}},
          false};
}

/// Polls `get` until its text contains every one of `needles` (15 s), then returns it.
std::string scrapeUntil(const std::function<std::string()>& get,
                        const std::vector<std::string>& needles) {
  std::string text;
  for (int i = 0; i < 300; ++i) {
    text = get();
    bool all = true;
    for (const auto& needle : needles) all = all && text.find(needle) != std::string::npos;
    if (all) return text;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "/metrics never showed all of " << ::testing::PrintToString(needles) << ":\n"
                << text;
  return text;
}

json review(const std::string& operation, const json& object) {
  return {{"apiVersion", "admission.k8s.io/v1"},
          {"kind", "AdmissionReview"},
          {"request",
           {{"uid", "monitoring-1"},
            {"kind", {{"group", ""}, {"version", "v1"}, {"kind", object["kind"]}}},
            {"resource", {{"group", ""}, {"version", "v1"}, {"resource", "namespaces"}}},
            {"name", object["metadata"]["name"]},
            {"operation", operation},
            {"userInfo", {{"username", "admin@example.com"}}},
            {"object", object}}}};
}

/// The webhook on a state file with the CSI guard (and an unguarded DaemonSet in it): one
/// review judged, one request refused as bad input, the CSI guard check run.
std::string webhookOnFile(const std::string& dir) {
  DevCerts certs = makeDevCerts(dir + "/certs");
  writeText(dir + "/csi-guard.yaml",
            readText(sourcePath("manifests/components/csi-injection/csi-guard.yaml")));
  auto rook =
      parseDocuments(readText(sourcePath("tests/fixtures/csi-guard/rook-csi-rbdplugin.yaml")),
                     "rook-csi-rbdplugin.yaml");
  EXPECT_TRUE(rook.ok() && !rook->empty());
  json list = {{"apiVersion", "v1"}, {"kind", "List"}, {"items", json::array()}};
  if (rook.ok() && !rook->empty()) list["items"].push_back(rook->front());
  // Hazards for the background scan: an invalid break-glass annotation (an error: its rule
  // would refuse it now) and a bound claim without any backup (backup-stale).
  for (const char* item : {
           R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"legacy",
               "annotations":{"stateguard.io/allow":"pvc-delete"}}})",
           R"({"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"pv-shop-data"},
               "spec":{"capacity":{"storage":"1Gi"},"persistentVolumeReclaimPolicy":"Retain",
                       "claimRef":{"namespace":"shop","name":"data"},"hostPath":{"path":"/x"}},
               "status":{"phase":"Bound"}})",
           R"({"apiVersion":"v1","kind":"PersistentVolumeClaim",
               "metadata":{"name":"data","namespace":"shop"},
               "spec":{"volumeName":"pv-shop-data","resources":{"requests":{"storage":"1Gi"}}},
               "status":{"phase":"Bound"}})"})
    list["items"].push_back(json::parse(item));
  writeText(dir + "/state.json", list.dump());
  WebhookProcess webhook(dir, certs, {"--cluster-state", dir + "/state.json"},
                         {"--csi-guard", dir + "/csi-guard.yaml"});
  if (!webhook.started()) {
    ADD_FAILURE() << webhook.process().stderrText();
    return "";
  }
  const json ns = {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "shop"}}}};
  EXPECT_EQ(webhook.post(review("CREATE", ns).dump()).first, 200);
  EXPECT_EQ(webhook.post("{not json").first, 400);
  return scrapeUntil(
      [&] { return webhook.get("/metrics").second; },
      {"stateguard_admission_requests_total{", "stateguard_admission_rejected_total{",
       "stateguard_csi_unguarded{", "stateguard_audit_lines_total", "stateguard_scan_findings{"});
}

/// The webhook on the test API server (the watch cache's series: cache silence, relists).
std::string webhookOnApiServer(const std::string& dir) {
  auto tls = makeTlsMaterial(dir + "/api");
  if (!tls.ok()) {
    ADD_FAILURE() << tls.error();
    return "";
  }
  TestApiServer api(tls.value());
  EXPECT_TRUE(api.start().ok());
  EXPECT_TRUE(writeKubeconfig(dir + "/kubeconfig", api.kubeConfig()).ok());
  DevCerts certs = makeDevCerts(dir + "/certs");
  WebhookProcess webhook(dir, certs, {"--kubeconfig", dir + "/kubeconfig"}, {"--no-events"});
  if (!webhook.started()) {
    ADD_FAILURE() << webhook.process().stderrText();
    return "";
  }
  return scrapeUntil(
      [&] { return webhook.get("/metrics").second; },
      {"\nstateguard_cache_silence_seconds ", "\nstateguard_cluster_state_ready 1\n"});
}

/// stateguard-csi in front of the test driver with one volume quarantined (a stage saw another
/// ext4 than the one its ledger records) and one stage refused (no device).
std::string csiSidecarWithAQuarantine(const std::string& dir) {
  for (const char* tool : {"/usr/sbin/mkfs.ext4", "/usr/sbin/blkid"}) {
    if (::access(tool, X_OK) != 0) {
      ADD_FAILURE() << tool << " is not installed (scripts/install-deps.sh installs it)";
      return "";
    }
  }
  CsiRig rig(dir, {});
  if (!rig.start()) {
    ADD_FAILURE() << "the CSI rig did not start";
    return "";
  }
  rig.setDevice("pvc-q", rig.makeImage("pvc-q.img", 64ull << 20, "ext4", "data\n"));
  EXPECT_TRUE(rig.stage("pvc-q").ok());
  rig.setDevice("pvc-q", rig.makeImage("pvc-q-other.img", 64ull << 20, "ext4"));
  EXPECT_EQ(rig.stage("pvc-q").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  rig.setDevice("pvc-missing", "");
  EXPECT_EQ(rig.stage("pvc-missing").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  httplib::Client http("127.0.0.1", rig.httpPort());
  return scrapeUntil(
      [&] {
        auto res = http.Get("/metrics");
        return res ? res->body : std::string();
      },
      {"stateguard_csi_volume_quarantined{", "stateguard_csi_quarantines_total{",
       "stateguard_csi_refusals_total{", "stateguard_csi_guard_info{",
       "csi_sidecar_operations_seconds_bucket{"});
}

const std::vector<Target> kTargets = {
    {"stateguard-webhook --cluster-state --csi-guard", webhookOnFile,
     webhookPod("stateguard-webhook-a")},
    {"stateguard-webhook --kubeconfig (test API server)", webhookOnApiServer,
     webhookPod("stateguard-webhook-b")},
    {"stateguard-csi, a volume quarantined", csiSidecarWithAQuarantine,
     csiPod("longhorn-csi-plugin-a")},
};

// ---------------------------------------------------------------------------------------------
// What ships

/// One query to check: where it is, the expression, the labels its template names.
struct Query {
  std::string where;
  std::string expr;
  std::set<std::string> templated;
};

std::vector<Query> alertQueries(const std::string& path) {
  std::vector<Query> out;
  auto docs = parseDocuments(readText(path), path);
  EXPECT_TRUE(docs.ok()) << (docs.ok() ? "" : docs.error());
  if (!docs.ok()) return out;
  for (const json& doc : *docs) {
    for (const json& group : doc["spec"]["groups"]) {
      for (const json& rule : group["rules"]) {
        Query q;
        q.where = path + ": " + rule.value("alert", rule.value("record", "?"));
        q.expr = rule["expr"].is_string() ? rule["expr"].get<std::string>() : rule["expr"].dump();
        for (const char* field : {"annotations", "labels"}) {
          const json texts = rule.value(field, json::object());
          for (const auto& [key, value] : texts.items()) {
            auto labels = alertTemplateLabels(value.get<std::string>());
            q.templated.insert(labels.begin(), labels.end());
          }
        }
        out.push_back(std::move(q));
      }
    }
  }
  return out;
}

void dashboardQueries(const json& panels, const std::string& path, std::vector<Query>& out) {
  for (const json& panel : panels) {
    if (panel.contains("panels")) dashboardQueries(panel["panels"], path, out);
    for (const json& target : panel.value("targets", json::array())) {
      if (!target.contains("expr")) continue;
      Query q;
      q.where = path + ": panel \"" + panel.value("title", "?") + "\" " + target.value("refId", "");
      q.expr = target["expr"];
      q.templated = legendLabels(target.value("legendFormat", ""));
      out.push_back(std::move(q));
    }
  }
}

std::vector<Query> shippedQueries() {
  std::vector<Query> out =
      alertQueries(sourcePath("manifests/components/monitoring/prometheusrule.yaml"));
  const std::string dashboard =
      sourcePath("manifests/components/monitoring/grafana-dashboard.json");
  const json d = json::parse(readText(dashboard), nullptr, false);
  EXPECT_TRUE(d.is_object()) << dashboard << " is not JSON";
  if (d.is_object()) dashboardQueries(d["panels"], dashboard, out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tests

class Monitoring : public ::testing::Test {
 protected:
  /// Every target scraped once per test binary.
  static const Catalog& catalog() {
    static const Catalog c = [] {
      Catalog out;
      for (const Target& t : kTargets) {
        SCOPED_TRACE(t.name);
        const std::string dir = makeTempDir("sg-monitoring");
        const std::string text = t.scrape(dir);
        EXPECT_FALSE(text.empty()) << t.name << " served no metrics";
        out.add(text, t.prometheus);
        removeTree(dir);
      }
      return out;
    }();
    return c;
  }
};

TEST_F(Monitoring, EveryAlertAndPanelQueriesWhatTheBinariesExport) {
  const Catalog& c = catalog();
  ASSERT_FALSE(c.names.empty());
  const std::vector<Query> queries = shippedQueries();
  EXPECT_GE(queries.size(), 20u) << "the alerts or the dashboard were not read";
  for (const Query& q : queries) {
    for (const std::string& problem : problems(c, q.expr, q.templated))
      ADD_FAILURE() << q.where << ": " << problem << "\n  expr: " << q.expr;
  }
}

TEST_F(Monitoring, EveryAlertTellsWhatIsAtRiskAndWhatToDo) {
  auto docs = parseDocuments(
      readText(sourcePath("manifests/components/monitoring/prometheusrule.yaml")), "rules");
  ASSERT_TRUE(docs.ok());
  const std::set<std::string> severities = {"critical", "warning", "info"};
  for (const json& group : docs->front()["spec"]["groups"]) {
    for (const json& rule : group["rules"]) {
      SCOPED_TRACE(rule.value("alert", "?"));
      EXPECT_TRUE(severities.count(rule["labels"].value("severity", "")));
      EXPECT_FALSE(rule["annotations"].value("summary", "").empty());
      EXPECT_GE(rule["annotations"].value("description", "").size(), 200u)
          << "a description says what is at risk and what to do";
    }
  }
}

// Syntax, which the tokenizer above does not judge: `promtool check rules` parses the alerts
// (expressions, durations, annotation templates) and the dashboard's queries as recording rules.
TEST(MonitoringPromtool, AcceptsTheAlertsAndThePanels) {
  const std::string promtool = findProgram("promtool");
  if (promtool.empty()) GTEST_SKIP() << "promtool is not installed (Debian: prometheus)";
  const std::string dir = makeTempDir("sg-promtool");
  auto docs = parseDocuments(
      readText(sourcePath("manifests/components/monitoring/prometheusrule.yaml")), "rules");
  ASSERT_TRUE(docs.ok() && docs->size() == 1u);
  json panels = json::array();
  std::vector<Query> queries;
  const std::string dashboardPath =
      sourcePath("manifests/components/monitoring/grafana-dashboard.json");
  dashboardQueries(json::parse(readText(dashboardPath))["panels"], dashboardPath, queries);
  for (const Query& q : queries) {
    // Grafana's interval variables, as Grafana fills them in.
    const std::string expr =
        std::regex_replace(q.expr, std::regex(R"(\$__(rate_)?interval)"), "5m");
    panels.push_back({{"record", "stateguard:dashboard_query_" + std::to_string(panels.size())},
                      {"expr", expr}});
  }
  json files = {{"alerts.yaml", {{"groups", docs->front()["spec"]["groups"]}}},
                {"dashboard.yaml", {{"groups", {{{"name", "dashboard"}, {"rules", panels}}}}}}};
  for (const auto& [name, content] : files.items()) {
    writeText(dir + "/" + name, content.dump(2));  // JSON is YAML
    CommandResult r = runCommand(promtool, {"check", "rules", dir + "/" + name});
    EXPECT_EQ(r.exitCode, 0) << name << ":\n" << r.out << r.err;
  }
  removeTree(dir);
}

/// The shipped alert rules without their annotations (promtool test compares annotations
/// exactly; `promtool check rules` above parses them).
json rulesWithoutAnnotations() {
  auto docs = parseDocuments(
      readText(sourcePath("manifests/components/monitoring/prometheusrule.yaml")), "rules");
  EXPECT_TRUE(docs.ok() && docs->size() == 1u);
  if (!docs.ok() || docs->empty()) return json::object();
  json groups = docs->front()["spec"]["groups"];
  for (json& group : groups)
    for (json& rule : group["rules"]) rule.erase("annotations");
  return {{"groups", groups}};
}

/// The alert a `metric == 1` rule raises for each series of `metric` at 1: its labels and the
/// rule's.
json expectedAlerts(const Catalog& c, const std::string& metric, const json& ruleLabels) {
  json out = json::array();
  for (const Series& s : c.series) {
    if (s.name != metric || s.value != "1") continue;
    json labels = ruleLabels;
    for (const auto& [k, v] : s.labels) labels[k] = v;
    out.push_back({{"exp_labels", labels}});
  }
  return out;
}

// The alerts fire on what the binaries serve, as Prometheus would hold it (the targets' labels
// merged in, counters flat): the quarantined volume, the unguarded rook-ceph DaemonSet, the
// invalid break-glass annotation and the claim without backups raise their alerts, with labels
// the annotations can name; the healthy webhook and sidecar raise
// nothing else; with no webhook replica scraped, StateguardWebhookDown fires.
TEST_F(Monitoring, AlertsFireOnWhatTheBinariesServe) {
  const std::string promtool = findProgram("promtool");
  if (promtool.empty()) GTEST_SKIP() << "promtool is not installed (Debian: prometheus)";
  const Catalog& c = catalog();
  const json rules = rulesWithoutAnnotations();
  std::map<std::string, json> ruleLabels;  // alert -> its labels (the first rule of that name)
  std::set<std::string> alerts;
  for (const json& group : rules["groups"])
    for (const json& rule : group["rules"]) {
      alerts.insert(rule["alert"].get<std::string>());
      ruleLabels.emplace(rule["alert"], rule["labels"]);
    }
  json series = json::array(), seriesWithoutUp = json::array();
  for (const Series& s : c.series) {
    char* end = nullptr;
    const double v = std::strtod(s.value.c_str(), &end);
    if (end == s.value.c_str() || !std::isfinite(v)) continue;  // +Inf, NaN: not needed
    const json one = {{"series", s.text()}, {"values", s.value + "+0x40"}};
    series.push_back(one);
    if (s.labels.count("job") && s.labels.at("job") == "stateguard-webhook-metrics")
      continue;  // no webhook replica scraped at all
    seriesWithoutUp.push_back(one);
  }
  const std::map<std::string, std::string> firing = {
      {"StateguardCSIVolumeQuarantined", "stateguard_csi_volume_quarantined"},
      {"StateguardCSIGuardMissing", "stateguard_csi_unguarded"}};
  json checks = json::array();
  for (const std::string& alert : alerts) {
    json expected = json::array();
    if (auto it = firing.find(alert); it != firing.end()) {
      expected = expectedAlerts(c, it->second, ruleLabels[alert]);
      EXPECT_EQ(expected.size(), 1u) << alert << ": the scraped series should raise it once";
    }
    // The background scan's hazards in the state file, aggregated as the alerts do.
    if (alert == "StateguardHazardPresent")
      expected = {
          {{"exp_labels",
            {{"severity", "warning"}, {"rule", "break-glass-annotation"}, {"kind", "Namespace"}}}}};
    if (alert == "StateguardBackupStale")
      expected = {{{"exp_labels", {{"severity", "warning"}, {"object_namespace", "shop"}}}}};
    checks.push_back({{"eval_time", "30m"}, {"alertname", alert}, {"exp_alerts", expected}});
  }
  json tests = json::array();
  tests.push_back({{"interval", "1m"}, {"input_series", series}, {"alert_rule_test", checks}});
  tests.push_back({{"interval", "1m"},
                   {"input_series", seriesWithoutUp},
                   {"alert_rule_test",
                    {{{"eval_time", "10m"},
                      {"alertname", "StateguardWebhookDown"},
                      {"exp_alerts", {{{"exp_labels", {{"severity", "critical"}}}}}}}}}});
  const std::string dir = makeTempDir("sg-promtool-test");
  writeText(dir + "/rules.yaml", rules.dump(2));
  writeText(
      dir + "/test.yaml",
      json{{"rule_files", {"rules.yaml"}}, {"evaluation_interval", "1m"}, {"tests", tests}}.dump(
          2));
  CommandResult r = runCommand(promtool, {"test", "rules", dir + "/test.yaml"});
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
  removeTree(dir);
}

// The check itself fails on a wrong name, a wrong label, a suffix on a family that is not a
// histogram, and a legend label aggregated away.
TEST_F(Monitoring, TheCheckCatchesWhatTheBinariesDoNotExport) {
  const Catalog& c = catalog();
  const auto ok = [&](const std::string& expr, std::set<std::string> templated = {}) {
    return problems(c, expr, templated);
  };
  EXPECT_EQ(ok("sum by (rule) (rate(stateguard_admission_requests_total{verdict=\"deny\"}[5m]))",
               {"rule"}),
            std::vector<std::string>{});
  EXPECT_EQ(ok("histogram_quantile(0.99, sum by (le) "
               "(rate(stateguard_admission_duration_seconds_bucket[$__rate_interval])))"),
            std::vector<std::string>{});
  EXPECT_EQ(ok("rate(stateguard_admission_request_total[5m])").size(), 1u);
  EXPECT_EQ(ok("stateguard_admission_requests_total{verdit=\"deny\"}").size(), 1u);
  EXPECT_EQ(ok("sum by (rulez) (stateguard_admission_requests_total)").size(), 1u);
  EXPECT_EQ(ok("rate(stateguard_audit_lines_total_count[5m])").size(), 1u);
  EXPECT_EQ(ok("sum by (code) (rate(stateguard_admission_rejected_total[5m]))", {"pod"}).size(),
            1u);
  EXPECT_EQ(ok("stateguard_csi_volume_quarantined", {"volume"}).size(), 1u);
  EXPECT_EQ(ok("absent(up{job=\"stateguard-webhook-metrics\"} == 1)"), std::vector<std::string>{});
}

}  // namespace
}  // namespace stateguard::testing
