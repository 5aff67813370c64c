// Runs every webhook/rules/<rule>/suite.yaml case through the engine in-process, and checks
// that every registered rule has a suite with allowed and denied samples.

#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <set>

#include "core/audit.h"
#include "core/json_writer.h"
#include "core/projection.h"
#include "tests/support/suite.h"
#include "webhook/engine.h"
#include "webhook/registry.h"

namespace stateguard::testing {
namespace {

struct CaseRef {
  size_t suite;
  size_t index;
};

const std::vector<Suite>& suites() {
  static const std::vector<Suite> kSuites = loadSuites();
  return kSuites;
}

std::vector<CaseRef> allCases() {
  std::vector<CaseRef> out;
  for (size_t s = 0; s < suites().size(); ++s) {
    for (size_t c = 0; c < suites()[s].cases.size(); ++c) out.push_back({s, c});
  }
  return out;
}

/// The policy a suite case runs under: its own, else the defaults. A case policy that does not
/// parse fails the calling test.
Policy casePolicy(const SuiteCase& c) {
  if (c.policy.is_null()) return defaultPolicy(ruleDefaults());
  auto parsed = parsePolicy(c.policy.dump(), "case policy", ruleDefaults());
  if (!parsed.ok()) {
    ADD_FAILURE() << c.name << ": " << parsed.error();
    return defaultPolicy(ruleDefaults());
  }
  return parsed.value();
}

class RuleSuiteTest : public ::testing::TestWithParam<CaseRef> {};

TEST_P(RuleSuiteTest, EngineGivesTheExpectedVerdict) {
  const Suite& suite = suites()[GetParam().suite];
  const SuiteCase& c = suite.cases[GetParam().index];
  SCOPED_TRACE(suite.path + ": " + c.name);

  auto state = loadClusterStateText(suite.state.dump(), suite.path);
  ASSERT_TRUE(state.ok()) << state.error();
  Policy policy = casePolicy(c);
  auto request = decodeReview(c.review.dump());
  ASSERT_TRUE(request.ok()) << request.error();
  Engine engine(allRules());
  Decision d = engine.review(request.value(), *state.value(), policy, Clock::now());
  EXPECT_EQ(checkResponse(c, reviewResponseJson(request->uid, d.response)), "");
  // The webhook writes the response and the audit line by hand: byte for byte what the json
  // forms dump.
  EXPECT_EQ(encodeReviewResponse(request->uid, d.response),
            reviewResponseJson(request->uid, d.response)
                .dump(-1, ' ', false, json::error_handler_t::replace));
  EXPECT_EQ(auditLine(request.value(), d, "2026-11-21T10:00:00.000Z"),
            auditLine(auditRecord(request.value(), d, "2026-11-21T10:00:00.000Z")));
  if (!c.expect.verdict.empty()) {
    EXPECT_EQ(d.verdict, c.expect.verdict);
  }
  if (!d.response.allowed) {
    EXPECT_EQ(d.rule, suite.rule) << "denied by another rule than the suite's";
  }
}

INSTANTIATE_TEST_SUITE_P(AllSuites, RuleSuiteTest, ::testing::ValuesIn(allCases()),
                         [](const ::testing::TestParamInfo<CaseRef>& p) {
                           std::string name =
                               suites()[p.param.suite].rule + "_" + std::to_string(p.param.index);
                           for (auto& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

// Issue 15: the cache keeps only the fields rules read (core/projection.h). Every case of every
// rule suite must get the same answer, verdicts and messages with the projection as without it;
// a rule that starts reading a field the projection drops fails here (as long as some suite's
// state holds that field).
TEST(CacheProjection, EveryRuleSuiteGetsTheSameAnswerWithAndWithoutIt) {
  auto judge = [](const Suite& suite, const SuiteCase& c, bool project) {
    setCacheProjection(project);
    auto state = loadClusterStateText(suite.state.dump(), suite.path);
    setCacheProjection(true);
    if (!state.ok()) return json(state.error());
    Policy policy = casePolicy(c);
    auto request = decodeReview(c.review.dump());
    if (!request.ok()) return json(request.error());
    Engine engine(allRules());
    Decision d = engine.review(request.value(), *state.value(), policy, Clock::now());
    return auditRecord(request.value(), d, "t");
  };
  size_t compared = 0;
  for (const Suite& suite : suites()) {
    for (const SuiteCase& c : suite.cases) {
      EXPECT_EQ(judge(suite, c, true), judge(suite, c, false))
          << suite.path << ": " << c.name << ": the projection changed the answer";
      ++compared;
    }
  }
  EXPECT_GT(compared, 100u);
}

TEST(CacheProjection, KeepsWhatRulesReadOfAPodAndDropsTheRest) {
  json pod = json::parse(R"({
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "registry-0", "namespace": "infra", "uid": "u1", "resourceVersion": "7",
      "labels": {"app": "registry"},
      "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "a": "b"},
      "ownerReferences": [{"kind": "StatefulSet", "name": "registry", "apiVersion": "apps/v1",
                           "blockOwnerDeletion": true}],
      "finalizers": ["example.com/f"],
      "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
      "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"nodeName": "n1", "serviceAccountName": "default",
      "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-registry-0"}},
                  {"name": "token", "projected": {"sources": []}}],
      "initContainers": [{"name": "init", "image": "busybox:1", "command": ["true"]}],
      "containers": [{"name": "registry", "image": "registry:2", "env": [{"name": "A"}],
                      "args": ["--drivername=x"],
                      "resources": {"limits": {"memory": "1Gi"}}}]},
    "status": {"phase": "Running", "conditions": [{"type": "Ready"}], "podIP": "10.0.0.1"}})");
  projectForCache("Pod", pod);
  EXPECT_EQ(pod, json::parse(R"({
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "registry-0", "namespace": "infra", "uid": "u1",
      "labels": {"app": "registry"},
      "ownerReferences": [{"kind": "StatefulSet", "name": "registry", "apiVersion": "apps/v1"}]},
    "spec": {"nodeName": "n1",
      "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-registry-0"}}],
      "initContainers": [{"name": "init", "image": "busybox:1"}],
      "containers": [{"name": "registry", "image": "registry:2", "args": ["--drivername=x"]}]},
    "status": {"phase": "Running"}})"));
  // Other kinds lose only managedFields and the last-applied copy.
  json pv = json::parse(R"({"kind": "PersistentVolume", "metadata": {"name": "pv1",
    "managedFields": [{}], "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x"}},
    "spec": {"persistentVolumeReclaimPolicy": "Retain"}, "status": {"phase": "Bound"}})");
  projectForCache("PersistentVolume", pv);
  EXPECT_EQ(pv, json::parse(R"({"kind": "PersistentVolume", "metadata": {"name": "pv1"},
    "spec": {"persistentVolumeReclaimPolicy": "Retain"}, "status": {"phase": "Bound"}})"));
  json again = pv;
  projectForCache("PersistentVolume", again);
  EXPECT_EQ(again, pv) << "projecting twice changes the object";
}

