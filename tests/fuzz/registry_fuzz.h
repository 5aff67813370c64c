#pragma once
// Shared by the registry mirror parsers' libFuzzer targets: whatever a parser returns, the
// checks must run on it without crashing, and every finding must say something.

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/log.h"
#include "registry/checks.h"

namespace stateguard::fuzz {

inline void checkMirrors(const Result<std::vector<registry::Mirror>>& parsed) {
  if (!parsed.ok()) {
    if (parsed.error().empty()) {
      std::fprintf(stderr, "registry fuzz: an error without a message\n");
      std::abort();
    }
    return;
  }
  const registry::CheckOptions opts = registry::optionsFromParams(
      json{{"inClusterHosts", {"*.internal"}}, {"serviceCidrs", {"10.0.0.0/8", "bad/99"}}});
  std::vector<registry::MirrorFinding> all = registry::checkNoFallback(parsed.value(), opts);
  for (auto& f : registry::checkBrokenFallback(parsed.value())) all.push_back(std::move(f));
  for (auto& f : registry::checkClusterDns(parsed.value())) all.push_back(std::move(f));
  for (const auto& f : all) {
    if (f.message.empty() || f.warning.empty()) {
      std::fprintf(stderr, "registry fuzz: a %s finding without text\n", f.check.c_str());
      std::abort();
    }
  }
}

}  // namespace stateguard::fuzz
