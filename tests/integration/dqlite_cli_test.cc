// stateguardctl dqlite through the real binary on backend directories written byte for byte by
// tests/support/dqlite_writer: help and usage errors, inspect/plan/verify output and exit codes,
// unusable input (exit 2), inputs left untouched, and a whole recovery carried out by running the
// plan's own commands (backup, archive, replace, collect) on three node directories, then verify.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <functional>
#include <map>

#include "core/json_yaml.h"
#include "tests/support/dqlite_writer.h"
#include "tests/support/process.h"

namespace stateguard::testing {
namespace {

namespace fs = std::filesystem;
using dqlite::NodeLayout;

uint64_t standardTerm(uint64_t index) {
  return index == 1 ? 1 : index <= 20 ? 2 : index <= 45 ? 3 : 4;
}

CommandResult ctl(const std::vector<std::string>& args) {
  return runCommand(binaryPath("stateguardctl"), args);
}

CommandResult bash(const std::string& script) { return runCommand("/bin/bash", {"-c", script}); }

/// Every regular file under `root`: content hash, size, mtime and mode.
std::map<std::string, std::string> fingerprint(const std::string& root) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    struct stat st {};
    ::stat(e.path().c_str(), &st);
    out[e.path().string()] = std::to_string(std::hash<std::string>{}(readText(e.path().string()))) +
                             "/" + std::to_string(st.st_size) + "/" +
                             std::to_string(st.st_mtim.tv_sec) + "." +
                             std::to_string(st.st_mtim.tv_nsec) + "/" + std::to_string(st.st_mode);
  }
  return out;
}

/// A temp directory per test holding node directories written for the real binary.
class DqliteCliTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = makeTempDir("sg-dqlite-cli"); }
  void TearDown() override { removeTree(dir_); }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  NodeLayout layout(std::vector<uint64_t> closedEnds, size_t self, size_t n = 60) {
    NodeLayout l;
    l.members = dqlite::threeMembers();
    l.log = dqlite::makeLog(n, standardTerm, l.members);
    l.closedEnds = std::move(closedEnds);
    l.snapshotIndex = 40;
    l.self = l.members[self];
    return l;
  }

  void healthy() {
    dqlite::writeNode(path("n1"), layout({10, 25, 40, 55}, 0));
    dqlite::writeNode(path("n2"), layout({20, 50}, 1));
    dqlite::writeNode(path("n3"), layout({30}, 2));
  }

  /// n1 is behind (48 entries) with a torn last batch in open-1; n2 is the source (60 entries,
  /// last term 4); n3 diverged: entries 46-60 in term 3.
  void broken() {
    NodeLayout a = layout({25, 40}, 0, 48);
    dqlite::writeNode(path("n1"), a);
    std::string open = dqlite::segmentBytes(
        {{a.log[40], a.log[41], a.log[42]}, {a.log[43], a.log[44], a.log[45]}});
    const std::string torn = dqlite::encodeBatch({a.log[46], a.log[47]});
    open += torn.substr(0, torn.size() - 12);
    open.resize(32 * 1024, '\0');
    dqlite::NodeWriter(path("n1")).raw("open-1", open);
    dqlite::writeNode(path("n2"), layout({20, 50}, 1));
    NodeLayout c = layout({30}, 2);
    auto other = dqlite::makeLog(
        60, [](uint64_t i) { return i <= 45 ? standardTerm(i) : 3; }, c.members, 2);
    for (size_t i = 45; i < 60; ++i) c.log[i] = other[i];
    dqlite::writeNode(path("n3"), c);
  }

  std::string dir_;
};

