// Policy parsing: defaults, shorthand, parameters, and errors that name the offending key.

#include "core/policy.h"

#include <gtest/gtest.h>

#include "webhook/registry.h"

namespace stateguard {
namespace {

Result<Policy> parse(const std::string& text) {
  return parsePolicy(text, "policy.yaml", ruleDefaults());
}

TEST(Policy, EmptyFileMeansDefaults) {
  auto p = parse("");
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(p->modeOf("pv-delete"), Mode::Enforce);
  EXPECT_EQ(p->paramsOf("namespace-delete")["maxListed"], 10);
  EXPECT_EQ(p->breakGlass.groups, std::vector<std::string>{"stateguard:break-glass"});
}

TEST(Policy, ModesParamsAndBreakGlass) {
  auto p = parse(R"(
apiVersion: stateguard.io/v1alpha1
kind: Policy
breakGlass: {groups: [sre, oncall], annotation: example.com/allow, maxDurationHours: 4}
rules:
  pv-delete: warn
  pvc-delete: {mode: audit}
  namespace-delete: {params: {maxListed: 3}}
  reclaim-policy: "off"
)");
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(p->modeOf("pv-delete"), Mode::Warn);
  EXPECT_EQ(p->modeOf("pvc-delete"), Mode::Audit);
  EXPECT_EQ(p->modeOf("reclaim-policy"), Mode::Off);
  EXPECT_EQ(p->modeOf("namespace-delete"), Mode::Enforce);
  EXPECT_EQ(p->paramsOf("namespace-delete")["maxListed"], 3);
  EXPECT_EQ(p->breakGlass.groups, (std::vector<std::string>{"sre", "oncall"}));
  EXPECT_EQ(p->breakGlass.annotation, "example.com/allow");
  EXPECT_EQ(p->breakGlass.maxDuration, std::chrono::hours(4));
}

TEST(Policy, ControllerIdentitiesDefaultToKubeControllerManagerAndCanBeReplaced) {
  auto defaults = parse("");
  ASSERT_TRUE(defaults.ok()) << defaults.error();
  EXPECT_EQ(defaults->controllers.pvProtection,
            (std::vector<std::string>{"system:serviceaccount:kube-system:pv-protection-controller",
                                      "system:kube-controller-manager"}));
  auto p = parse(R"(
controllers:
  volumeReclaim: ["system:serviceaccount:longhorn-system:longhorn-service-account"]
  namespace: []
)");
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(
      p->controllers.volumeReclaim,
      std::vector<std::string>{"system:serviceaccount:longhorn-system:longhorn-service-account"});
  EXPECT_TRUE(p->controllers.namespaceCleanup.empty());
  EXPECT_EQ(p->controllers.garbageCollector, defaults->controllers.garbageCollector);
}

struct BadPolicy {
  const char* text;
  const char* error;
};

class PolicyErrors : public ::testing::TestWithParam<BadPolicy> {};

TEST_P(PolicyErrors, NameTheProblem) {
  auto p = parse(GetParam().text);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().find(GetParam().error), std::string::npos) << p.error();
  EXPECT_EQ(p.error().rfind("policy.yaml", 0), 0u) << "errors start with the file: " << p.error();
}

INSTANTIATE_TEST_SUITE_P(
    All, PolicyErrors,
    ::testing::Values(
        BadPolicy{"rules: {nope: enforce}", "unknown rule \"nope\" (known rules: pv-delete"},
        BadPolicy{"rules: {pv-delete: maybe}", "mode \"maybe\" is not one of"},
        BadPolicy{"rules: {pv-delete: {mode: 3}}", "rules.pv-delete.mode must be one of"},
        BadPolicy{"rules: {namespace-delete: {params: {max: 1}}}",
                  "params.max is not a parameter of namespace-delete (accepted: maxListed)"},
        BadPolicy{"rules: {pv-delete: {params: {x: 1}}}", "(it takes none)"},
        BadPolicy{"rules: {namespace-delete: {params: {maxListed: many}}}",
                  "maxListed must be a number, got string"},
        BadPolicy{"rules: {pv-delete: {mood: warn}}", "unknown key rules.pv-delete.mood"},
        BadPolicy{"rulez: {}", "unknown key \"rulez\""},
        BadPolicy{"breakGlass: {groups: admins}", "breakGlass.groups must be a list of strings"},
        BadPolicy{"breakGlass: {maxDurationHours: -1}", "from 1 to 8760"},
        BadPolicy{"controllers: {gc: []}", "unknown key controllers.gc (expected pvProtection"},
        BadPolicy{"controllers: {namespace: kube}", "controllers.namespace must be a list"},
        BadPolicy{"controllers: [a]", "controllers must be a mapping"},
        BadPolicy{"rules: {namespace-delete: {params: {maxListed: 1e300}}}",
                  "must be a whole number from 0 to 1000000"},
        BadPolicy{"rules: {namespace-delete: {params: {maxListed: 2.5}}}",
                  "must be a whole number"},
        BadPolicy{"{\"rules\": {\"namespace-delete\": {\"params\": {\"maxListed\": 1e999}}}}",
                  "maxListed must be a number, got string"},
        BadPolicy{"[1],", "invalid"}, BadPolicy{"kind: Deployment", "kind must be Policy"},
        BadPolicy{"- a\n- b", "the policy must be a mapping"},
        BadPolicy{"rules: {pv-delete: [", "invalid YAML at line 1"},
        BadPolicy{"a: 1\n---\nb: 2", "expected one YAML document"}));

}  // namespace
}  // namespace stateguard
