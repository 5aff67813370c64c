#include "cli/dqlite/recovery.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

namespace stateguard::cli::dqlite {
namespace {

std::string num(uint64_t v) { return std::to_string(v); }

std::string range(uint64_t a, uint64_t b) { return a == b ? num(a) : num(a) + "-" + num(b); }

std::string joinLabels(const std::vector<Node>& nodes, const std::vector<size_t>& which) {
  std::string out;
  for (size_t i = 0; i < which.size(); ++i) {
    if (i > 0) out += i + 1 == which.size() ? " and " : ", ";
    out += nodes[which[i]].name;
  }
  return out;
}

/// Adds index to a list of ranges kept in increasing order.
void extend(std::vector<std::pair<uint64_t, uint64_t>>& ranges, uint64_t index) {
  if (!ranges.empty() && ranges.back().second + 1 == index) {
    ranges.back().second = index;
  } else {
    ranges.push_back({index, index});
  }
}

/// The sort key of raft's rule, then the tie-breakers: no damage, fewer problems, input order.
bool better(const std::vector<Node>& nodes, size_t x, size_t y) {
  const Node& a = nodes[x];
  const Node& b = nodes[y];
  return std::make_tuple(b.lastTerm, b.lastIndex, a.copiedDamage().size(), a.problems.size(), x) <
         std::make_tuple(a.lastTerm, a.lastIndex, b.copiedDamage().size(), b.problems.size(), y);
}

std::string hostOf(const Node& n) {
  if (!n.info || n.info->address.empty()) return n.name;
  const std::string& a = n.info->address;
  if (!a.empty() && a[0] == '[') return a.substr(1, a.find(']') - 1);  // [v6]:port
  return a.substr(0, a.rfind(':'));
}

std::string describeServers(const std::vector<Server>& servers) {
  std::string out;
  for (const auto& s : servers) {
    out +=
        (out.empty() ? "" : "; ") + s.address + " (ID " + num(s.id) + ", " + roleName(s.role) + ")";
  }
  return out.empty() ? "nobody" : out;
}

/// Nodes best first by raft's rule, then no damage, fewer problems, input order.
std::vector<size_t> ranked(const std::vector<Node>& nodes) {
  std::vector<size_t> order(nodes.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return better(nodes, x, y); });
  return order;
}

/// Sets choice->warning (and fallback) when the chosen source has damage a copy would spread.
void warnAboutDamage(const std::vector<Node>& nodes, const std::vector<size_t>& order, Choice* c) {
  Choice& choice = *c;
  const Node& s = nodes[choice.source];
  const auto damage = s.copiedDamage();
  if (!damage.empty()) {
    std::string what;
    for (size_t i = 0; i < damage.size() && i < 3; ++i) {
      what += (i ? "; " : "") + damage[i]->kind +
              (damage[i]->file.empty() ? "" : " in " + damage[i]->file);
    }
    if (damage.size() > 3) what += "; and " + num(damage.size() - 3) + " more";
    choice.warning = s.name + " has damage in the files a recovery copies (" + what +
                     "). raft refuses to start with a damaged closed segment or a hole in the "
                     "log, so copying " +
                     s.name + "'s files would spread a log no node can start with.";
    for (size_t i : order) {
      if (nodes[i].copiedDamage().empty()) {
        choice.fallback = i;
        break;
      }
    }
    if (choice.fallback) {
      const Node& f = nodes[*choice.fallback];
      choice.warning += " The best node without such damage is " + f.label() + " (last index " +
                        num(f.lastIndex) + ", term " + num(f.lastTerm) + ")";
      if (f.lastIndex < s.lastIndex || f.lastTerm < s.lastTerm) {
        choice.warning += "; using it loses what " + s.name + " has past that (up to index " +
                          num(s.lastIndex) + ", term " + num(s.lastTerm) + ")";
      }
      choice.warning += ". Decide which loss is acceptable; to copy from " + f.name +
                        ", run plan again with --source " + f.name +
                        ", or restore the damaged files from a backup.";
    } else {
      choice.warning +=
          " No node given is free of damage: restore the damaged files from a backup before "
          "copying anything.";
    }
  }
}

/// Replaces "{step:KIND}" in titles and warnings with the number of the first step of KIND.
void numberSteps(Plan& plan) {
  auto fill = [&](std::string& text) {
    for (size_t at; (at = text.find("{step:")) != std::string::npos;) {
      const size_t end = text.find('}', at);
      const std::string kind = text.substr(at + 6, end - at - 6);
      std::string number = "?";
      for (size_t i = 0; i < plan.steps.size(); ++i) {
        if (plan.steps[i].kind == kind) {
          number = std::to_string(i + 1);
          break;
        }
      }
      text.replace(at, end - at + 1, number);
    }
  };
  for (auto& step : plan.steps) fill(step.title);
  for (auto& w : plan.warnings) fill(w);
}

}  // namespace

