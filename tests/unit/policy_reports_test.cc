// The PolicyReport the background scan writes for one namespace (webhook/policy_reports.h):
// results as the wgpolicyk8s.io v1alpha2 schema has them, timestamps kept from the first scan
// that found them, and a cap that keeps a report under etcd's object size limit.

#include "webhook/policy_reports.h"

#include <gtest/gtest.h>

namespace stateguard {
namespace {

scan::Finding finding(const std::string& rule, const std::string& name,
                      const std::string& severity) {
  return {rule,     "PersistentVolumeClaim",       "shop", name,
          severity, "claim shop/" + name + " ...", "v1"};
}

TEST(PolicyReport, ResultsSummaryAndResources) {
  const std::vector<scan::Finding> found = {finding("pvc-delete", "a", "error"),
                                            finding("backup-stale", "b", "warning"),
                                            finding("claim-unused", "c", "note")};
  std::vector<const scan::Finding*> ptrs;
  for (const auto& f : found) ptrs.push_back(&f);
  const auto now = Clock::from_time_t(1796394037);
  const json r = policyReportFor("shop", ptrs, {}, now);
  EXPECT_EQ(r["kind"], "PolicyReport");
  EXPECT_EQ(r["metadata"]["namespace"], "shop");
  EXPECT_EQ(r["metadata"]["labels"]["app.kubernetes.io/managed-by"], "stateguard");
  EXPECT_EQ(r["summary"], (json{{"pass", 0}, {"fail", 1}, {"warn", 2}, {"error", 0}, {"skip", 0}}));
  ASSERT_EQ(r["results"].size(), 3u);
  EXPECT_EQ(r["results"][0]["result"], "fail");
  EXPECT_EQ(r["results"][0]["severity"], "high");
  EXPECT_EQ(r["results"][1]["severity"], "medium");
  EXPECT_EQ(r["results"][2]["severity"], "info");
  EXPECT_EQ(r["results"][0]["resources"][0], (json{{"apiVersion", "v1"},
                                                   {"kind", "PersistentVolumeClaim"},
                                                   {"name", "a"},
                                                   {"namespace", "shop"}}));
  EXPECT_EQ(r["results"][0]["timestamp"], (json{{"seconds", 1796394037}, {"nanos", 0}}));
  EXPECT_FALSE(r["metadata"].contains("annotations"));

  const json cluster = policyReportFor("", ptrs, {}, now);
  EXPECT_EQ(cluster["kind"], "ClusterPolicyReport");
  EXPECT_FALSE(cluster["metadata"].contains("namespace"));
}

TEST(PolicyReport, AResultKeepsTheTimeItWasFirstFound) {
  const scan::Finding a = finding("backup-stale", "a", "warning");
  const scan::Finding b = finding("backup-stale", "b", "warning");
  const json earlier = {{"seconds", 100}, {"nanos", 0}};
  const json r =
      policyReportFor("shop", {&a, &b}, {{"backup-stale/PersistentVolumeClaim/shop/a", earlier}},
                      Clock::from_time_t(5000));
  EXPECT_EQ(r["results"][0]["timestamp"], earlier);
  EXPECT_EQ(r["results"][1]["timestamp"]["seconds"], 5000);
}

TEST(PolicyReport, ACrowdedNamespaceIsCappedAndSaysHowManyWereLeftOut) {
  std::vector<scan::Finding> found;
  for (size_t i = 0; i < kMaxReportResults + 7; ++i)
    found.push_back(finding("claim-unused", "c" + std::to_string(i), "note"));
  std::vector<const scan::Finding*> ptrs;
  for (const auto& f : found) ptrs.push_back(&f);
  const json r = policyReportFor("shop", ptrs, {}, Clock::now());
  EXPECT_EQ(r["results"].size(), kMaxReportResults);
  EXPECT_EQ(r["summary"]["warn"], kMaxReportResults + 7) << "the summary counts every finding";
  EXPECT_EQ(r["metadata"]["annotations"]["stateguard.io/results-omitted"], "7");
  EXPECT_LT(r.dump().size(), size_t{1} << 20);
}

}  // namespace
}  // namespace stateguard
