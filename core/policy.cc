#include "core/policy.h"

#include <set>

#include "core/file_watch.h"
#include "core/log.h"

namespace stateguard {

const char* modeName(Mode mode) {
  switch (mode) {
    case Mode::Enforce:
      return "enforce";
    case Mode::Warn:
      return "warn";
    case Mode::Audit:
      return "audit";
    case Mode::Off:
      return "off";
  }
  return "off";
}

std::optional<Mode> parseMode(const std::string& text) {
  if (text == "enforce") return Mode::Enforce;
  if (text == "warn") return Mode::Warn;
  if (text == "audit") return Mode::Audit;
  if (text == "off") return Mode::Off;
  return std::nullopt;
}

Mode Policy::modeOf(const std::string& ruleId) const {
  auto it = rules.find(ruleId);
  return it == rules.end() ? Mode::Off : it->second.mode;
}

const json& Policy::paramsOf(const std::string& ruleId) const {
  static const json kEmpty = json::object();
  auto it = rules.find(ruleId);
  return it == rules.end() ? kEmpty : it->second.params;
}

Policy defaultPolicy(const std::vector<RuleDefaults>& rules) {
  Policy p;
  p.source = "built-in default";
  for (const auto& r : rules) p.rules[r.id] = Policy::RuleConfig{r.mode, r.params};
  return p;
}

namespace {

bool sameType(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) return true;
  return a.type() == b.type();
}

Result<std::vector<std::string>> stringList(const json& v, const std::string& where) {
  if (!v.is_array()) return makeError(where + " must be a list of strings");
  std::vector<std::string> out;
  for (const auto& item : v) {
    if (!item.is_string()) return makeError(where + " must be a list of strings");
    out.push_back(item.get<std::string>());
  }
  return out;
}

}  // namespace

Result<Policy> parsePolicy(std::string_view text, const std::string& source,
                           const std::vector<RuleDefaults>& rules) {
  auto docs = parseDocuments(text, source);
  if (!docs.ok()) return makeError(docs.error());
  Policy policy = defaultPolicy(rules);
  policy.source = source;
  if (docs->empty()) return policy;  // an empty file means "all defaults"
  if (docs->size() > 1) return makeError(source + ": expected one YAML document, found several");
  const json& doc = docs->front();
  if (!doc.is_object()) return makeError(source + ": the policy must be a mapping");

  static const std::set<std::string> kTopKeys = {"apiVersion", "kind", "breakGlass", "controllers",
                                                 "rules"};
  for (const auto& [key, _] : doc.items()) {
    if (!kTopKeys.count(key)) {
      return makeError(source + ": unknown key \"" + key +
                       "\" (expected apiVersion, kind, breakGlass, controllers, rules)");
    }
  }
  if (doc.contains("kind") && doc["kind"] != "Policy") {
    return makeError(source + ": kind must be Policy");
  }

  if (doc.contains("breakGlass")) {
    const json& bg = doc["breakGlass"];
    if (!bg.is_object()) return makeError(source + ": breakGlass must be a mapping");
    for (const auto& [key, value] : bg.items()) {
      const std::string where = source + ": breakGlass." + key;
      if (key == "groups") {
        auto groups = stringList(value, where);
        if (!groups.ok()) return makeError(groups.error());
        policy.breakGlass.groups = groups.value();
      } else if (key == "annotation") {
        if (!value.is_string() || value.get<std::string>().empty()) {
          return makeError(where + " must be a non-empty string");
        }
        policy.breakGlass.annotation = value.get<std::string>();
      } else if (key == "maxDurationHours") {
        if (!value.is_number() || value.get<double>() < 1 || value.get<double>() > 8760) {
          return makeError(where + " must be a number of hours from 1 to 8760");
        }
        policy.breakGlass.maxDuration = std::chrono::hours(value.get<int>());
      } else {
        return makeError(source + ": unknown key breakGlass." + key +
                         " (expected groups, annotation, maxDurationHours)");
      }
    }
  }

  if (doc.contains("controllers")) {
    const json& cs = doc["controllers"];
    if (!cs.is_object()) return makeError(source + ": controllers must be a mapping");
    auto& c = policy.controllers;
    const std::map<std::string, std::vector<std::string>*> fields = {
        {"pvProtection", &c.pvProtection},  {"pvcProtection", &c.pvcProtection},
        {"namespace", &c.namespaceCleanup}, {"garbageCollector", &c.garbageCollector},
        {"statefulSet", &c.statefulSet},    {"volumeReclaim", &c.volumeReclaim}};
    for (const auto& [key, value] : cs.items()) {
      auto field = fields.find(key);
      if (field == fields.end()) {
        return makeError(source + ": unknown key controllers." + key +
                         " (expected pvProtection, pvcProtection, namespace, garbageCollector, "
                         "statefulSet, volumeReclaim)");
      }
      auto users = stringList(value, source + ": controllers." + key);
      if (!users.ok()) return makeError(users.error());
      *field->second = users.value();
    }
  }

  if (doc.contains("rules")) {
    const json& rs = doc["rules"];
    if (!rs.is_object())
      return makeError(source + ": rules must be a mapping of rule id to settings");
    for (const auto& [id, settings] : rs.items()) {
      auto known = policy.rules.find(id);
      if (known == policy.rules.end()) {
        std::string ids;
        for (const auto& r : rules) ids += (ids.empty() ? "" : ", ") + r.id;
        return makeError(source + ": unknown rule \"" + id + "\" (known rules: " + ids + ")");
      }
      auto& config = known->second;
      if (settings.is_string()) {  // shorthand: `pv-delete: warn`
        auto mode = parseMode(settings.get<std::string>());
        if (!mode) {
          return makeError(source + ": rules." + id + ": mode \"" + settings.get<std::string>() +
                           "\" is not one of enforce, warn, audit, off");
        }
        config.mode = *mode;
        continue;
      }
      if (!settings.is_object()) {
        return makeError(source + ": rules." + id +
                         " must be a mode or a mapping with mode/params");
      }
      for (const auto& [key, value] : settings.items()) {
        if (key == "mode") {
          auto mode = value.is_string() ? parseMode(value.get<std::string>()) : std::nullopt;
          if (!mode) {
            return makeError(source + ": rules." + id +
                             ".mode must be one of enforce, warn, audit, off");
          }
          config.mode = *mode;
        } else if (key == "params") {
          if (!value.is_object())
            return makeError(source + ": rules." + id + ".params must be a mapping");
          for (const auto& [pkey, pvalue] : value.items()) {
            if (!config.params.contains(pkey)) {
              std::string accepted;
              for (const auto& [k, _] : config.params.items())
                accepted += (accepted.empty() ? "" : ", ") + k;
              return makeError(
                  source + ": rules." + id + ".params." + pkey + " is not a parameter of " + id +
                  (accepted.empty() ? " (it takes none)" : " (accepted: " + accepted + ")"));
            }
            if (!sameType(config.params[pkey], pvalue)) {
              return makeError(source + ": rules." + id + ".params." + pkey + " must be a " +
                               config.params[pkey].type_name() + ", got " + pvalue.type_name());
            }
            if (config.params[pkey].is_number_integer() &&
                (!pvalue.is_number() || pvalue.get<double>() < 0 || pvalue.get<double>() > 1e6 ||
                 pvalue.get<double>() !=
                     static_cast<double>(static_cast<long>(pvalue.get<double>())))) {
              return makeError(source + ": rules." + id + ".params." + pkey +
                               " must be a whole number from 0 to 1000000");
            }
            config.params[pkey] = pvalue.is_number() && config.params[pkey].is_number_integer()
                                      ? json(static_cast<long>(pvalue.get<double>()))
                                      : pvalue;
          }
        } else {
          return makeError(source + ": unknown key rules." + id + "." + key +
                           " (expected mode, params)");
        }
      }
    }
  }
  return policy;
}

