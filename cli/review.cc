// stateguardctl review and rules: the webhook's engine offline on one AdmissionReview, and the
// list of registered rules.

#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "webhook/engine.h"
#include "webhook/registry.h"

namespace stateguard::cli {
namespace {

constexpr const char* kReviewUsage =
    R"(usage: stateguardctl review [--policy FILE] [--cluster-state FILE] REVIEW.json|-

Judges one admission.k8s.io/v1 AdmissionReview with the webhook's engine and prints the
AdmissionReview response. Exit 0 allowed, 1 denied, 2 unreadable input.
)";

constexpr const char* kRulesUsage = R"(usage: stateguardctl rules [-o text|json]

Lists every rule: id, default mode, parameters, and the resources and operations it guards
(json: what a ValidatingWebhookConfiguration must send).
)";

/// The rules as JSON: what a ValidatingWebhookConfiguration must send for each.
json rulesJson() {
  json out = json::array();
  for (const auto& rule : allRules()) {
    const RuleInfo& info = rule->info();
    json targets = json::array();
    for (const auto& t : info.targets) {
      targets.push_back(
          {{"apiGroup", t.apiGroup()},
           {"apiVersion", t.version},
           {"resource", t.subResource.empty() ? t.resource : t.resource + "/" + t.subResource},
           {"kind", t.kind},
           {"operations", t.operations}});
    }
    out.push_back({{"id", info.id},
                   {"summary", info.summary},
                   {"defaultMode", modeName(info.defaultMode)},
                   {"params", info.defaultParams},
                   {"breakGlassAllowed", info.breakGlassAllowed},
                   {"targets", targets}});
  }
  return out;
}

}  // namespace

int runReview(int argc, char** argv) {
  if (wantsHelp(argc, argv)) {
    std::cout << kReviewUsage;
    return 0;
  }
  auto flags = parseFlags(argc, argv, 2, {"policy", "cluster-state"}, {});
  if (!flags.ok()) return usageError(kReviewUsage, flags.error());
  const Flags& f = flags.value();
  if (f.positional.size() != 1)
    return usageError(kReviewUsage, "review takes exactly one REVIEW.json or -");
  auto policy = loadPolicyFlag(f);
  if (!policy.ok()) return usageError(kReviewUsage, policy.error());
  auto state = loadStateFlag(f);
  if (!state.ok()) return usageError(kReviewUsage, state.error());

  const std::string& path = f.positional.front();
  auto body = readFile(path);
  if (!body.ok()) return usageError(kReviewUsage, body.error());
  auto request = decodeReview(body.value());
  if (!request.ok()) {
    std::cerr << "stateguardctl: " << (path == "-" ? "stdin" : path)
              << " is not a usable AdmissionReview: " << request.error() << "\n";
    return 2;
  }
  Engine engine(allRules());
  Decision decision = engine.review(request.value(), *state.value(), policy.value(), Clock::now());
  std::cout << reviewResponseJson(request->uid, decision.response).dump(2) << "\n";
  return decision.response.allowed ? 0 : 1;
}

int runRules(int argc, char** argv) {
  if (wantsHelp(argc, argv)) {
    std::cout << kRulesUsage;
    return 0;
  }
  auto flags = parseFlags(argc, argv, 2, {"output", "o"}, {});
  if (!flags.ok()) return usageError(kRulesUsage, flags.error());
  const std::string format = flags->get("output", flags->get("o", "text"));
  if (format == "json") {
    std::cout << rulesJson().dump(2) << "\n";
    return 0;
  }
  if (format != "text") return usageError(kRulesUsage, "rules -o must be text or json");
  for (const auto& rule : allRules()) {
    const RuleInfo& info = rule->info();
    std::cout << info.id << "\n  " << info.summary
              << "\n  default mode: " << modeName(info.defaultMode) << "\n  parameters: "
              << (info.defaultParams.empty() ? "none" : info.defaultParams.dump()) << "\n  guards:";
    for (const auto& t : info.targets) {
      const std::string group = t.apiGroup().empty() ? "" : t.apiGroup() + "/";
      std::cout << " " << group << t.resource << (t.subResource.empty() ? "" : "/" + t.subResource)
                << "(";
      for (size_t i = 0; i < t.operations.size(); ++i)
        std::cout << (i ? "," : "") << t.operations[i];
      std::cout << ")";
    }
    std::cout << "\n";
  }
  return 0;
}

}  // namespace stateguard::cli
