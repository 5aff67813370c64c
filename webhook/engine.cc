#include "webhook/engine.h"

#include "core/json_writer.h"
#include "core/k8s.h"
#include "core/timeutil.h"
#include "webhook/break_glass.h"
#include "webhook/controllers.h"
#include "webhook/rules/common.h"

namespace stateguard {

std::string shortWarning(const std::string& text) {
  constexpr size_t kMax = 119;
  if (text.size() <= kMax) return text;
  size_t cut = kMax - 3;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
    --cut;  // UTF-8 boundary
  return text.substr(0, cut) + "...";
}

namespace {
int rank(const std::string& verdict) {
  if (verdict == "deny") return 4;
  if (verdict == "break-glass") return 3;
  if (verdict == "warn") return 2;
  if (verdict == "audit") return 1;
  return 0;
}

/// Requests whose allowance can destroy data: deletions, updates of volumes and claims
/// (finalizers, reclaim policy, owners), and StatefulSet updates that lower replicas or change
/// claim retention. A rollout or a scale-up is not one, and costs no API call.
bool destroysData(const AdmissionRequest& request) {
  if (request.operation == "DELETE") return true;
  if (request.operation != "UPDATE") return false;
  if (request.kind == "PersistentVolume" || request.kind == "PersistentVolumeClaim") return true;
  if (request.kind != "StatefulSet" && request.kind != "Scale") return false;
  return rules::replicas(request.object) < rules::replicas(request.oldObject) ||
         k8s::at(request.object, "/spec/persistentVolumeClaimRetentionPolicy") !=
             k8s::at(request.oldObject, "/spec/persistentVolumeClaimRetentionPolicy");
}

/// Passes reads through to a cluster state, noting whether any read a kind that confirmedLive()
/// names: only those decisions are confirmed against the apiserver.
class ReadTracker : public ClusterState {
 public:
  explicit ReadTracker(const ClusterState& state) : state_(state) {}
  bool ready() const override { return state_.ready(); }
  ObjectPtr get(const std::string& kind, const std::string& ns,
                const std::string& name) const override {
    note(kind);
    return state_.get(kind, ns, name);
  }
  std::vector<ObjectPtr> list(const std::string& kind, const std::string& ns) const override {
    note(kind);
    return state_.list(kind, ns);
  }
  bool readLaggingKinds() const { return read_; }

