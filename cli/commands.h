#pragma once
// stateguardctl subcommands. Each takes the full argv (argv[1] is the subcommand) and returns the
// process exit code; each lives in its own file under cli/.

namespace stateguard::cli {

int runReview(int argc, char** argv);   ///< cli/review.cc
int runRules(int argc, char** argv);    ///< cli/review.cc
int runLint(int argc, char** argv);     ///< cli/lint.cc
int runAudit(int argc, char** argv);    ///< cli/audit.cc
int runDqlite(int argc, char** argv);   ///< cli/dqlite.cc
int runOrphans(int argc, char** argv);  ///< cli/orphans.cc
int runCsi(int argc, char** argv);      ///< cli/csi.cc
int runBackups(int argc, char** argv);  ///< cli/backups.cc
int runScan(int argc, char** argv);     ///< cli/scan.cc

}  // namespace stateguard::cli