TEST_F(DqliteCliTest, EveryVerbHasHelp) {
  auto top = ctl({"dqlite", "--help"});
  EXPECT_EQ(top.exitCode, 0);
  EXPECT_NE(top.out.find("usage: stateguardctl dqlite inspect|plan|verify"), std::string::npos);
  for (const std::string verb : {"inspect", "plan", "verify"}) {
    for (const std::string flag : {"--help", "-h"}) {
      auto r = ctl({"dqlite", verb, flag});
      EXPECT_EQ(r.exitCode, 0) << verb;
      EXPECT_NE(r.out.find("usage: stateguardctl dqlite " + verb), std::string::npos) << r.out;
      EXPECT_NE(r.out.find("Exit 0"), std::string::npos) << r.out;
      EXPECT_TRUE(r.err.empty()) << r.err;
    }
  }
}

TEST_F(DqliteCliTest, UsageErrorsExitTwo) {
  healthy();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"dqlite"}, "dqlite needs a verb"},
      {{"dqlite", "frobnicate"}, "unknown dqlite verb \"frobnicate\""},
      {{"dqlite", "inspect"}, "give at least one NODE"},
      {{"dqlite", "inspect", "-o", "yaml", path("n1")}, "-o must be text or json"},
      {{"dqlite", "verify", path("n1")}, "verify needs at least two NODEs"},
      {{"dqlite", "plan", "--bogus", path("n1")}, "unknown flag --bogus"},
      {{"dqlite", "plan", "--backend", "", path("n1")}, "--backend and --save-to need"},
      {{"dqlite", "plan", "--source", "n9", path("n1")}, "--source n9 is none of the NODEs"},
  };
  for (const auto& [args, message] : cases) {
    auto r = ctl(args);
    EXPECT_EQ(r.exitCode, 2) << args.back();
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("usage: stateguardctl dqlite"), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST_F(DqliteCliTest, InspectHealthyNodes) {
  healthy();
  auto r = ctl({"dqlite", "inspect", path("n1"), path("n2"), path("n3")});
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("NODE"), std::string::npos);
  EXPECT_NE(r.out.find("LAST INDEX"), std::string::npos);
  EXPECT_NE(r.out.find("n2 (10.0.0.2:19001)  60          4          40/3"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("n3 (10.0.0.3:19001): holds the same entries (last index 60)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("Source of truth: n1 (10.0.0.1:19001): it holds the newest last entry"),
            std::string::npos)
      << r.out;
  auto j = ctl({"dqlite", "inspect", "-o", "json", path("n1"), path("n2"), path("n3")});
  EXPECT_EQ(j.exitCode, 0);
  const json doc = json::parse(j.out);
  ASSERT_EQ(doc["nodes"].size(), 3u);
  EXPECT_EQ(doc["problemCount"], 0);
  EXPECT_EQ(doc["nodes"][1]["lastIndex"], 60);
  EXPECT_EQ(doc["nodes"][1]["voters"].size(), 3u);
  EXPECT_EQ(doc["nodes"][2]["relation"]["kind"], "same");
  EXPECT_EQ(doc["sourceOfTruth"]["node"], "n1");
}

TEST_F(DqliteCliTest, InspectBrokenNodes) {
  broken();
  auto r = ctl({"dqlite", "inspect", path("n1"), path("n2"), path("n3")});
  EXPECT_EQ(r.exitCode, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("torn-open-segment: open-1: batch 3 at byte"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("n1 (10.0.0.1:19001): 14 entries behind (last index 46, term 4)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("n3 (10.0.0.3:19001): diverged at index 46 (term 3 here, 4 on n2)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("Source of truth: n2 (10.0.0.2:19001): it has the same last term (4) as "
                       "n1 and the highest last index (60 against 46)"),
            std::string::npos)
      << r.out;
  auto j = ctl({"dqlite", "inspect", "--output=json", path("n1"), path("n2"), path("n3")});
  EXPECT_EQ(j.exitCode, 1);
  const json doc = json::parse(j.out);
  EXPECT_EQ(doc["sourceOfTruth"]["node"], "n2");
  EXPECT_EQ(doc["problemCount"], 1);
  EXPECT_EQ(doc["nodes"][0]["problems"][0]["kind"], "torn-open-segment");
  EXPECT_EQ(doc["nodes"][2]["relation"]["kind"], "diverged");
  EXPECT_EQ(doc["nodes"][2]["relation"]["at"], 46);
}

TEST_F(DqliteCliTest, UnusableInputExitsTwoWithAReason) {
  healthy();
  writeText(path("random.tar.gz"), std::string(3000, 'r'));
  writeText(path("n3/metadata1"), std::string(20, '\1'));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {path("missing"), "does not exist"},
      {path("random.tar.gz"), "not a tar archive"},
      {path("n3"), "metadata1 has 20 bytes; a raft metadata file has exactly 32"},
  };
  for (const auto& [input, message] : cases) {
    for (const std::string verb : {"inspect", "plan", "verify"}) {
      auto r = ctl({"dqlite", verb, path("n1"), input});
      EXPECT_EQ(r.exitCode, 2) << verb << " " << input;
      EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
      EXPECT_TRUE(r.out.empty()) << r.out;
    }
  }
}

TEST_F(DqliteCliTest, InputsAreLeftUntouched) {
  broken();
  ASSERT_EQ(runCommand("/bin/tar", {"-C", path("n2"), "-czf", path("n2.tar.gz"), "."}).exitCode, 0);
  const auto before = fingerprint(dir_);
  for (const std::string verb : {"inspect", "plan", "verify"}) {
    for (const std::string format : {"text", "json"}) {
      auto r = ctl({"dqlite", verb, "-o", format, path("n1"), path("n2.tar.gz"), path("n3")});
      EXPECT_EQ(r.exitCode, verb == "plan" ? 0 : 1) << verb << r.err;
    }
  }
  EXPECT_EQ(fingerprint(dir_), before);
}

TEST_F(DqliteCliTest, PlanWarnsWhenTheSourceIsDamaged) {
  broken();
  const std::string name = "0000000000000021-0000000000000050";
  std::string bytes = readText(path("n2/" + name));
  bytes[bytes.size() - 3] ^= 0x10;
  writeText(path("n2/" + name), bytes);
  auto r = ctl({"dqlite", "plan", path("n1"), path("n2"), path("n3")});
  EXPECT_EQ(r.exitCode, 1) << r.out << r.err;
  EXPECT_NE(
      r.out.find("WARNING: n2 has damage in the files a recovery copies (crc-mismatch in " + name),
      std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("The best node without such damage is n1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("settle them before going past step 3"), std::string::npos) << r.out;
  auto instead = ctl({"dqlite", "plan", "--source", "n1", path("n1"), path("n2"), path("n3")});
  EXPECT_EQ(instead.exitCode, 1) << instead.out << instead.err;
  EXPECT_NE(instead.out.find("Source of truth: n1 (10.0.0.1:19001): chosen with --source"),
            std::string::npos)
      << instead.out;
  EXPECT_NE(instead.out.find("WARNING: n1 was chosen with --source over raft's choice n2"),
            std::string::npos)
      << instead.out;
  EXPECT_NE(instead.out.find("Copy the archive from n1 to n2, n3."), std::string::npos);
}

TEST_F(DqliteCliTest, RecoveryByThePlanThenVerify) {
  broken();
  std::map<std::string, std::string> original;
  for (const std::string node : {"n1", "n2", "n3"}) {
    for (const std::string file : {"info.yaml", "metadata1", "metadata2"}) {
      original[node + "/" + file] = readText(path(node + "/" + file));
    }
  }
  auto before = ctl({"dqlite", "verify", path("n1"), path("n2"), path("n3")});
  EXPECT_EQ(before.exitCode, 1) << before.out << before.err;
  EXPECT_NE(before.out.find("Do not start these nodes yet"), std::string::npos) << before.out;

  auto planned = ctl({"dqlite", "plan", "-o", "json", "--backend", "/SGBACKEND", "--save-to",
                      "/SGSAVE/", path("n1"), path("n2"), path("n3")});
  ASSERT_EQ(planned.exitCode, 0) << planned.out << planned.err;
  const json plan = json::parse(planned.out);
  ASSERT_EQ(plan["sourceOfTruth"]["node"], "n2");
  auto nodeOf = [](const std::string& label) { return label.substr(0, label.find(' ')); };
  for (const std::string node : {"n1", "n2", "n3"}) fs::create_directories(path("save-" + node));
  std::set<std::string> ran;
  for (const auto& step : plan["steps"]) {
    const std::string kind = step["kind"];
    if (kind == "copy") {  // scp between machines: here a copy between directories
      for (const std::string node : {"n1", "n3"}) {
        fs::copy_file(path("save-n2/backend.tar.gz"), path("save-" + node + "/backend.tar.gz"));
      }
      ran.insert(kind);
      continue;
    }
    if (kind != "backup" && kind != "archive" && kind != "replace" && kind != "collect") continue;
    ran.insert(kind);
    for (const auto& label : step["nodes"]) {
      const std::string node = nodeOf(label);
      for (const auto& command : step["commands"]) {
        std::string c = command;
        ASSERT_EQ(c.rfind("sudo ", 0), 0u) << c;
        c = c.substr(5);
        for (auto [from, to] : {std::pair<std::string, std::string>{"/SGBACKEND", path(node)},
                                {"/SGSAVE", path("save-" + node)}}) {
          for (size_t at; (at = c.find(from)) != std::string::npos;) c.replace(at, from.size(), to);
        }
        auto r = bash(c);
        ASSERT_EQ(r.exitCode, 0) << c << "\n" << r.err;
      }
    }
  }
  EXPECT_EQ(ran, (std::set<std::string>{"backup", "archive", "copy", "replace", "collect"}));
  auto listing = runCommand("/bin/tar", {"-tzf", path("save-n2/backend.tar.gz")});
  EXPECT_EQ(listing.out.find("info.yaml"), std::string::npos) << listing.out;
  EXPECT_EQ(listing.out.find("metadata"), std::string::npos) << listing.out;
  EXPECT_NE(listing.out.find("./cluster.yaml"), std::string::npos) << listing.out;
  EXPECT_TRUE(fs::exists(path("save-n3/backend-replaced/0000000000000001-0000000000000030")));
  for (const auto& [file, content] : original) {
    EXPECT_EQ(readText(path(file)), content) << file << " must stay the node's own";
  }

  auto after = ctl({"dqlite", "verify", path("n1"), path("n2"), path("n3")});
  EXPECT_EQ(after.exitCode, 0) << after.out << after.err;
  EXPECT_NE(after.out.find("Identical: every node holds entries 1-60 (last term 4) and the same 1 "
                           "snapshot. Start the node the plan named"),
            std::string::npos)
      << after.out;
  std::vector<std::string> checks = {"dqlite", "verify", "-o", "json"};
  for (const std::string node : {"n1", "n2", "n3"}) {
    for (const auto& e : fs::directory_iterator(path("save-" + node))) {
      if (e.path().filename().string().rfind("check-", 0) == 0) checks.push_back(e.path());
    }
  }
  ASSERT_EQ(checks.size(), 7u);
  auto archives = ctl(checks);
  EXPECT_EQ(archives.exitCode, 0) << archives.out << archives.err;
  EXPECT_EQ(json::parse(archives.out)["identical"], true);

  // The classic mistake: info.yaml copied along. verify refuses.
  fs::copy_file(path("n2/info.yaml"), path("n3/info.yaml"), fs::copy_options::overwrite_existing);
  auto copied = ctl({"dqlite", "verify", path("n1"), path("n2"), path("n3")});
  EXPECT_EQ(copied.exitCode, 1);
  EXPECT_NE(copied.out.find("info-yaml: info.yaml has the same ID (9373968242441247628) as n2's"),
            std::string::npos)
      << copied.out;
}

}  // namespace
}  // namespace stateguard::testing
