// stateguardctl dqlite: inspect, plan and verify a MicroK8s dqlite recovery from the nodes'
// backend directories (or archives of them), strictly read-only. The logic lives in cli/dqlite/.

#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/dqlite/node_dir.h"
#include "cli/dqlite/recovery.h"
#include "cli/dqlite/report.h"

namespace stateguard::cli {
namespace {

using dqlite::Node;

constexpr const char* kUsage =
    R"(usage: stateguardctl dqlite inspect|plan|verify [options] NODE...   (VERB --help for details)

Reads the dqlite backend directories of a MicroK8s HA cluster, one per node (or .tar.gz archives
of them), strictly read-only, and guides a recovery:
  inspect   what each node holds (last index and term, snapshot, voters, damage) and which node
            is the source of truth by raft's rule
  plan      the recovery steps: the archive to make on the source, where it goes, start order
  verify    after copying: do all nodes hold the same entries and snapshots?

Exit codes: 0 fine, 1 a finding (problems, a plan with warnings, differences), 2 unusable input
or usage.
)";

constexpr const char* kInspectUsage =
    R"(usage: stateguardctl dqlite inspect [-o text|json] NODE...

NODE is one node's backend directory (MicroK8s: /var/snap/microk8s/current/var/kubernetes/backend,
copied with the node stopped) or a .tar.gz/.tgz/.tar archive of it. Nothing is written.

Prints per node the last log index and term, the latest snapshot (index/term), the voters of the
latest raft configuration and the number of problems; then every problem (checksum mismatches,
holes in the log, torn open segments, conflicting metadata1/2, ...), how each node's log relates to
the source of truth, and which node that is and why: raft's rule, the higher last term, then the
higher last index.

  -o, --output text|json   output format (default text)

Exit 0 no problem found, 1 problems found, 2 a NODE cannot be read or bad usage.
)";

constexpr const char* kPlanUsage =
    R"(usage: stateguardctl dqlite plan [-o text|json] [--backend DIR] [--save-to DIR]
                                  [--source NODE] NODE...

Inspects the NODEs (as inspect does) and prints the recovery steps for MicroK8s: stop every node,
back up, check cluster.yaml on the source of truth, archive its backend directory without
info.yaml, metadata1 and metadata2, move the other nodes' old files aside and unpack the archive
there, verify, then start the source first and the others one at a time. Lagging and diverged
nodes are named. Nothing is run and nothing is written.

  -o, --output text|json   output format (default text)
  --backend DIR            the backend directory on the nodes
                           (default /var/snap/microk8s/current/var/kubernetes/backend)
  --save-to DIR            where the commands put backups and the archive (default /root)
  --source NODE            copy from this node (name, path or address) instead of raft's
                           choice, e.g. when raft's choice is damaged; the plan says what is lost

Exit 0 plan ready, 1 plan ready but with warnings to settle first (damage on the source, a node
without info.yaml, ...), 2 a NODE cannot be read or bad usage.
)";

constexpr const char* kVerifyUsage =
    R"(usage: stateguardctl dqlite verify [-o text|json] NODE NODE...

After the copy, before starting: checks that every NODE (directory or archive) holds the same log
entries - compared by index, term and payload checksum, whatever the segment files - the same last
entry, the same snapshots (index, term, data and .meta checksums) and the same cluster.yaml, and
that no two nodes share an info.yaml. The source of truth by raft's rule is the reference.

  -o, --output text|json   output format (default text)

Exit 0 identical, 1 differences (or damage in the copied data), 2 a NODE cannot be read or bad
usage.
)";

/// Parses the flags of one verb and reads every NODE; 0 when ready, else the exit code.
int load(int argc, char** argv, const char* usage, const std::set<std::string>& extraFlags,
         size_t minNodes, Flags* flags, std::string* format, std::vector<Node>* nodes) {
  std::set<std::string> withValue = {"o", "output"};
  withValue.insert(extraFlags.begin(), extraFlags.end());
  auto parsed = parseFlags(argc, argv, 3, withValue, {});
  if (!parsed.ok()) return usageError(usage, parsed.error());
  *flags = std::move(parsed).value();
  *format = flags->get("output", flags->get("o", "text"));
  if (*format != "text" && *format != "json") {
    return usageError(usage, "-o must be text or json, not \"" + *format + "\"");
  }
  if (flags->positional.size() < minNodes) {
    return usageError(usage, minNodes == 1 ? "give at least one NODE (a backend directory or "
                                             "an archive of it)"
                                           : "verify needs at least two NODEs to compare");
  }
  for (const auto& path : flags->positional) {
    auto node = dqlite::readNode(path);
    if (!node.ok()) {
      std::cerr << "stateguardctl dqlite: " << node.error() << "\n";
      return 2;
    }
    nodes->push_back(std::move(node).value());
  }
  dqlite::disambiguateNames(*nodes);
  return 0;
}

