#pragma once
// What stateguardctl dqlite prints: the inspect table and details, the recovery plan and the
// verify result, as text for a person or JSON for scripts.

#include <ostream>
#include <vector>

#include "cli/dqlite/node_dir.h"
#include "cli/dqlite/recovery.h"
#include "core/json_yaml.h"

namespace stateguard::cli::dqlite {

void printInspect(std::ostream& out, const std::vector<Node>& nodes, const Choice& choice);
json inspectJson(const std::vector<Node>& nodes, const Choice& choice);

void printPlan(std::ostream& out, const std::vector<Node>& nodes, const Plan& plan,
               const PlanOptions& options);
json planJson(const std::vector<Node>& nodes, const Plan& plan, const PlanOptions& options);

/// `failed` says whether verify fails: differences, or damage in the copied data.
void printVerify(std::ostream& out, const std::vector<Node>& nodes, size_t reference,
                 const std::vector<Difference>& differences, bool failed);
json verifyJson(const std::vector<Node>& nodes, size_t reference,
                const std::vector<Difference>& differences, bool failed);

}  // namespace stateguard::cli::dqlite
