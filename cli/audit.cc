// stateguardctl audit: not yet implemented (issue: stateguardctl offline lint, audit review, and
// recovery assistants).

#include <iostream>

#include "cli/commands.h"

namespace stateguard::cli {

int runAudit(int /*argc*/, char** /*argv*/) {
  std::cerr << "stateguardctl: 'audit' is not yet implemented\n";
  return 2;
}

}  // namespace stateguard::cli
