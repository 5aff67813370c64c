#include "core/timeutil.h"

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <limits>
#include <string_view>

namespace stateguard {

std::optional<Clock::time_point> parseRfc3339(const std::string& text) {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &year, &month, &day, &hour,
                  &minute, &second, &consumed) != 6) {
    return std::nullopt;
  }
  // Clock counts nanoseconds in 64 bits: years outside about 1678..2262 would overflow.
  if (year < 1970 || year > 2200 || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 ||
      minute > 59 || second > 60) {
    return std::nullopt;
  }
  size_t pos = static_cast<size_t>(consumed);
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    size_t digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') ++pos, ++digits;
    if (digits == 0) return std::nullopt;
  }
  long offsetSeconds = 0;
  if (pos >= text.size()) return std::nullopt;
  if (text[pos] == 'Z' || text[pos] == 'z') {
    ++pos;
  } else if (text[pos] == '+' || text[pos] == '-') {
    int oh = 0, om = 0;
    if (pos + 6 > text.size() || std::sscanf(text.c_str() + pos + 1, "%2d:%2d", &oh, &om) != 2 ||
        text[pos + 3] != ':' || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offsetSeconds = (oh * 3600L + om * 60L) * (text[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != text.size()) return std::nullopt;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  std::time_t t = timegm(&tm);
  return Clock::from_time_t(t - offsetSeconds);
}

std::string nowRfc3339() {
  const auto now = Clock::now();
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::string out = formatRfc3339(now);
  char frac[8];
  std::snprintf(frac, sizeof frac, ".%03dZ", static_cast<int>(ms));
  out.replace(out.size() - 1, 1, frac);
  return out;
}

std::string formatRfc3339(Clock::time_point t) {
  std::time_t tt = Clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::optional<std::chrono::seconds> parseDuration(const std::string& text) {
  if (text.size() < 2 || text.size() > 10) return std::nullopt;
  const std::string number = text.substr(0, text.size() - 1);
  if (number.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  const long n = std::stol(number);
  switch (text.back()) {
    case 's':
      return std::chrono::seconds(n);
    case 'm':
      return std::chrono::seconds(n * 60);
    case 'h':
      return std::chrono::seconds(n * 3600);
    case 'd':
      return std::chrono::seconds(n * 86400);
  }
  return std::nullopt;
}

std::string formatDuration(std::chrono::seconds d) {
  long s = static_cast<long>(d.count());
  if (s < 0) s = -s;
  long days = s / 86400, hours = (s % 86400) / 3600, minutes = (s % 3600) / 60, secs = s % 60;
  std::string out;
  if (days) out += std::to_string(days) + "d";
  if (hours) out += std::to_string(hours) + "h";
  if (minutes && !days) out += std::to_string(minutes) + "m";
  if ((secs && !days && !hours) || out.empty()) out += std::to_string(secs) + "s";
  return out;
}

std::optional<std::chrono::nanoseconds> parseGoDuration(const std::string& text) {
  // Go's time.ParseDuration: [-+]?([0-9]*(\.[0-9]*)?[a-z]+)+, or "0"; at most 2^63-1 ns.
  constexpr uint64_t kLimit = uint64_t{1} << 63;  // one past the largest positive value
  struct Unit {
    const char* name;
    uint64_t ns;
  };
  static constexpr Unit kUnits[] = {
      {"ns", 1},
      {"us", 1000},
      {"\u00b5s", 1000},
      {"\u03bcs", 1000},
      {"ms", 1000000},
      {"s", 1000000000},
      {"m", 60 * uint64_t{1000000000}},
      {"h", 3600 * uint64_t{1000000000}},
  };
  std::string_view s = text;
  bool negative = false;
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return std::chrono::nanoseconds(0);
  if (s.empty()) return std::nullopt;
  auto isDigit = [](char c) { return c >= '0' && c <= '9'; };
  uint64_t total = 0;
  while (!s.empty()) {
    size_t i = 0;
    uint64_t whole = 0;
    bool digits = false;
    for (; i < s.size() && isDigit(s[i]); ++i, digits = true) {
      const auto d = static_cast<uint64_t>(s[i] - '0');
      if (whole > (kLimit - d) / 10) return std::nullopt;
      whole = whole * 10 + d;
    }
    uint64_t fraction = 0;
    double scale = 1;
    if (i < s.size() && s[i] == '.') {
      for (++i; i < s.size() && isDigit(s[i]); ++i, digits = true) {
        if (fraction > (kLimit - 1) / 10) continue;  // further digits are below a nanosecond
        fraction = fraction * 10 + static_cast<uint64_t>(s[i] - '0');
        scale *= 10;
      }
    }
    if (!digits) return std::nullopt;
    size_t j = i;
    while (j < s.size() && s[j] != '.' && !isDigit(s[j])) ++j;
    const std::string_view unitName = s.substr(i, j - i);
    const Unit* unit = nullptr;
    for (const auto& u : kUnits) {
      if (unitName == u.name) unit = &u;
    }
    if (unit == nullptr) return std::nullopt;
    if (whole > kLimit / unit->ns) return std::nullopt;
    uint64_t value = whole * unit->ns;
    if (fraction > 0) {
      value += static_cast<uint64_t>(static_cast<double>(fraction) *
                                     (static_cast<double>(unit->ns) / scale));
      if (value > kLimit) return std::nullopt;
    }
    if (value > kLimit - total) return std::nullopt;
    total += value;
    s.remove_prefix(j);
  }
  if (!negative && total == kLimit) return std::nullopt;
  const auto count = total == kLimit ? std::numeric_limits<int64_t>::min()
                                     : static_cast<int64_t>(total) * (negative ? -1 : 1);
  return std::chrono::nanoseconds(count);
}

}  // namespace stateguard