std::string formatRanges(const std::vector<std::pair<uint64_t, uint64_t>>& ranges, size_t limit) {
  std::string out;
  for (size_t i = 0; i < ranges.size() && i < limit; ++i) {
    out += (i ? ", " : "") + range(ranges[i].first, ranges[i].second);
  }
  if (ranges.size() > limit) out += " and " + num(ranges.size() - limit) + " more ranges";
  return out;
}

Choice chooseSource(const std::vector<Node>& nodes, std::optional<size_t> forced) {
  Choice choice;
  if (nodes.empty()) return choice;
  const std::vector<size_t> order = ranked(nodes);
  const size_t best = order.front();
  const Node& s = nodes[best];
  choice.source = best;
  std::optional<size_t> runner;
  for (size_t i = 1; i < order.size(); ++i) {
    const Node& n = nodes[order[i]];
    if (n.lastTerm == s.lastTerm && n.lastIndex == s.lastIndex) {
      choice.tied.push_back(order[i]);
    } else if (!runner) {
      runner = order[i];
    }
  }
  const std::string last = "index " + num(s.lastIndex) + ", term " + num(s.lastTerm);
  if (nodes.size() == 1) {
    choice.reason = "it is the only node given (last entry " + last + ").";
  } else if (!choice.tied.empty()) {
    const Node& t = nodes[choice.tied.front()];
    std::string why = "it was given first";
    if (s.copiedDamage().size() < t.copiedDamage().size()) {
      why = "its segments have no damage";
    } else if (s.problems.size() < t.problems.size()) {
      why = "it has fewer problems";
    }
    choice.reason = "it holds the newest last entry (" + last + "), as does " +
                    joinLabels(nodes, choice.tied) + "; " + s.name + " was picked because " + why +
                    ".";
  } else if (nodes[*runner].lastTerm < s.lastTerm) {
    const Node& r = nodes[*runner];
    choice.reason = "it has the highest last term (" + num(s.lastTerm) + ", last index " +
                    num(s.lastIndex) + "); the next, " + r.name + ", has last term " +
                    num(r.lastTerm) + " (last index " + num(r.lastIndex) +
                    "). raft elects the node with the higher last term, whatever the index.";
  } else {
    const Node& r = nodes[*runner];
    choice.reason = "it has the same last term (" + num(s.lastTerm) + ") as " + r.name +
                    " and the highest last index (" + num(s.lastIndex) + " against " +
                    num(r.lastIndex) + ").";
  }
  warnAboutDamage(nodes, order, &choice);
  if (!forced || *forced == best) {
    if (forced)
      choice.reason = "chosen with --source, which is raft's choice too: " + choice.reason;
    return choice;
  }
  Choice mine;
  mine.source = *forced;
  const Relation r = relate(nodes[*forced], s);  // what the rule's choice holds that is lost
  std::string rule = choice.reason;
  if (!rule.empty() && rule.back() == '.') rule.pop_back();
  mine.reason =
      "chosen with --source. By raft's rule the source would be " + s.label() + ": " + rule + ".";
  const Node& f = nodes[*forced];
  mine.warning = f.name + " was chosen with --source over raft's choice " + s.name +
                 " (last index " + num(s.lastIndex) + ", term " + num(s.lastTerm) + "; " + f.name +
                 ": last index " + num(f.lastIndex) + ", term " + num(f.lastTerm) + "). " + s.name +
                 " " + r.summary + ".";
  const std::string overRule = mine.warning;
  warnAboutDamage(nodes, order, &mine);
  if (mine.warning != overRule) mine.warning = overRule + " " + mine.warning;
  return mine;
}

