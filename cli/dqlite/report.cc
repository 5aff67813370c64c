#include "cli/dqlite/report.h"

#include <algorithm>

#include "cli/common.h"

namespace stateguard::cli::dqlite {
namespace {

std::string num(uint64_t v) { return std::to_string(v); }

std::string votersText(const Node& n) {
  if (!n.configuration.present) return "-";
  if (!n.configuration.readable) return "? (unreadable)";
  std::string out;
  for (const auto& s : n.configuration.voters()) out += (out.empty() ? "" : ",") + s.address;
  return out.empty() ? "none" : out;
}

std::string snapshotText(const Node& n) {
  const Snapshot* s = n.latestSnapshot();
  return s == nullptr ? "-" : num(s->index) + "/" + num(s->term);
}

json serverJson(const Server& s) {
  return {{"id", s.id}, {"address", s.address}, {"role", roleName(s.role)}};
}

json serversJson(const std::vector<Server>& servers) {
  json out = json::array();
  for (const auto& s : servers) out.push_back(serverJson(s));
  return out;
}

json problemJson(const Problem& p) {
  return {
      {"kind", p.kind}, {"file", p.file}, {"message", p.message}, {"inCopiedData", p.inCopiedData}};
}

json relationJson(const Relation& r) {
  json out = {{"kind", r.kind}, {"summary", r.summary}};
  if (r.at != 0) out["at"] = r.at;
  if (r.kind == "diverged") {
    out["termHere"] = r.termHere;
    out["termSource"] = r.termSource;
  }
  if (r.kind == "behind") out["behindBy"] = r.behindBy;
  return out;
}

json nodeJson(const Node& n) {
  json j = {{"name", n.name},           {"input", n.input},
            {"lastIndex", n.lastIndex}, {"lastTerm", n.lastTerm},
            {"entries", n.log.size()},  {"firstIndex", n.log.empty() ? 0 : n.log.front().index}};
  j["info"] = n.info ? serverJson(*n.info) : json(nullptr);
  j["clusterYaml"] = n.hasClusterYaml ? serversJson(n.cluster) : json(nullptr);
  const Snapshot* latest = n.latestSnapshot();
  j["snapshot"] =
      latest == nullptr
          ? json(nullptr)
          : json{{"name", latest->name}, {"index", latest->index}, {"term", latest->term}};
  json conf = nullptr;
  if (n.configuration.present) {
    conf = {{"source", n.configuration.source},
            {"index", n.configuration.index},
            {"readable", n.configuration.readable},
            {"servers", serversJson(n.configuration.servers)}};
    if (!n.configuration.readable) conf["error"] = n.configuration.error;
  }
  j["configuration"] = conf;
  json voters = json::array();
  for (const auto& s : n.configuration.voters()) voters.push_back(s.address);
  j["voters"] = n.configuration.readable ? voters : json(nullptr);
  const Metadata* m = n.currentMetadata();
  j["metadata"] = m == nullptr ? json(nullptr)
                               : json{{"version", m->version},
                                      {"term", m->term},
                                      {"votedFor", m->votedFor},
                                      {"file", m == &n.metadata1 ? "metadata1" : "metadata2"}};
  json segments = json::array();
  for (const auto& s : n.segments) {
    json seg = {{"name", s.name}, {"open", s.open},       {"state", s.state},
                {"size", s.size}, {"batches", s.batches}, {"entries", s.entries}};
    if (s.entries > 0) {
      seg["firstIndex"] = s.firstIndex;
      seg["lastIndex"] = s.lastIndex;
    }
    segments.push_back(seg);
  }
  j["segments"] = segments;
  json snaps = json::array();
  for (const auto& s : n.snapshots) {
    snaps.push_back({{"name", s.name},
                     {"index", s.index},
                     {"term", s.term},
                     {"timestamp", s.timestamp},
                     {"hasData", s.hasData},
                     {"hasMeta", s.hasMeta},
                     {"metaOk", s.metaOk},
                     {"dataSize", s.dataSize},
                     {"dataSha256", s.dataSha256}});
  }
  j["snapshots"] = snaps;
  json problems = json::array();
  for (const auto& p : n.problems) problems.push_back(problemJson(p));
  j["problems"] = problems;
  j["notes"] = n.notes;
  return j;
}

json choiceJson(const std::vector<Node>& nodes, const Choice& c) {
  json tied = json::array();
  for (size_t t : c.tied) tied.push_back(nodes[t].name);
  return {{"node", nodes[c.source].name},
          {"reason", c.reason},
          {"tied", tied},
          {"warning", c.warning.empty() ? json(nullptr) : json(c.warning)},
          {"fallback", c.fallback ? json(nodes[*c.fallback].name) : json(nullptr)}};
}

void printChoice(std::ostream& out, const std::vector<Node>& nodes, const Choice& c) {
  out << "Source of truth: " << nodes[c.source].label() << ": " << c.reason << "\n";
  if (!c.warning.empty()) out << "\nWARNING: " << c.warning << "\n";
}

}  // namespace

void printInspect(std::ostream& out, const std::vector<Node>& nodes, const Choice& choice) {
  std::vector<std::vector<std::string>> rows = {
      {"NODE", "LAST INDEX", "LAST TERM", "SNAPSHOT (INDEX/TERM)", "VOTERS", "PROBLEMS"}};
  for (const auto& n : nodes) {
    rows.push_back({n.label(), num(n.lastIndex), num(n.lastTerm), snapshotText(n), votersText(n),
                    num(n.problems.size())});
  }
  printTable(out, rows);
  size_t problems = 0;
  for (const auto& n : nodes) problems += n.problems.size();
  if (problems > 0) {
    out << "\nProblems:\n";
    for (const auto& n : nodes) {
      if (n.problems.empty()) continue;
      out << "  " << n.label() << "\n";
      for (const auto& p : n.problems) out << "    - " << p.kind << ": " << p.message << "\n";
    }
  }
  bool anyNotes = false;
  for (const auto& n : nodes) anyNotes = anyNotes || !n.notes.empty();
  if (anyNotes) {
    out << "\nNotes:\n";
    for (const auto& n : nodes) {
      for (const auto& note : n.notes) out << "  " << n.name << ": " << note << "\n";
    }
  }
  if (nodes.size() > 1) {
    const Node& source = nodes[choice.source];
    out << "\nCompared with " << source.name << ":\n";
    for (const auto& n : nodes) {
      if (&n == &source) continue;
      out << "  " << n.label() << ": " << relate(source, n).summary << "\n";
    }
  }
  out << "\n";
  printChoice(out, nodes, choice);
  if (problems > 0) {
    out << "\n"
        << problems << (problems == 1 ? " problem" : " problems")
        << " found. Problems in nodes other than the source of truth are repaired by the copy "
           "(stateguardctl dqlite plan ...).\n";
  }
}

json inspectJson(const std::vector<Node>& nodes, const Choice& choice) {
  json out = {{"nodes", json::array()}};
  size_t problems = 0;
  for (const auto& n : nodes) {
    json j = nodeJson(n);
    j["relation"] = relationJson(relate(nodes[choice.source], n));
    out["nodes"].push_back(j);
    problems += n.problems.size();
  }
  out["sourceOfTruth"] = choiceJson(nodes, choice);
  out["problemCount"] = problems;
  return out;
}

void printPlan(std::ostream& out, const std::vector<Node>& nodes, const Plan& plan,
               const PlanOptions& options) {
  out << "Recovery plan for " << nodes.size() << (nodes.size() == 1 ? " node" : " nodes")
      << " (backend directory on the nodes: " << options.backend << ").\n\n";
  out << "Source of truth: " << nodes[plan.choice.source].label() << ": " << plan.choice.reason
      << "\n";
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (i == plan.choice.source) continue;
    out << "  " << nodes[i].label() << ": " << plan.relations[i].summary << "\n";
  }
  for (const auto& w : plan.warnings) out << "\nWARNING: " << w << "\n";
  out << "\n";
  size_t number = 0;
  for (const auto& step : plan.steps) {
    out << ++number << ". " << step.title << "\n";
    std::string where;
    for (const auto& n : step.nodes) where += (where.empty() ? "" : ", ") + n;
    out << "   on " << (where.empty() ? "(no node)" : where) << ":\n";
    for (const auto& c : step.commands) out << "     " << c << "\n";
  }
  if (!plan.warnings.empty()) {
    out << "\nThe plan has " << plan.warnings.size()
        << (plan.warnings.size() == 1 ? " warning" : " warnings")
        << " above: settle them before going past step 3.\n";
  }
}