PolicyStore::PolicyStore(PolicyPtr initial) : current_(std::move(initial)) {}

PolicyStore::~PolicyStore() = default;

Result<std::unique_ptr<PolicyStore>> PolicyStore::fromFile(const std::string& path,
                                                           std::vector<RuleDefaults> rules,
                                                           std::chrono::milliseconds pollInterval) {
  std::string seen = fileFingerprint(path);
  auto text = readFile(path);
  if (!text.ok()) return makeError("policy: " + text.error());
  auto policy = parsePolicy(text.value(), path, rules);
  if (!policy.ok()) return makeError("policy: " + policy.error());
  auto store =
      std::make_unique<PolicyStore>(std::make_shared<const Policy>(std::move(policy).value()));
  store->path_ = path;
  store->rules_ = std::move(rules);
  store->lastSeen_ = seen;
  PolicyStore* self = store.get();
  store->poller_ = std::make_unique<Poller>(pollInterval, [self] { self->checkForChange(); });
  return store;
}

PolicyPtr PolicyStore::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

bool PolicyStore::checkForChange() {
  if (path_.empty()) return false;
  std::string seen = fileFingerprint(path_);
  if (seen == lastSeen_) return false;
  lastSeen_ = seen;
  auto text = readFile(path_);
  Result<Policy> policy = makeError("not read");
  try {
    policy = text.ok() ? parsePolicy(text.value(), path_, rules_)
                       : Result<Policy>(makeError(text.error()));
  } catch (const std::exception& e) {  // a parser bug must not take the webhook down
    policy = makeError(path_ + ": " + e.what());
  }
  if (!policy.ok()) {
    reloadFailures_.fetch_add(1);
    log::error("policy " + path_ +
               " changed but is invalid, keeping the last good policy: " + policy.error());
    return false;
  }
  {
    std::lock_guard lock(mu_);
    current_ = std::make_shared<const Policy>(std::move(policy).value());
  }
  reloads_.fetch_add(1);
  log::info("policy reloaded from " + path_);
  return true;
}

}  // namespace stateguard