 private:
  void note(const std::string& kind) const { read_ = read_ || confirmedLive(kind); }
  const ClusterState& state_;
  mutable bool read_ = false;
};
}  // namespace

Engine::Engine(const std::vector<RulePtr>& rules) {
  for (const auto& rule : rules) {
    for (const auto& t : rule->info().targets) {
      auto& list = byKind_[t.group + "/" + t.kind];
      if (list.empty() || list.back() != rule.get()) list.push_back(rule.get());
    }
  }
}

const std::vector<const Rule*>& Engine::candidates(const AdmissionRequest& request) const {
  static const std::vector<const Rule*> kNone;
  std::string key;
  key.reserve(request.group.size() + 1 + request.kind.size());
  key += request.group;
  key += '/';
  key += request.kind;
  auto it = byKind_.find(key);
  return it == byKind_.end() ? kNone : it->second;
}

Decision Engine::review(const AdmissionRequest& request, const ClusterState& state,
                        const Policy& policy, Clock::time_point now) const {
  if (auto pass = controllerExemption(request, state, policy.controllers)) {
    Decision d;
    d.verdict = "exempt";
    d.verdicts.push_back({"", "exempt", "not judged: " + *pass});
    return d;
  }
  ReadTracker tracked(state);
  Decision d = judge(request, tracked, policy, now);
  if (!d.response.allowed || !tracked.readLaggingKinds() || !destroysData(request)) return d;
  auto live = state.liveView();
  if (!live) return d;
  Decision confirmed = judge(request, *live, policy, now);
  confirmed.liveReads = live->reads();
  if (live->error().empty()) return confirmed;
  Decision refused;
  refused.liveReads = live->reads();
  refused.verdict = "deny";
  refused.response.allowed = false;
  refused.response.code = 503;
  refused.response.message =
      "stateguard refused this " + request.operation + " of " + request.describe() +
      " for now: it was allowed on cached cluster state, which must be confirmed from the API "
      "server before anything is destroyed, and that read failed (" +
      live->error() + "). Nothing was changed; retry in a moment.";
  refused.verdicts.push_back({"", "deny", refused.response.message});
  return refused;
}

Decision Engine::judge(const AdmissionRequest& request, const ClusterState& state,
                       const Policy& policy, Clock::time_point now) const {
  Decision d;
  d.verdict = "allow";
  std::vector<std::string> denials;
  for (const Rule* rule : candidates(request)) {
    if (!rule->appliesTo(request)) continue;
    const RuleInfo& info = rule->info();
    Mode mode = policy.modeOf(info.id);
    if (mode == Mode::Off) continue;
    RuleContext ctx{request, state, policy.paramsOf(info.id), policy, now};
    for (auto& finding : rule->evaluate(ctx)) {
      RuleVerdict v{info.id, "", finding.message};
      const std::string tag = "stateguard " + info.id + ": ";
      if (finding.severity == Finding::Severity::Notice) {
        v.verdict = mode == Mode::Audit ? "audit" : "notice";
        if (mode != Mode::Audit) d.response.warnings.push_back(shortWarning(tag + finding.warning));
      } else if (mode == Mode::Warn) {
        v.verdict = "warn";
        d.response.warnings.push_back(shortWarning(tag + finding.warning));
      } else if (mode == Mode::Audit) {
        v.verdict = "audit";
      } else {
        BreakGlassGrant grant;
        if (info.breakGlassAllowed)
          grant = checkBreakGlass(request, policy.breakGlass, info.id, now);
        if (grant.granted) {
          v.verdict = "break-glass";
          d.breakGlassReason = grant.reason;
          d.response.warnings.push_back(shortWarning(
              tag + "break-glass by " + request.user.username + " (audited): " + grant.reason));
        } else {
          v.verdict = "deny";
          std::string text = "[" + info.id + "] " + finding.message;
          if (!grant.explanation.empty())
            text += " (break-glass not applied: " + grant.explanation + ")";
          denials.push_back(std::move(text));
        }
      }
      const std::string overall = v.verdict == "notice" ? "warn" : v.verdict;
      if (rank(overall) > rank(d.verdict)) {
        d.verdict = overall;
        d.rule = info.id;
      }
      d.verdicts.push_back(std::move(v));
    }
  }
  if (!denials.empty()) {
    d.response.allowed = false;
    d.response.code = 403;
    std::string msg =
        "stateguard refused this " + request.operation + " of " + request.describe() + ": ";
    for (size_t i = 0; i < denials.size(); ++i) msg += (i ? " ALSO: " : "") + denials[i];
    d.response.message = std::move(msg);
  }
  return d;
}

json auditRecord(const AdmissionRequest& request, const Decision& decision, const std::string& time,
                 const AuditCaller* caller) {
  json rules = json::array();
  for (const auto& v : decision.verdicts) {
    rules.push_back({{"rule", v.rule}, {"verdict", v.verdict}, {"message", v.message}});
  }
  json record = {
      {"time", time},
      {"component", "webhook"},
      {"uid", request.uid},
      {"user", request.user.username},
      {"groups", request.user.groups},
      {"operation", request.operation},
      {"kind", request.kind},
      {"namespace", request.ns},
      {"name", request.name},
      {"rule", decision.rule},
      {"verdict", decision.verdict},
      {"message", decision.response.allowed
                      ? (decision.verdicts.empty() ? "" : decision.verdicts.front().message)
                      : decision.response.message},
      {"dryRun", request.dryRun},
      {"breakGlass", decision.verdict == "break-glass"},
      {"rules", std::move(rules)},
  };
  if (!decision.breakGlassReason.empty()) record["breakGlassReason"] = decision.breakGlassReason;
  if (caller != nullptr)
    record["caller"] = {{"name", caller->name}, {"verified", caller->verified}};
  return record;
}

std::string auditLine(const AdmissionRequest& request, const Decision& decision,
                      const std::string& time, const AuditCaller* caller) {
  // Hand-written for speed; the same bytes as auditLine(auditRecord(...)) (keys in the sorted
  // order nlohmann's objects keep), which the tests check.
  const std::string& message =
      decision.response.allowed
          ? (decision.verdicts.empty() ? std::string() : decision.verdicts.front().message)
          : decision.response.message;
  std::string out;
  out.reserve(512 + 2 * message.size());
  out += R"({"breakGlass":)";
  out += decision.verdict == "break-glass" ? "true" : "false";
  if (!decision.breakGlassReason.empty()) {
    out += R"(,"breakGlassReason":)";
    appendJsonString(out, decision.breakGlassReason);
  }
  if (caller != nullptr) {
    out += R"(,"caller":{"name":)";
    appendJsonString(out, caller->name);
    out += caller->verified ? R"(,"verified":true})" : R"(,"verified":false})";
  }
  out += R"(,"component":"webhook","dryRun":)";
  out += request.dryRun ? "true" : "false";
  out += R"(,"groups":[)";
  for (size_t i = 0; i < request.user.groups.size(); ++i) {
    if (i) out.push_back(',');
    appendJsonString(out, request.user.groups[i]);
  }
  out += R"(],"kind":)";
  appendJsonString(out, request.kind);
  out += R"(,"message":)";
  appendJsonString(out, message);
  out += R"(,"name":)";
  appendJsonString(out, request.name);
  out += R"(,"namespace":)";
  appendJsonString(out, request.ns);
  out += R"(,"operation":)";
  appendJsonString(out, request.operation);
  out += R"(,"rule":)";
  appendJsonString(out, decision.rule);
  out += R"(,"rules":[)";
  for (size_t i = 0; i < decision.verdicts.size(); ++i) {
    const RuleVerdict& v = decision.verdicts[i];
    out += i ? R"(,{"message":)" : R"({"message":)";
    appendJsonString(out, v.message);
    out += R"(,"rule":)";
    appendJsonString(out, v.rule);
    out += R"(,"verdict":)";
    appendJsonString(out, v.verdict);
    out.push_back('}');
  }
  out += R"(],"time":)";
  appendJsonString(out, time);
  out += R"(,"uid":)";
  appendJsonString(out, request.uid);
  out += R"(,"user":)";
  appendJsonString(out, request.user.username);
  out += R"(,"verdict":)";
  appendJsonString(out, decision.verdict);
  out += "}\n";
  return out;
}

}  // namespace stateguard
