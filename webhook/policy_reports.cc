#include "webhook/policy_reports.h"

#include <functional>
#include <map>

#include "core/k8s.h"
#include "core/log.h"

namespace stateguard {
namespace {

const std::string kApi = "/apis/wgpolicyk8s.io/v1alpha2";
const std::string kName = "stateguard";
const std::string kOmitted = "stateguard.io/results-omitted";
const std::string kOurs = "labelSelector=" + urlEncode("app.kubernetes.io/managed-by=stateguard");

std::string reportPath(const std::string& ns, bool withName) {
  std::string p =
      ns.empty() ? kApi + "/clusterpolicyreports" : kApi + "/namespaces/" + ns + "/policyreports";
  return withName ? p + "/" + kName : p;
}

/// rule/kind/namespace/name of a result as written (its first resource).
std::string resultKey(const json& result) {
  const json& resources = k8s::at(result, "/resources");
  const json& r = resources.is_array() && !resources.empty() ? resources[0] : json::object();
  return k8s::str(result, "/rule") + "/" + k8s::str(r, "/kind") + "/" + k8s::str(r, "/namespace") +
         "/" + k8s::str(r, "/name");
}

std::string omitted(const json& report) {
  const json& a = k8s::at(report, "/metadata/annotations");
  return a.is_object() && a.contains(kOmitted) && a[kOmitted].is_string()
             ? a[kOmitted].get<std::string>()
             : "";
}

/// What a reader sees change: results, summary and the omitted count (not metadata).
size_t contentHash(const json& report) {
  return std::hash<std::string>{}(k8s::at(report, "/results").dump() + "\n" +
                                  k8s::at(report, "/summary").dump() + "\n" + omitted(report));
}

}  // namespace

json policyReportFor(const std::string& ns, const std::vector<const scan::Finding*>& findings,
                     const std::map<std::string, json>& firstSeen, Clock::time_point now) {
  json summary = {{"pass", 0}, {"fail", 0}, {"warn", 0}, {"error", 0}, {"skip", 0}};
  json results = json::array();
  const json stamp = {
      {"seconds", std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count()},
      {"nanos", 0}};
  for (const scan::Finding* f : findings) {
    // error: the rule would refuse it now; warning: at risk; note: for the record.
    const char* result = f->severity == "error" ? "fail" : "warn";
    summary[result] = summary[result].get<int>() + 1;
    if (results.size() >= kMaxReportResults) continue;
    json resource = {{"apiVersion", f->apiVersion}, {"kind", f->kind}, {"name", f->name}};
    if (!f->ns.empty()) resource["namespace"] = f->ns;
    json r = {{"source", "stateguard"},
              {"policy", "stateguard"},
              {"rule", f->rule},
              {"category", "Data protection"},
              {"severity", f->severity == "error"     ? "high"
                           : f->severity == "warning" ? "medium"
                                                      : "info"},
              {"result", result},
              {"scored", true},
              {"message", f->message},
              {"resources", json::array({resource})}};
    auto seen = firstSeen.find(resultKey(r));
    r["timestamp"] = seen != firstSeen.end() ? seen->second : stamp;
    results.push_back(std::move(r));
  }
  json meta = {
      {"name", kName},
      {"labels",
       {{"app.kubernetes.io/managed-by", "stateguard"}, {"app.kubernetes.io/name", "stateguard"}}}};
  if (!ns.empty()) meta["namespace"] = ns;
  if (findings.size() > results.size())
    meta["annotations"] = {{kOmitted, std::to_string(findings.size() - results.size())}};
  return {{"apiVersion", "wgpolicyk8s.io/v1alpha2"},
          {"kind", ns.empty() ? "ClusterPolicyReport" : "PolicyReport"},
          {"metadata", meta},
          {"summary", summary},
          {"results", results}};
}

PolicyReportWriter::PolicyReportWriter(KubeClientPtr client) : client_(std::move(client)) {}

std::string PolicyReportWriter::publish(const scan::Report& report, Clock::time_point now) {
  // The reports written before (by this replica or another leader): to update, and to delete
  // where nothing is left. Read in pages, keeping of each only its resourceVersion, a hash of its
  // content and its results' first-seen times, so that a cluster with thousands of reports is
  // never held whole.
  struct Existing {
    std::string resourceVersion;
    size_t content = 0;
  };
  std::map<std::string, Existing> existing;
  std::map<std::string, json> firstSeen;
  for (const bool cluster : {false, true}) {
    std::string token;
    do {
      KubeResponse list = client_->request(
          (cluster ? kApi + "/clusterpolicyreports" : kApi + "/policyreports") + "?" + kOurs +
          "&limit=50" + (token.empty() ? "" : "&continue=" + urlEncode(token)));
      if (list.status == 404) {
        std::lock_guard lock(mu_);
        available_ = false;
        if (!absenceLogged_)
          log::warn(
              "background scan: the PolicyReport CRDs (wgpolicyk8s.io/v1alpha2 policyreports and "
              "clusterpolicyreports) are not installed, so findings are not written as "
              "PolicyReports; they are still in /metrics (stateguard_scan_findings) and in "
              "`stateguardctl scan`. Install the CRDs (Kyverno and Policy Reporter ship them) to "
              "get reports; this is checked again at every scan.");
        absenceLogged_ = true;
        return "";
      }
      if (!list.ok()) {
        std::lock_guard lock(mu_);
        ++failures_;
        return "cannot list PolicyReports: " + list.error;
      }
      for (const json& item : k8s::at(list.body, "/items")) {
        if (k8s::name(item) != kName) continue;
        existing[cluster ? "" : k8s::namespaceOf(item)] = {
            k8s::str(item, "/metadata/resourceVersion"), contentHash(item)};
        for (const json& result : k8s::at(item, "/results"))
          if (result.contains("timestamp")) firstSeen[resultKey(result)] = result["timestamp"];
      }
      token = k8s::str(list.body, "/metadata/continue");
    } while (!token.empty());
  }
  {
    std::lock_guard lock(mu_);
    if (!available_) log::info("background scan: the PolicyReport CRDs are installed now");
    available_ = true;
    absenceLogged_ = false;
  }

  std::map<std::string, std::vector<const scan::Finding*>> byNamespace;
  for (const scan::Finding& f : report.findings) byNamespace[f.ns].push_back(&f);

  std::string failure;
  uint64_t writes = 0;
  for (const auto& [ns, findings] : byNamespace) {
    json desired = policyReportFor(ns, findings, firstSeen, now);
    auto old = existing.find(ns);
    KubeResponse r;
    if (old == existing.end()) {
      r = client_->post(reportPath(ns, false), desired);
    } else if (old->second.content == contentHash(desired)) {
      continue;
    } else {
      desired["metadata"]["resourceVersion"] = old->second.resourceVersion;
      r = client_->put(reportPath(ns, true), desired);
    }
    if (r.ok()) {
      ++writes;
    } else if (failure.empty()) {
      failure = r.error;  // 409 included: the next scan starts from what is there then
    }
  }
  for (const auto& [ns, r] : existing) {
    if (byNamespace.count(ns)) continue;
    KubeResponse d = client_->remove(reportPath(ns, true));
    if (d.ok() || d.status == 404) {
      ++writes;
    } else if (failure.empty()) {
      failure = d.error;
    }
  }
  std::lock_guard lock(mu_);
  writes_ += writes;
  if (!failure.empty()) ++failures_;
  return failure;
}

bool PolicyReportWriter::available() const {
  std::lock_guard lock(mu_);
  return available_;
}

uint64_t PolicyReportWriter::writes() const {
  std::lock_guard lock(mu_);
  return writes_;
}

uint64_t PolicyReportWriter::failures() const {
  std::lock_guard lock(mu_);
  return failures_;
}

}  // namespace stateguard