TEST(JsonWriter, EscapesLikeNlohmannForEveryByte) {
  std::vector<std::string> samples = {"",
                                      "plain",
                                      "quote \" backslash \\ slash /",
                                      "tab\tnewline\nreturn\rbell\x07 nul",
                                      "\x7f del",
                                      "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x92\xbe",
                                      "bad \xff\xfe utf-8 \xc3",
                                      "\b\f\x1f"};
  samples[4][0] = '\0';
  samples.back() += std::string(1, '\0');
  for (int c = 0; c < 256; ++c) samples.push_back(std::string("x") + static_cast<char>(c) + "y");
  for (const auto& s : samples) {
    std::string mine;
    appendJsonString(mine, s);
    EXPECT_EQ(mine, json(s).dump(-1, ' ', false, json::error_handler_t::replace)) << s;
  }
}

// Issue 17: a warning is what kubectl prints as "Warning: ...", and the engine cuts it at 119
// characters with "...". Every finding of every rule on every suite case, whether the rule
// enforces or warns, must fit whole: "stateguard <rule>: <warning>" under 120 characters.
TEST(RuleSuites, EveryWarningFitsIn120Characters) {
  size_t checked = 0;
  for (const Suite& suite : suites()) {
    auto state = loadClusterStateText(suite.state.dump(), suite.path);
    ASSERT_TRUE(state.ok()) << state.error();
    for (const SuiteCase& c : suite.cases) {
      Policy policy = casePolicy(c);
      auto request = decodeReview(c.review.dump());
      ASSERT_TRUE(request.ok()) << request.error();
      for (const auto& rule : allRules()) {
        if (!rule->appliesTo(request.value())) continue;
        const std::string& id = rule->info().id;
        RuleContext ctx{request.value(), *state.value(), policy.paramsOf(id), policy, Clock::now()};
        for (const Finding& f : rule->evaluate(ctx)) {
          const std::string shown = "stateguard " + id + ": " + f.warning;
          // For reviewing the texts all at once (docs/development.md).
          if (std::getenv("STATEGUARD_PRINT_FINDINGS") != nullptr) {
            std::cout << suite.path << ": " << c.name << "\n  warning: " << shown
                      << "\n  message: " << f.message << "\n";
          }
          EXPECT_FALSE(f.warning.empty())
              << suite.path << ": " << c.name << ": " << id << " gave a finding without a warning";
          EXPECT_LT(shown.size(), 120u)
              << suite.path << ": " << c.name << ": " << shown.size() << " characters: " << shown;
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 50u);
}

TEST(RuleSuites, EveryRuleHasAllowedAndDeniedSamples) {
  std::set<std::string> withSuite;
  for (const auto& suite : suites()) {
    withSuite.insert(suite.rule);
    size_t allowed = 0, denied = 0;
    for (const auto& c : suite.cases) (c.expect.allowed ? allowed : denied)++;
    EXPECT_GT(allowed, 0u) << suite.path << " has no allowed sample";
    EXPECT_GT(denied, 0u) << suite.path << " has no denied sample";
  }
  for (const auto& rule : allRules()) {
    EXPECT_TRUE(withSuite.count(rule->info().id))
        << "rule " << rule->info().id << " has no suite.yaml";
  }
}

}  // namespace
}  // namespace stateguard::testing