Relation relate(const Node& source, const Node& other) {
  Relation r;
  if (&source == &other) {
    r.kind = "source";
    r.summary = "the source of truth";
    return r;
  }
  const auto& a = source.log;
  const auto& b = other.log;
  size_t i = 0, j = 0, common = 0;
  uint64_t termDiff = 0, sumDiff = 0, damagedDiff = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i].index < b[j].index) {
      ++i;
    } else if (b[j].index < a[i].index) {
      ++j;
    } else {
      ++common;
      if (a[i].term != b[j].term && termDiff == 0) {
        termDiff = a[i].index;
        r.termHere = b[j].term;
        r.termSource = a[i].term;
      }
      if (a[i].checksum != b[j].checksum) {
        if (a[i].damaged || b[j].damaged) {
          ++damagedDiff;  // already reported as a checksum problem of that node
        } else if (sumDiff == 0) {
          sumDiff = a[i].index;
        }
      }
      ++i;
      ++j;
    }
  }
  if (termDiff != 0) {
    r.kind = "diverged";
    r.at = termDiff;
    r.summary = "diverged at index " + num(termDiff) + " (term " + num(r.termHere) + " here, " +
                num(r.termSource) + " on " + source.name + "): its entries " +
                range(termDiff, other.lastIndex) + " are not " + source.name +
                "'s and will be replaced";
    return r;
  }
  if (sumDiff != 0) {
    r.kind = "content-differs";
    r.at = sumDiff;
    r.summary = "holds index " + num(sumDiff) + " with the same term as " + source.name +
                " but other content: one of the two copies is damaged";
    return r;
  }
  const std::string damage =
      damagedDiff == 0
          ? ""
          : "; " + num(damagedDiff) +
                (damagedDiff == 1 ? " entry in common differs" : " entries in common differ") +
                " only where one copy fails its checksum";
  if (other.lastIndex > source.lastIndex) {
    r.kind = "ahead";
    r.at = source.lastIndex + 1;
    r.summary = "holds entries " + range(source.lastIndex + 1, other.lastIndex) + " (up to term " +
                num(other.lastTerm) + ") that " + source.name +
                " does not have: they will be replaced" + damage;
    return r;
  }
  if (other.lastIndex == source.lastIndex && other.lastTerm == source.lastTerm) {
    r.kind = "same";
    r.summary = common > 0 ? "holds the same entries (last index " + num(other.lastIndex) + ")"
                           : "has the same last entry (index " + num(other.lastIndex) + ")";
    r.summary += damage;
    return r;
  }
  if (common == 0 && !(other.lastIndex < source.lastIndex)) {
    r.kind = "no-common-entries";
    r.summary = "shares no log entry with " + source.name + ": it cannot be compared";
    return r;
  }
  r.kind = "behind";
  r.behindBy = source.lastIndex - other.lastIndex;
  r.summary = num(r.behindBy) + " entries behind (last index " + num(other.lastIndex) + ", term " +
              num(other.lastTerm) + ")";
  if (common == 0) r.summary += "; its log ends before " + source.name + "'s oldest entry";
  r.summary += damage;
  return r;
}