json planJson(const std::vector<Node>& nodes, const Plan& plan, const PlanOptions& options) {
  json steps = json::array();
  size_t number = 0;
  for (const auto& s : plan.steps) {
    steps.push_back({{"number", ++number},
                     {"kind", s.kind},
                     {"title", s.title},
                     {"nodes", s.nodes},
                     {"commands", s.commands}});
  }
  json rel = json::array();
  for (size_t i = 0; i < nodes.size(); ++i) {
    json r = relationJson(plan.relations[i]);
    r["node"] = nodes[i].name;
    rel.push_back(r);
  }
  return {{"backend", options.backend},
          {"saveTo", options.saveTo},
          {"sourceOfTruth", choiceJson(nodes, plan.choice)},
          {"nodes", rel},
          {"warnings", plan.warnings},
          {"steps", steps}};
}

void printVerify(std::ostream& out, const std::vector<Node>& nodes, size_t reference,
                 const std::vector<Difference>& differences, bool failed) {
  const Node& ref = nodes[reference];
  out << "Compared " << nodes.size() << " nodes with " << ref.label()
      << ": entries by index, term and payload checksum (segment files do not matter), last "
         "entry, snapshots, cluster.yaml.\n";
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (i == reference) continue;
    const Node& n = nodes[i];
    std::vector<const Difference*> mine;
    for (const auto& d : differences) {
      if (d.node == n.label()) mine.push_back(&d);
    }
    out << "  " << n.label() << ": "
        << (mine.empty() ? "identical"
                         : num(mine.size()) + (mine.size() == 1 ? " difference" : " differences"))
        << "\n";
    for (const auto* d : mine) out << "    - " << d->kind << ": " << d->message << "\n";
  }
  for (const auto& d : differences) {
    if (d.node == ref.label()) out << "  " << d.node << ": " << d.kind << ": " << d.message << "\n";
  }
  bool anyProblem = false;
  for (const auto& n : nodes) {
    for (const auto& p : n.problems) {
      if (!anyProblem) out << "\nProblems in the nodes' data:\n";
      anyProblem = true;
      out << "  " << n.name << ": " << p.kind << ": " << p.message << "\n";
    }
  }
  out << "\n";
  if (!failed) {
    size_t snaps = 0;
    for (const auto& s : ref.snapshots) snaps += (s.hasData && s.hasMeta) ? 1 : 0;
    out << "Identical: every node holds entries "
        << (ref.log.empty() ? std::string("(none)")
                            : num(ref.log.front().index) + "-" + num(ref.log.back().index))
        << " (last term " << ref.lastTerm << ") and the same " << snaps
        << (snaps == 1 ? " snapshot" : " snapshots")
        << ". Start the node the plan named as the source of truth first, then the others one "
           "at a time.\n";
  } else if (!differences.empty()) {
    out << differences.size() << (differences.size() == 1 ? " difference" : " differences")
        << ". Do not start these nodes yet: redo the copy (stateguardctl dqlite plan, steps 4-6) "
           "for the nodes listed, then verify again.\n";
  } else {
    out << "The nodes hold the same data, but it is damaged (problems above): raft will not "
           "start with it. Restore the damaged files from a backup before starting.\n";
  }
}

json verifyJson(const std::vector<Node>& nodes, size_t reference,
                const std::vector<Difference>& differences, bool failed) {
  json diffs = json::array();
  for (const auto& d : differences) {
    diffs.push_back({{"node", d.node}, {"kind", d.kind}, {"message", d.message}});
  }
  json problems = json::array();
  for (const auto& n : nodes) {
    for (const auto& p : n.problems) {
      json j = problemJson(p);
      j["node"] = n.name;
      problems.push_back(j);
    }
  }
  return {{"reference", nodes[reference].name},
          {"identical", differences.empty()},
          {"ok", !failed},
          {"differences", diffs},
          {"problems", problems}};
}

}  // namespace stateguard::cli::dqlite
