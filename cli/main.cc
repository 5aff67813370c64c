// stateguardctl: the webhook's rules offline. `review` judges one AdmissionReview exactly as the
// webhook would; `rules` lists every rule with its default mode and parameters.

#include <iostream>

#include "core/flags.h"
#include "core/log.h"
#include "webhook/engine.h"
#include "webhook/registry.h"

using namespace stateguard;

namespace {

constexpr const char* kUsage = R"(usage: stateguardctl COMMAND [options]

commands:
  review [--policy FILE] [--cluster-state FILE] REVIEW.json|-
      Judge one admission.k8s.io/v1 AdmissionReview offline with the webhook's engine and
      print the AdmissionReview response. Exit 0 allowed, 1 denied, 2 unreadable input.
  rules [-o text|json]
      List every rule: id, default mode, parameters, the resources and operations it guards
      (json: what a ValidatingWebhookConfiguration must send).
)";

int usageError(const std::string& message) {
  std::cerr << "stateguardctl: " << message << "\n\n" << kUsage;
  return 2;
}

int review(int argc, char** argv) {
  auto flags = parseFlags(argc, argv, 2, {"policy", "cluster-state"}, {});
  if (!flags.ok()) return usageError(flags.error());
  const Flags& f = flags.value();
  if (f.positional.size() != 1) return usageError("review takes exactly one REVIEW.json or -");

  Policy policy = defaultPolicy(ruleDefaults());
  if (f.has("policy")) {
    auto text = readFile(f.get("policy"));
    if (!text.ok()) return usageError("policy: " + text.error());
    auto parsed = parsePolicy(text.value(), f.get("policy"), ruleDefaults());
    if (!parsed.ok()) return usageError("policy: " + parsed.error());
    policy = std::move(parsed).value();
  }
  ObjectStorePtr state = std::make_shared<ObjectStore>();
  if (f.has("cluster-state")) {
    auto loaded = loadClusterStateFile(f.get("cluster-state"));
    if (!loaded.ok()) return usageError(loaded.error());
    state = loaded.value();
  }
  const std::string& path = f.positional.front();
  auto body = readFile(path);
  if (!body.ok()) return usageError(body.error());
  auto request = decodeReview(body.value());
  if (!request.ok()) {
    std::cerr << "stateguardctl: " << (path == "-" ? "stdin" : path)
              << " is not a usable AdmissionReview: " << request.error() << "\n";
    return 2;
  }
  Engine engine(allRules());
  Decision decision = engine.review(request.value(), *state, policy, Clock::now());
  std::cout << reviewResponseJson(request->uid, decision.response).dump(2) << "\n";
  return decision.response.allowed ? 0 : 1;
}

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

int listRules(int argc, char** argv) {
  auto flags = parseFlags(argc, argv, 2, {"output", "o"}, {});
  if (!flags.ok()) return usageError(flags.error());
  const std::string format = flags->get("output", flags->get("o", "text"));
  if (format == "json") {
    std::cout << rulesJson().dump(2) << "\n";
    return 0;
  }
  if (format != "text") return usageError("rules -o must be text or json");
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

}  // namespace

int main(int argc, char** argv) {
  log::setQuiet(true);
  if (argc < 2) return usageError("no command given");
  const std::string command = argv[1];
  if (command == "review") return review(argc, argv);
  if (command == "rules") return listRules(argc, argv);
  if (command == "help" || command == "--help" || command == "-h") {
    std::cout << kUsage;
    return 0;
  }
  return usageError("unknown command \"" + command + "\"");
}
