// stateguardctl: stateguard's rules offline, audit-log review, and recovery assistants.
// main() only dispatches to the subcommands (cli/commands.h).

#include <cstring>
#include <iostream>
#include <map>

#include "cli/commands.h"
#include "core/log.h"

namespace {

constexpr const char* kUsage =
    R"(usage: stateguardctl COMMAND [options]   (COMMAND --help for details)

commands:
  review    judge one AdmissionReview with the webhook's engine
  rules     list the rules, their defaults and what they guard
  lint      apply every rule to manifests (files, directories, stdin) as GitOps CI would
  audit     filter and summarise the webhook's audit logs
  dqlite    inspect, plan and verify a MicroK8s dqlite recovery
  orphans   find PVs, claims and backend volumes nothing uses
  csi       the CSI sidecar's ledger: list, show, clear a quarantine, forget a volume
  backups   newest good backup per claim and for etcd (cluster, state file, etcd-manager store)
  scan      the hazards that already exist: every rule on every object, stale backups,
            quarantined volumes, orphans, StatefulSets that delete their claims

Exit codes: 0 fine, 1 a finding (denial, stale, difference), 2 unusable input or usage.
stateguardctl --version prints the version; `stateguardctl completion bash|zsh` prints shell
completion (e.g. `source <(stateguardctl completion bash)`). Installed as kubectl-stateguard too,
so `kubectl stateguard lint ...` works.
)";

/// Completes the command, then the flags of the command's --help text, then file names.
constexpr const char* kBashCompletion =
    R"(# stateguardctl completion (bash; zsh through bashcompinit)
_stateguardctl() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "review rules lint audit dqlite orphans csi backups scan completion --help --version" -- "$cur"))
    return
  fi
  if [[ "$cur" == -* ]]; then
    local flags
    flags=$("${COMP_WORDS[0]}" "${COMP_WORDS[1]}" --help 2>/dev/null | grep -o -- '--[a-z][a-z-]*' | sort -u)
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    return
  fi
  COMPREPLY=($(compgen -f -- "$cur"))
}
complete -o filenames -F _stateguardctl stateguardctl kubectl-stateguard
)";

}  // namespace

int main(int argc, char** argv) {
  stateguard::log::setQuiet(true);
  using Command = int (*)(int, char**);
  static const std::map<std::string, Command> kCommands = {
      {"review", stateguard::cli::runReview}, {"rules", stateguard::cli::runRules},
      {"lint", stateguard::cli::runLint},     {"audit", stateguard::cli::runAudit},
      {"dqlite", stateguard::cli::runDqlite}, {"orphans", stateguard::cli::runOrphans},
      {"csi", stateguard::cli::runCsi},       {"backups", stateguard::cli::runBackups},
      {"scan", stateguard::cli::runScan},
  };
  if (argc < 2) {
    std::cerr << "stateguardctl: no command given\n\n" << kUsage;
    return 2;
  }
  const std::string command = argv[1];
  if (command == "help" || command == "--help" || command == "-h") {
    std::cout << kUsage;
    return 0;
  }
  if (command == "completion") {
    const std::string shell = argc > 2 ? argv[2] : "";
    if (shell == "bash") {
      std::cout << kBashCompletion;
      return 0;
    }
    if (shell == "zsh") {
      std::cout << "autoload -U +X bashcompinit && bashcompinit\n" << kBashCompletion;
      return 0;
    }
    std::cerr << "stateguardctl completion: give bash or zsh, e.g. source <(stateguardctl "
                 "completion bash)\n";
    return 2;
  }
  if (command == "--version" || command == "version") {
    std::cout << "stateguardctl " << STATEGUARD_VERSION << "\n";
    return 0;
  }
  auto it = kCommands.find(command);
  if (it == kCommands.end()) {
    std::cerr << "stateguardctl: unknown command \"" << command << "\"\n\n" << kUsage;
    return 2;
  }
  return it->second(argc, argv);
}
