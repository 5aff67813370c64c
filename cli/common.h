#pragma once
// What stateguardctl subcommands share: usage errors, and loading --policy / --cluster-state.

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/cluster_state.h"
#include "core/flags.h"
#include "core/policy.h"
#include "core/watch_cache.h"

namespace stateguard::cli {

/// Prints "stateguardctl: MESSAGE" and the command's usage to stderr; returns exit code 2.
int usageError(const char* usage, const std::string& message);

/// --policy FILE, or the built-in default policy when the flag is absent.
Result<Policy> loadPolicyFlag(const Flags& flags);
/// --cluster-state FILE, or an empty (ready) state when the flag is absent.
Result<ObjectStorePtr> loadStateFlag(const Flags& flags);

/// The cluster a command reads: a state file, or a synced list+watch cache (stop() it when done).
struct ClusterSource {
  std::shared_ptr<const ClusterState> state;
  WatchCachePtr cache;  ///< null for a state file
  void stop() const {
    if (cache) cache->stop();
  }
};

/// --cluster-state FILE, or --kubeconfig FILE listed and watched until synced (30 s at most; the
/// error then names each kind's last failure). Objects of other kinds than `kinds` are ignored.
Result<ClusterSource> openClusterSource(const Flags& flags,
                                        const std::vector<ResourceKind>& kinds = watchedKinds());

/// Prints rows as left-aligned columns two spaces apart (the first row is usually the header).
void printTable(std::ostream& out, const std::vector<std::vector<std::string>>& rows);

/// True when argv holds --help or -h after the subcommand.
bool wantsHelp(int argc, char** argv);

}  // namespace stateguard::cli
