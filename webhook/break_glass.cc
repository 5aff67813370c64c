#include "webhook/break_glass.h"

#include <algorithm>

#include "core/k8s.h"

namespace stateguard {
namespace {

std::string trim(std::string s) {
  auto notSpace = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), notSpace));
  s.erase(std::find_if(s.rbegin(), s.rend(), notSpace).base(), s.end());
  return s;
}

constexpr const char* kExpected =
    "expected \"<rule-id>; until=<RFC3339 time>; reason=<why>\", e.g. "
    "\"pv-delete; until=2026-01-02T15:00:00Z; reason=INC-123 migrate volume\"";

}  // namespace

Result<BreakGlass> parseBreakGlass(const std::string& value) {
  BreakGlass out;
  bool haveUntil = false;
  size_t start = 0;
  size_t index = 0;
  while (start <= value.size()) {
    size_t end = value.find(';', start);
    std::string part =
        trim(value.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (index == 0) {
      size_t s = 0;
      while (s <= part.size()) {
        size_t e = part.find(',', s);
        std::string id = trim(part.substr(s, e == std::string::npos ? std::string::npos : e - s));
        if (!id.empty()) out.rules.push_back(id);
        if (e == std::string::npos) break;
        s = e + 1;
      }
      if (out.rules.empty())
        return makeError("break-glass annotation names no rule; " + std::string(kExpected));
    } else if (part.rfind("until=", 0) == 0) {
      auto t = parseRfc3339(trim(part.substr(6)));
      if (!t)
        return makeError("break-glass until=\"" + part.substr(6) + "\" is not an RFC 3339 time; " +
                         kExpected);
      out.until = *t;
      haveUntil = true;
    } else if (part.rfind("reason=", 0) == 0) {
      // The reason is the rest of the value: it may itself contain ';'.
      out.reason = trim(value.substr(value.find("reason=", start) + 7));
      break;
    } else if (!part.empty()) {
      return makeError("break-glass annotation has an unknown part \"" + part + "\"; " + kExpected);
    }
    if (end == std::string::npos) break;
    start = end + 1;
    ++index;
  }
  if (!haveUntil)
    return makeError("break-glass annotation has no until=; " + std::string(kExpected));
  if (out.reason.empty())
    return makeError("break-glass annotation has no reason=; " + std::string(kExpected));
  return out;
}

bool inBreakGlassGroup(const UserInfo& user, const BreakGlassConfig& config) {
  for (const auto& g : user.groups) {
    if (std::find(config.groups.begin(), config.groups.end(), g) != config.groups.end())
      return true;
  }
  return false;
}

BreakGlassGrant checkBreakGlass(const AdmissionRequest& request, const BreakGlassConfig& config,
                                const std::string& ruleId, Clock::time_point now) {
  BreakGlassGrant grant;
  auto value = k8s::annotation(request.current(), config.annotation);
  if (!value) return grant;
  auto parsed = parseBreakGlass(*value);
  if (!parsed.ok()) {
    grant.explanation = "the " + config.annotation + " annotation is invalid: " + parsed.error();
    return grant;
  }
  const BreakGlass& bg = parsed.value();
  if (std::find(bg.rules.begin(), bg.rules.end(), ruleId) == bg.rules.end()) {
    grant.explanation = "the " + config.annotation + " annotation does not name rule " + ruleId;
    return grant;
  }
  if (now >= bg.until) {
    grant.explanation =
        "the " + config.annotation + " annotation expired at " + formatRfc3339(bg.until);
    return grant;
  }
  if (bg.until - now > config.maxDuration) {
    grant.explanation = "the " + config.annotation + " annotation's until= is more than " +
                        std::to_string(config.maxDuration.count()) + "h away";
    return grant;
  }
  if (!inBreakGlassGroup(request.user, config)) {
    std::string groups;
    for (const auto& g : config.groups) groups += (groups.empty() ? "" : ", ") + g;
    grant.explanation =
        "user \"" + request.user.username + "\" is not in a break-glass group (" + groups + ")";
    return grant;
  }
  grant.granted = true;
  grant.reason = bg.reason;
  return grant;
}

}  // namespace stateguard
