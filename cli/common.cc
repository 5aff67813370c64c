#include "cli/common.h"

#include <algorithm>
#include <iostream>

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

void printTable(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
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