Plan makePlan(const std::vector<Node>& nodes, const PlanOptions& options) {
  Plan plan;
  plan.choice = chooseSource(nodes, options.source);
  const Node& source = nodes[plan.choice.source];
  std::vector<std::string> all, others;
  std::vector<size_t> otherIdx;
  for (size_t i = 0; i < nodes.size(); ++i) {
    plan.relations.push_back(relate(source, nodes[i]));
    all.push_back(nodes[i].label());
    if (i != plan.choice.source) {
      others.push_back(nodes[i].label());
      otherIdx.push_back(i);
    }
  }
  if (!plan.choice.warning.empty()) plan.warnings.push_back(plan.choice.warning);
  for (size_t t : plan.choice.tied) {
    const Relation& r = plan.relations[t];
    if (r.kind != "same") {
      plan.warnings.push_back(nodes[t].name + " has the same last entry as " + source.name +
                              " but " + r.summary + ".");
    }
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const auto& p : nodes[i].problems) {
      if (p.kind == "metadata" || p.kind == "metadata-conflict" || p.kind == "info-yaml") {
        plan.warnings.push_back(nodes[i].name + " keeps its own " +
                                (p.kind == "info-yaml" ? "info.yaml" : "metadata files") +
                                ", and they have a problem: " + p.message);
      }
    }
    if (i != plan.choice.source && !nodes[i].info) {
      plan.warnings.push_back(
          nodes[i].name +
          " has no info.yaml in what was given. Each node keeps its own "
          "info.yaml; make sure it is in place on that node before step {step:start}.");
    }
  }
  std::set<uint64_t> members;
  for (const auto& s : source.cluster) members.insert(s.id);
  for (size_t i : otherIdx) {
    const Node& n = nodes[i];
    if (n.info && source.hasClusterYaml && members.count(n.info->id) == 0) {
      plan.warnings.push_back(
          n.label() + " (ID " + num(n.info->id) + ") is not in " + source.name +
          "'s cluster.yaml: after the copy it is not a member. Add it to "
          "cluster.yaml before step {step:archive}, or join it again afterwards "
          "(microk8s add-node / join).");
    }
  }

  const std::string& b = options.backend;
  const std::string& s = options.saveTo;
  const std::string archive = s + "/backend.tar.gz";
  std::string otherNames;
  for (size_t i : otherIdx) otherNames += (otherNames.empty() ? "" : ", ") + nodes[i].name;
  if (otherNames.empty()) otherNames = "(no other node given)";
  auto add = [&](std::string kind, std::string title, std::vector<std::string> where,
                 std::vector<std::string> commands) {
    plan.steps.push_back(
        {std::move(kind), std::move(title), std::move(where), std::move(commands)});
  };
  add("stop",
      "Stop MicroK8s on every node and keep it stopped until step {step:start} (snap stop microk8s "
      "also "
      "works). A node that is gone for good must never start again with its old data.",
      all, {"sudo microk8s stop"});
  add("backup",
      "Back up every node's backend directory as it is now; nothing below deletes files, but this "
      "is the way back.",
      all, {"sudo tar -C " + b + " -czf " + s + "/backend-backup-$(hostname).tar.gz ."});
  std::string clusterTitle =
      "On " + source.name +
      ", check that cluster.yaml lists exactly the nodes that should be members (Role 0 = voter): "
      "after the copy every node reads this file. It lists now: " +
      (source.hasClusterYaml ? describeServers(source.cluster) : std::string("(no cluster.yaml)")) +
      ". Edit it now if a node is gone for good.";
  if (source.configuration.readable) {
    clusterTitle += " raft's own configuration (" + source.configuration.source +
                    ") has: " + describeServers(source.configuration.servers) + ".";
  }
  add("cluster-yaml", clusterTitle, {source.label()}, {"sudo cat " + b + "/cluster.yaml"});
  if (otherIdx.empty()) {
    plan.warnings.push_back(
        "Only " + source.name +
        " was given. The source of truth can only be chosen among all the nodes' data: give "
        "every node's backend directory (or archive). With a single surviving node there is "
        "nothing to copy; start it alone.");
    add("start", "Start " + source.name + " and wait until it is ready.", {source.label()},
        {"sudo microk8s start", "sudo microk8s status --wait-ready"});
    add("check", "Check that the node is back.", {source.label()},
        {"sudo microk8s kubectl get nodes"});
    numberSteps(plan);
    return plan;
  }
  add("archive",
      "On " + source.name +
          ", archive the backend directory without the files that belong to one node only: "
          "info.yaml (which node this is), metadata1 and metadata2 (its term and vote), and "
          "sockets.",
      {source.label()},
      {"sudo tar -C " + b + " -czf " + archive +
       " --exclude=info.yaml --exclude=metadata1 --exclude=metadata2 --exclude='*.sock*' ."});
  std::vector<std::string> copies;
  for (size_t i : otherIdx) {
    copies.push_back("scp " + archive + " " + hostOf(nodes[i]) + ":" + archive);
  }
  add("copy", "Copy the archive from " + source.name + " to " + otherNames + ".", {source.label()},
      copies);
  std::string replaceTitle =
      "On " + otherNames +
      ", move the old files aside (keeping the node's own info.yaml, metadata1 and metadata2) "
      "and unpack the archive. Unpacking over the old files is not enough: segments the source "
      "does not have would stay and mix with its log.";
  for (size_t i : otherIdx) {
    const Relation& r = plan.relations[i];
    if (r.kind != "same" && r.kind != "source") {
      replaceTitle += " " + nodes[i].name + ": " + r.summary + ".";
    }
  }
  add("replace", replaceTitle, others,
      {"sudo mkdir -p " + s + "/backend-replaced",
       "sudo find " + b +
           " -mindepth 1 -maxdepth 1 ! -name info.yaml ! -name metadata1 ! -name metadata2 "
           "-exec mv -t " +
           s + "/backend-replaced {} +",
       "sudo tar -C " + b + " -xzf " + archive});
  add("collect",
      "Before starting anything, archive each node's backend directory as it is now and bring "
      "the archives to the machine where you run stateguardctl.",
      all, {"sudo tar -C " + b + " -czf " + s + "/check-$(hostname).tar.gz ."});
  add("verify",
      "Check that every node now holds the same log, snapshots and cluster.yaml, each with its "
      "own info.yaml. verify must exit 0; if it does not, redo steps {step:replace} and "
      "{step:collect} for the nodes it "
      "names.",
      {"the machine with the check archives"}, {"stateguardctl dqlite verify check-*.tar.gz"});
  add("start", "Start " + source.name + " first and wait until it is ready.", {source.label()},
      {"sudo microk8s start", "sudo microk8s status --wait-ready"});
  add("start", "Then start " + otherNames + ", one node at a time, each until it is ready.", others,
      {"sudo microk8s start", "sudo microk8s status --wait-ready"});
  add("check", "Check that every node is back.", {source.label()},
      {"sudo microk8s kubectl get nodes"});
  numberSteps(plan);
  return plan;
}

