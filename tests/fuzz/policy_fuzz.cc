// libFuzzer target: policy YAML through parsePolicy with the registered rules' defaults. A
// policy that parses must name every registered rule with valid parameters.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "core/log.h"
#include "core/policy.h"
#include "webhook/registry.h"

namespace {
const std::vector<stateguard::RuleDefaults>& defaults() {
  static const auto* const kDefaults =
      new std::vector<stateguard::RuleDefaults>(stateguard::ruleDefaults());
  return *kDefaults;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stateguard::log::setQuiet(true);
  defaults();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stateguard;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto policy = parsePolicy(text, "fuzz", defaults());
  if (!policy.ok()) return 0;
  for (const auto& rule : defaults()) {
    if (policy->rules.count(rule.id) == 0) {
      std::fprintf(stderr, "policy_fuzz: parsed policy lost rule %s\n", rule.id.c_str());
      std::abort();
    }
    (void)modeName(policy->modeOf(rule.id));
    for (const auto& [key, value] : policy->paramsOf(rule.id).items()) {
      if (!rule.params.contains(key)) {
        std::fprintf(stderr, "policy_fuzz: parsed policy has unknown parameter %s.%s\n",
                     rule.id.c_str(), key.c_str());
        std::abort();
      }
    }
  }
  return 0;
}
