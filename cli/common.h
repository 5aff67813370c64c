#pragma once
// What stateguardctl subcommands share: usage errors, and loading --policy / --cluster-state.

#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/cluster_state.h"
#include "core/flags.h"
#include "core/policy.h"
#include "core/watch_cache.h"
#include "webhook/admission.h"

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

/// A SARIF 2.1.0 log (GitHub code scanning, GitLab) with one run of tool "stateguard": every
/// registered rule, then `extraRules` ({id, one-line description}), and `results` as given.
json sarifLog(const json& results,
              const std::vector<std::pair<std::string, std::string>>& extraRules = {});

/// Text from logs, files or the cluster made safe to print on a terminal: control characters
/// (C0, DEL, C1, the Unicode line separators and bidirectional overrides) become visible escapes
/// (\n, \t, \x1b, \u009b, \u202e), a backslash is doubled and bytes that are not UTF-8 show as
/// \xNN. An escape sequence or a newline in a user name can then neither drive the terminal nor
/// forge a row.
std::string terminalSafe(std::string_view text);

/// Prints rows as left-aligned columns two spaces apart (the first row is usually the header);
/// every cell goes through terminalSafe().
void printTable(std::ostream& out, const std::vector<std::vector<std::string>>& rows);

/// True when argv holds --help or -h after the subcommand.
bool wantsHelp(int argc, char** argv);

}  // namespace stateguard::cli
