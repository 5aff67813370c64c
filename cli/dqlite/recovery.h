#pragma once
// Recovery decisions over several nodes' backend directories: which node is the source of truth
// (raft's rule: the higher last term, then the higher last index), how every other node relates to
// it, the recovery plan for MicroK8s, and the comparison that verifies the copies.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cli/dqlite/node_dir.h"

namespace stateguard::cli::dqlite {

/// How one node's log relates to the source of truth's.
struct Relation {
  std::string kind;  ///< source, same, behind, ahead, diverged, content-differs, no-common-entries
  uint64_t at = 0;   ///< diverged / content-differs: the first index that differs
  uint64_t termHere = 0;    ///< diverged: the term at `at` on this node
  uint64_t termSource = 0;  ///< diverged: the term at `at` on the source
  uint64_t behindBy = 0;    ///< entries the source has past this node's last index
  std::string summary;      ///< one line for a person
};

/// The node to copy from, and why.
struct Choice {
  size_t source = 0;
  std::string reason;              ///< why this node, in raft's terms
  std::vector<size_t> tied;        ///< other nodes with the same last index and term
  std::string warning;             ///< non-empty when copying the source would spread damage
  std::optional<size_t> fallback;  ///< the best node without such damage, when there is one
};

/// raft's rule, or `forced` (plan --source) with raft's choice named in the reason.
Choice chooseSource(const std::vector<Node>& nodes, std::optional<size_t> forced = std::nullopt);
Relation relate(const Node& source, const Node& other);

/// One numbered step of a recovery plan.
struct PlanStep {
  std::string kind;   ///< stop, backup, cluster-yaml, archive, copy, replace, collect, verify,
                      ///< start, check
  std::string title;  ///< what to do and why
  std::vector<std::string> nodes;     ///< where to do it
  std::vector<std::string> commands;  ///< shell commands, in order
};

/// Where the plan's commands work on the nodes.
struct PlanOptions {
  std::string backend = "/var/snap/microk8s/current/var/kubernetes/backend";
  std::string saveTo = "/root";  ///< backups and the archive
  std::optional<size_t> source;  ///< copy from this node instead of raft's choice
};

/// A recovery plan: the choice, warnings that need a person's judgement, and the steps.
struct Plan {
  Choice choice;
  std::vector<Relation> relations;  ///< per node, in input order
  std::vector<std::string> warnings;
  std::vector<PlanStep> steps;
};

Plan makePlan(const std::vector<Node>& nodes, const PlanOptions& options);

/// One way a node differs from the reference node after a copy.
struct Difference {
  std::string node;  ///< the node's label
  std::string kind;  ///< last-entry, entries, missing, extra, snapshot, cluster-yaml, info-yaml
  std::string message;
};

/// Compares every node with nodes[reference]: entries by (index, term, payload checksum),
/// regardless of segment boundaries; last index and term; snapshots (index, term, data and .meta
/// checksums); cluster.yaml; and that no two nodes share an info.yaml identity.
std::vector<Difference> compareNodes(const std::vector<Node>& nodes, size_t reference);

/// "1-5, 9, 12-20" (at most `limit` ranges, then "and N more").
std::string formatRanges(const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
                         size_t limit = 5);

}  // namespace stateguard::cli::dqlite
