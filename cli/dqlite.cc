// stateguardctl dqlite: not yet implemented (issue: stateguardctl offline lint, audit review, and
// recovery assistants).

#include <iostream>

#include "cli/commands.h"

namespace stateguard::cli {

int runDqlite(int /*argc*/, char** /*argv*/) {
  std::cerr << "stateguardctl: 'dqlite' is not yet implemented\n";
  return 2;
}

}  // namespace stateguard::cli