std::vector<Difference> compareNodes(const std::vector<Node>& nodes, size_t reference) {
  std::vector<Difference> out;
  const Node& ref = nodes[reference];
  for (size_t k = 0; k < nodes.size(); ++k) {
    if (k == reference) continue;
    const Node& n = nodes[k];
    auto diff = [&](std::string kind, std::string message) {
      out.push_back({n.label(), std::move(kind), std::move(message)});
    };
    if (n.lastIndex != ref.lastIndex || n.lastTerm != ref.lastTerm) {
      diff("last-entry", "last entry is index " + num(n.lastIndex) + ", term " + num(n.lastTerm) +
                             "; " + ref.name + "'s is index " + num(ref.lastIndex) + ", term " +
                             num(ref.lastTerm) + ".");
    }
    std::vector<std::pair<uint64_t, uint64_t>> missing, extra;
    uint64_t differing = 0, first = 0, termHere = 0, termRef = 0;
    size_t i = 0, j = 0;
    const auto& a = ref.log;
    const auto& b = n.log;
    while (i < a.size() || j < b.size()) {
      if (j == b.size() || (i < a.size() && a[i].index < b[j].index)) {
        extend(missing, a[i++].index);
      } else if (i == a.size() || b[j].index < a[i].index) {
        extend(extra, b[j++].index);
      } else {
        if (a[i].term != b[j].term || a[i].checksum != b[j].checksum) {
          if (differing++ == 0) {
            first = a[i].index;
            termHere = b[j].term;
            termRef = a[i].term;
          }
        }
        ++i;
        ++j;
      }
    }
    if (differing > 0) {
      diff("entries", num(differing) + " entries differ from " + ref.name +
                          "'s, the first at index " + num(first) +
                          (termHere != termRef ? " (term " + num(termHere) + " here, " +
                                                     num(termRef) + " on " + ref.name + ")"
                                               : " (same term, other content)") +
                          ".");
    }
    if (!missing.empty()) {
      diff("missing",
           "entries " + formatRanges(missing) + " of " + ref.name + " are missing here.");
    }
    if (!extra.empty()) {
      diff("extra",
           "holds entries " + formatRanges(extra) + " that " + ref.name + " does not have.");
    }
    std::map<std::pair<uint64_t, uint64_t>, const Snapshot*> refSnaps, snaps;
    for (const auto& s : ref.snapshots) {
      if (s.hasData && s.hasMeta) refSnaps[{s.term, s.index}] = &s;
    }
    for (const auto& s : n.snapshots) {
      if (s.hasData && s.hasMeta) snaps[{s.term, s.index}] = &s;
    }
    for (const auto& [key, s] : refSnaps) {
      auto it = snaps.find(key);
      const std::string what = "snapshot at index " + num(key.second) + ", term " + num(key.first);
      if (it == snaps.end()) {
        diff("snapshot", what + " (" + s->name + " on " + ref.name + ") is missing here.");
      } else if (it->second->dataSha256 != s->dataSha256) {
        diff("snapshot", what + ": the data differs (sha256 " +
                             it->second->dataSha256.substr(0, 12) + "... here, " +
                             s->dataSha256.substr(0, 12) + "... on " + ref.name + ").");
      } else if (it->second->metaSha256 != s->metaSha256) {
        diff("snapshot", what + ": the .meta file differs.");
      }
    }
    for (const auto& [key, s] : snaps) {
      if (refSnaps.count(key) == 0) {
        diff("snapshot", "holds " + s->name + " that " + ref.name + " does not have.");
      }
    }
    auto sorted = [](std::vector<Server> v) {
      std::sort(v.begin(), v.end(), [](const Server& x, const Server& y) { return x.id < y.id; });
      return v;
    };
    const auto c1 = sorted(ref.cluster), c2 = sorted(n.cluster);
    bool same = ref.hasClusterYaml == n.hasClusterYaml && c1.size() == c2.size();
    for (size_t x = 0; same && x < c1.size(); ++x) {
      same = c1[x].id == c2[x].id && c1[x].address == c2[x].address && c1[x].role == c2[x].role;
    }
    if (!same) {
      diff("cluster-yaml", "cluster.yaml differs from " + ref.name + "'s (here: " +
                               (n.hasClusterYaml ? describeServers(n.cluster) : "none") + "; on " +
                               ref.name + ": " +
                               (ref.hasClusterYaml ? describeServers(ref.cluster) : "none") + ").");
    }
  }
  for (size_t x = 0; x < nodes.size(); ++x) {
    for (size_t y = x + 1; y < nodes.size(); ++y) {
      if (nodes[x].info && nodes[y].info && nodes[x].info->id == nodes[y].info->id) {
        out.push_back({nodes[y].label(), "info-yaml",
                       "info.yaml has the same ID (" + num(nodes[y].info->id) + ") as " +
                           nodes[x].name +
                           "'s: info.yaml was copied between nodes. Put this node's own "
                           "info.yaml back (from its backup) before starting it."});
      }
    }
  }
  return out;
}

}  // namespace stateguard::cli::dqlite
