#pragma once
// What stateguardctl subcommands share: usage errors, and loading --policy / --cluster-state.

#include <string>

#include "core/cluster_state.h"
#include "core/flags.h"
#include "core/policy.h"

namespace stateguard::cli {

/// Prints "stateguardctl: MESSAGE" and the command's usage to stderr; returns exit code 2.
int usageError(const char* usage, const std::string& message);

/// --policy FILE, or the built-in default policy when the flag is absent.
Result<Policy> loadPolicyFlag(const Flags& flags);
/// --cluster-state FILE, or an empty (ready) state when the flag is absent.
Result<ObjectStorePtr> loadStateFlag(const Flags& flags);

/// True when argv holds --help or -h after the subcommand.
bool wantsHelp(int argc, char** argv);

}  // namespace stateguard::cli
