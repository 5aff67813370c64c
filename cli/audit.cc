// stateguardctl audit: reads the webhook's (and later the CSI sidecar's) audit logs, plain or
// gzip-rotated, filters them and summarises: counts by rule, verdict and user, and every
// break-glass use with its reason. Bad lines are counted and reported, never fatal.

#include <zlib.h>

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/k8s.h"
#include "core/timeutil.h"

namespace stateguard::cli {
namespace {

constexpr const char* kUsage =
    R"(usage: stateguardctl audit [--since DURATION] [--rule R] [--user U]
                           [--verdict deny|warn|allow|break-glass|audit|exempt] [-o table|json] FILE...|-

Reads audit logs (JSON lines; .gz rotations are read as they are), keeps the decisions that match
every filter given, and prints counts by rule, verdict and user, and every break-glass use with
its reason. DURATION is like 90s, 30m, 12h or 7d. Lines that are not audit records are counted
and reported, never fatal.

Exit 0 when the logs were read, 2 when none could be read or the flags are wrong.
Example: stateguardctl audit --since 24h --verdict break-glass /var/log/stateguard/audit.log*
)";

/// Reads a whole file (or stdin), inflating it when it starts with the gzip magic.
Result<std::string> readMaybeGzip(const std::string& path) {
  auto raw = readFile(path);
  if (!raw.ok()) return raw;
  const std::string& data = raw.value();
  if (data.size() < 2 || static_cast<unsigned char>(data[0]) != 0x1f ||
      static_cast<unsigned char>(data[1]) != 0x8b) {
    return raw;
  }
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 32) != Z_OK) return makeError(path + ": cannot start gzip decoding");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  std::string out;
  char buf[65536];
  int rc = Z_OK;
  while (rc == Z_OK) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof buf - zs.avail_out);
    if (rc == Z_STREAM_END && zs.avail_in > 0) {  // concatenated gzip members (logrotate appends)
      inflateReset(&zs);
      rc = Z_OK;
    }
  }
  inflateEnd(&zs);
  if (rc != Z_STREAM_END) {
    // A rotation cut mid-write still yields its complete lines; say what happened.
    std::cerr << "stateguardctl audit: " << path << ": gzip data ends early or is damaged ("
              << (zs.msg != nullptr ? zs.msg : "truncated") << "); reading what was recovered\n";
  }
  return out;
}

bool flag(const json& record, const char* key) {
  auto it = record.find(key);
  return it != record.end() && it->is_boolean() && it->get<bool>();
}

bool mentionsRule(const json& record, const std::string& rule) {
  if (k8s::str(record, "/rule") == rule) return true;
  const auto it = record.find("rules");
  if (it == record.end() || !it->is_array()) return false;
  return std::any_of(it->begin(), it->end(),
                     [&](const json& r) { return r.is_object() && k8s::str(r, "/rule") == rule; });
}

void printCounts(const char* title, const std::map<std::string, size_t>& counts) {
  std::vector<std::pair<std::string, size_t>> sorted(counts.begin(), counts.end());
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  std::cout << title << "\n";
  for (const auto& [key, n] : sorted) {
    std::cout << "  " << std::left << std::setw(40) << (key.empty() ? "(none)" : terminalSafe(key))
              << std::right << std::setw(8) << n << "\n";
  }
}

}  // namespace