int runInspect(int argc, char** argv) {
  Flags flags;
  std::string format;
  std::vector<Node> nodes;
  if (int rc = load(argc, argv, kInspectUsage, {}, 1, &flags, &format, &nodes); rc != 0) {
    return rc;
  }
  const dqlite::Choice choice = dqlite::chooseSource(nodes);
  if (format == "json") {
    std::cout << dqlite::inspectJson(nodes, choice).dump(2) << "\n";
  } else {
    dqlite::printInspect(std::cout, nodes, choice);
  }
  for (const auto& n : nodes) {
    if (!n.problems.empty()) return 1;
  }
  return 0;
}

int runPlan(int argc, char** argv) {
  Flags flags;
  std::string format;
  std::vector<Node> nodes;
  if (int rc = load(argc, argv, kPlanUsage, {"backend", "save-to", "source"}, 1, &flags, &format,
                    &nodes);
      rc != 0) {
    return rc;
  }
  dqlite::PlanOptions options;
  if (flags.has("source")) {
    const std::string wanted = flags.get("source");
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (nodes[i].name == wanted || nodes[i].input == wanted ||
          (nodes[i].info && nodes[i].info->address == wanted)) {
        options.source = i;
      }
    }
    if (!options.source) {
      return usageError(kPlanUsage, "--source " + wanted +
                                        " is none of the NODEs given (use a node's name, path "
                                        "or address as inspect shows them)");
    }
  }
  options.backend = flags.get("backend", options.backend);
  options.saveTo = flags.get("save-to", options.saveTo);
  while (options.backend.size() > 1 && options.backend.ends_with('/')) options.backend.pop_back();
  while (options.saveTo.size() > 1 && options.saveTo.ends_with('/')) options.saveTo.pop_back();
  if (options.backend.empty() || options.saveTo.empty()) {
    return usageError(kPlanUsage, "--backend and --save-to need a directory");
  }
  const dqlite::Plan plan = dqlite::makePlan(nodes, options);
  if (format == "json") {
    std::cout << dqlite::planJson(nodes, plan, options).dump(2) << "\n";
  } else {
    dqlite::printPlan(std::cout, nodes, plan, options);
  }
  return plan.warnings.empty() ? 0 : 1;
}

int runVerify(int argc, char** argv) {
  Flags flags;
  std::string format;
  std::vector<Node> nodes;
  if (int rc = load(argc, argv, kVerifyUsage, {}, 2, &flags, &format, &nodes); rc != 0) {
    return rc;
  }
  const size_t reference = dqlite::chooseSource(nodes).source;
  const auto differences = dqlite::compareNodes(nodes, reference);
  bool damaged = false;
  for (const auto& n : nodes) damaged = damaged || !n.copiedDamage().empty();
  const bool failed = !differences.empty() || damaged;
  if (format == "json") {
    std::cout << dqlite::verifyJson(nodes, reference, differences, failed).dump(2) << "\n";
  } else {
    dqlite::printVerify(std::cout, nodes, reference, differences, failed);
  }
  return failed ? 1 : 0;
}

}  // namespace

int runDqlite(int argc, char** argv) {
  const std::string verb = argc > 2 ? argv[2] : "";
  if (verb == "inspect")
    return wantsHelp(argc, argv) ? (std::cout << kInspectUsage, 0) : runInspect(argc, argv);
  if (verb == "plan")
    return wantsHelp(argc, argv) ? (std::cout << kPlanUsage, 0) : runPlan(argc, argv);
  if (verb == "verify")
    return wantsHelp(argc, argv) ? (std::cout << kVerifyUsage, 0) : runVerify(argc, argv);
  if (verb == "--help" || verb == "-h" || verb == "help") {
    std::cout << kUsage;
    return 0;
  }
  return usageError(kUsage, verb.empty() ? "dqlite needs a verb: inspect, plan or verify"
                                         : "unknown dqlite verb \"" + verb + "\"");
}

}  // namespace stateguard::cli
