// stateguardctl lint: not yet implemented (issue: stateguardctl offline lint, audit review, and
// recovery assistants).

#include <iostream>

#include "cli/commands.h"

namespace stateguard::cli {

int runLint(int /*argc*/, char** /*argv*/) {
  std::cerr << "stateguardctl: 'lint' is not yet implemented\n";
  return 2;
}

}  // namespace stateguard::cli