int runAudit(int argc, char** argv) {
  if (wantsHelp(argc, argv)) {
    std::cout << kUsage;
    return 0;
  }
  auto flags = parseFlags(argc, argv, 2, {"since", "rule", "user", "verdict", "output", "o"}, {});
  if (!flags.ok()) return usageError(kUsage, flags.error());
  const Flags& f = flags.value();
  const std::string format = f.get("output", f.get("o", "table"));
  if (format != "table" && format != "json") return usageError(kUsage, "-o must be table or json");
  if (f.positional.empty())
    return usageError(kUsage, "give at least one audit log FILE, or - for stdin");
  std::optional<Clock::time_point> since;
  if (f.has("since")) {
    auto d = parseDuration(f.get("since"));
    if (!d)
      return usageError(kUsage,
                        "--since \"" + f.get("since") + "\" is not a duration like 30m, 12h or 7d");
    since = Clock::now() - *d;
  }
  const std::string verdict = f.get("verdict");
  static const std::vector<std::string> kVerdicts = {"deny",        "warn",  "allow",
                                                     "break-glass", "audit", "exempt"};
  if (!verdict.empty() &&
      std::find(kVerdicts.begin(), kVerdicts.end(), verdict) == kVerdicts.end()) {
    return usageError(kUsage,
                      "--verdict must be one of deny, warn, allow, break-glass, audit, exempt");
  }

  size_t readable = 0, total = 0, matched = 0;
  std::vector<std::string> badLines;
  size_t badCount = 0;
  std::map<std::string, size_t> byRule, byVerdict, byUser;
  json breakGlass = json::array();
  json records = json::array();
  for (const auto& path : f.positional) {
    auto data = readMaybeGzip(path);
    if (!data.ok()) {
      std::cerr << "stateguardctl audit: " << data.error() << "\n";
      continue;
    }
    ++readable;
    std::istringstream in(data.value());
    std::string line;
    size_t lineNo = 0;
    while (std::getline(in, line)) {
      ++lineNo;
      if (line.empty()) continue;
      json record = json::parse(line, nullptr, false);
      std::optional<Clock::time_point> when;
      if (record.is_object()) when = parseRfc3339(k8s::str(record, "/time"));
      if (!record.is_object() || !when || k8s::str(record, "/verdict").empty()) {
        ++badCount;
        if (badLines.size() < 5) {
          badLines.push_back((path == "-" ? "stdin" : path) + ":" + std::to_string(lineNo) + ": " +
                             (record.is_object() ? "no time or verdict" : "not a JSON object"));
        }
        continue;
      }
      ++total;
      if (since && *when < *since) continue;
      if (f.has("rule") && !mentionsRule(record, f.get("rule"))) continue;
      if (f.has("user") && k8s::str(record, "/user") != f.get("user")) continue;
      if (!verdict.empty() && k8s::str(record, "/verdict") != verdict) continue;
      ++matched;
      ++byRule[k8s::str(record, "/rule")];
      ++byVerdict[k8s::str(record, "/verdict")];
      ++byUser[k8s::str(record, "/user")];
      if (k8s::str(record, "/verdict") == "break-glass" || flag(record, "breakGlass")) {
        breakGlass.push_back({{"time", k8s::str(record, "/time")},
                              {"user", k8s::str(record, "/user")},
                              {"operation", k8s::str(record, "/operation")},
                              {"object", k8s::str(record, "/kind") + " " +
                                             (k8s::str(record, "/namespace").empty()
                                                  ? ""
                                                  : k8s::str(record, "/namespace") + "/") +
                                             k8s::str(record, "/name")},
                              {"rule", k8s::str(record, "/rule")},
                              {"reason", k8s::str(record, "/breakGlassReason")},
                              {"dryRun", flag(record, "dryRun")}});
      }
      if (format == "json") records.push_back(std::move(record));
    }
  }
  if (readable == 0) return 2;

  if (format == "json") {
    json out = {{"records", total},         {"matched", matched},     {"badLines", badCount},
                {"byRule", byRule},         {"byVerdict", byVerdict}, {"byUser", byUser},
                {"breakGlass", breakGlass}, {"decisions", records}};
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << matched << " of " << total << " decision(s) match";
    if (badCount > 0) std::cout << "; " << badCount << " line(s) were not audit records";
    std::cout << "\n\n";
    printCounts("by rule:", byRule);
    printCounts("by verdict:", byVerdict);
    printCounts("by user:", byUser);
    std::cout << "\nbreak-glass uses: " << breakGlass.size() << "\n";
    // Every field came from a client or the log file: escaped, so that neither an ANSI
    // sequence nor a newline in a user name or reason reaches the terminal or forges a row.
    const auto field = [](const json& b, const char* key) {
      return terminalSafe(b[key].get<std::string>());
    };
    for (const auto& b : breakGlass) {
      std::cout << "  " << field(b, "time") << "  " << field(b, "user") << "  "
                << field(b, "operation") << " " << field(b, "object") << "  rule "
                << field(b, "rule") << (b["dryRun"].get<bool>() ? " (dry run)" : "")
                << "\n    reason: " << field(b, "reason") << "\n";
    }
  }
  for (const auto& b : badLines) std::cerr << "stateguardctl audit: skipped " << b << "\n";
  if (badCount > badLines.size()) {
    std::cerr << "stateguardctl audit: ... and " << badCount - badLines.size()
              << " more skipped line(s)\n";
  }
  return 0;
}

}  // namespace stateguard::cli
