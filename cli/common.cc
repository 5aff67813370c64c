#include "cli/common.h"

#include <algorithm>
#include <iostream>

#include "core/k8s.h"
#include "webhook/registry.h"

namespace stateguard::cli {

int usageError(const char* usage, const std::string& message) {
  std::cerr << "stateguardctl: " << message << "\n\n" << usage;
  return 2;
}

Result<Policy> loadPolicyFlag(const Flags& flags) {
  if (!flags.has("policy")) return defaultPolicy(ruleDefaults());
  auto text = readFile(flags.get("policy"));
  if (!text.ok()) return makeError("policy: " + text.error());
  auto parsed = parsePolicy(text.value(), flags.get("policy"), ruleDefaults());
  if (!parsed.ok()) return makeError("policy: " + parsed.error());
  return std::move(parsed).value();
}

Result<ObjectStorePtr> loadStateFlag(const Flags& flags) {
  if (!flags.has("cluster-state")) {
    auto empty = std::make_shared<ObjectStore>();
    empty->setReady(true);
    return empty;
  }
  return loadClusterStateFile(flags.get("cluster-state"));
}

Result<ClusterSource> openClusterSource(const Flags& flags,
                                        const std::vector<ResourceKind>& kinds) {
  if (flags.has("cluster-state")) {
    auto loaded = loadClusterStateFile(flags.get("cluster-state"), kinds);
    if (!loaded.ok()) return makeError(loaded.error());
    return ClusterSource{loaded.value(), nullptr};
  }
  auto config = loadKubeconfig(flags.get("kubeconfig"));
  if (!config.ok()) return makeError(config.error());
  WatchCacheOptions options;
  options.kinds = kinds;
  auto started = startWatchCache(std::move(config).value(), options);
  if (!started.ok()) return makeError(started.error());
  WatchCachePtr cache = started.value();
  if (!cache->waitReady(std::chrono::seconds(30))) {
    std::string why = "could not list the cluster within 30 s";
    for (const auto& [kind, st] : cache->allStats())
      if (!st.lastError.empty()) why += "; " + kind + ": " + st.lastError;
    cache->stop();
    return makeError(why);
  }
  return ClusterSource{cache, cache};
}

json sarifLog(const json& results,
              const std::vector<std::pair<std::string, std::string>>& extraRules) {
  json rules = json::array();
  for (const auto& rule : allRules()) {
    rules.push_back({{"id", rule->info().id},
                     {"shortDescription", {{"text", rule->info().summary}}},
                     {"helpUri", "https://github.com/stateguard/stateguard#rules"}});
  }
  for (const auto& [id, text] : extraRules) {
    rules.push_back(
        {{"id", id},
         {"shortDescription", {{"text", text}}},
         {"helpUri", "https://github.com/stateguard/stateguard/blob/main/docs/scan.md"}});
  }
  return {{"$schema", "https://json.schemastore.org/sarif-2.1.0.json"},
          {"version", "2.1.0"},
          {"runs", json::array({{{"tool", {{"driver", {{"name", "stateguard"}, {"rules", rules}}}}},
                                 {"results", results}}})}};
}

namespace {

void appendHex(std::string& out, const char* prefix, unsigned value, int digits) {
  static const char kHex[] = "0123456789abcdef";
  out += prefix;
  for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4)
    out.push_back(kHex[(value >> shift) & 0xf]);
}

/// Length of the well-formed UTF-8 sequence at s[i] and its code point; 0 when malformed.
size_t utf8Sequence(std::string_view s, size_t i, unsigned& cp) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned b0 = byte(i);
  size_t len = 0;
  unsigned min = 0;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2, cp = b0 & 0x1f, min = 0x80;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3, cp = b0 & 0x0f, min = 0x800;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

bool invisibleControl(unsigned cp) {
  return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
         (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e ||
         cp == 0x200f || cp == 0x061c;
}

}  // namespace

std::string terminalSafe(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      if (c == '\\') out.push_back('\\');
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    switch (c) {
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      default:
        break;
    }
    if (c < 0x80) {  // other C0 controls (ESC, BEL, ...) and DEL
      appendHex(out, "\\x", c, 2);
      ++i;
      continue;
    }
    unsigned cp = 0;
    const size_t len = utf8Sequence(text, i, cp);
    if (len == 0) {
      appendHex(out, "\\x", c, 2);
      ++i;
    } else if (invisibleControl(cp)) {
      appendHex(out, "\\u", cp, 4);
      i += len;
    } else {
      out.append(text.substr(i, len));
      i += len;
    }
  }
  return out;
}

void printTable(std::ostream& out, const std::vector<std::vector<std::string>>& raw) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(raw.size());
  for (const auto& r : raw) {
    std::vector<std::string> safe;
    safe.reserve(r.size());
    for (const auto& cell : r) safe.push_back(terminalSafe(cell));
    rows.push_back(std::move(safe));
  }
  std::vector<size_t> width;
  for (const auto& r : rows) {
    width.resize(std::max(width.size(), r.size()));
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

bool wantsHelp(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

}  // namespace stateguard::cli
