// stateguardctl dqlite's reader and recovery logic on backend directories written byte for byte
// by tests/support/dqlite_writer (closed and open segments with batches and raft's CRC, zero
// preallocated tails, snapshots with .meta, metadata1/2, cluster.yaml, info.yaml): healthy nodes
// with different segment boundaries, a node behind, a torn open segment, a diverged term, a
// flipped byte, conflicting metadata, holes, archives, and raft's CRC against a bit-by-bit one.

#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <random>
#include <sstream>

#include "cli/dqlite/node_dir.h"
#include "cli/dqlite/raft_crc.h"
#include "cli/dqlite/recovery.h"
#include "cli/dqlite/report.h"
#include "cli/dqlite/tarball.h"
#include "tests/support/dqlite_writer.h"
#include "tests/support/process.h"

namespace stateguard::testing {
namespace {

namespace dq = stateguard::cli::dqlite;
using dqlite::Entry;
using dqlite::Member;
using dqlite::NodeLayout;
using dqlite::NodeWriter;

/// Entry 1 term 1 (bootstrap), 2-20 term 2, 21-45 term 3, 46 on term 4.
uint64_t standardTerm(uint64_t index) {
  return index == 1 ? 1 : index <= 20 ? 2 : index <= 45 ? 3 : 4;
}

/// A temp directory per test, with helpers to write and read node directories.
class DqliteTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = makeTempDir("sg-dqlite"); }
  void TearDown() override { removeTree(dir_); }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  /// A healthy node: `n` entries, a snapshot at 40, closed segments ending at `closedEnds`.
  NodeLayout layout(std::vector<uint64_t> closedEnds, size_t self, size_t n = 60,
                    uint64_t seed = 1) {
    NodeLayout l;
    l.members = dqlite::threeMembers();
    l.log = dqlite::makeLog(n, standardTerm, l.members, seed);
    l.closedEnds = std::move(closedEnds);
    l.snapshotIndex = 40;
    l.self = l.members[self];
    return l;
  }

  dq::Node read(const std::string& p) {
    auto node = dq::readNode(p);
    EXPECT_TRUE(node.ok()) << (node.ok() ? "" : node.error());
    return node.ok() ? std::move(node).value() : dq::Node{};
  }

  static std::string kinds(const dq::Node& n) {
    std::string out;
    for (const auto& p : n.problems) out += p.kind + "(" + p.file + ") ";
    return out;
  }

  std::string dir_;
};

TEST(RaftCrc, KnownAnswerAndBitwiseAgreement) {
  // The CRC-32/MPEG-2 style register without its init and xorout: raft's variant.
  EXPECT_EQ(dqlite::bitwiseCrc32("123456789"), 0x89A1897Fu);
  EXPECT_EQ(dq::raftCrc32("123456789"), 0x89A1897Fu);
  EXPECT_NE(dq::raftCrc32("123456789"),
            static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>("123456789"), 9)))
      << "must not be zlib's reflected crc32";
  EXPECT_EQ(dq::raftCrc32(""), 0u);
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::string data(rng() % 300, '\0');
    for (auto& c : data) c = static_cast<char>(rng());
    const size_t cut = data.empty() ? 0 : rng() % data.size();
    const uint32_t whole = dqlite::bitwiseCrc32(data);
    ASSERT_EQ(dq::raftCrc32(data), whole);
    ASSERT_EQ(dq::raftCrc32(std::string_view(data).substr(cut),
                            dq::raftCrc32(std::string_view(data).substr(0, cut))),
              whole)
        << "continuing from a partial CRC must equal one pass";
  }
}

TEST_F(DqliteTest, HealthyNodesWithDifferentSegmentBoundariesAreIdentical) {
  dqlite::writeNode(path("n1"), layout({10, 25, 40, 55}, 0));
  dqlite::writeNode(path("n2"), layout({20, 50}, 1));
  dqlite::writeNode(path("n3"), layout({30}, 2));
  std::vector<dq::Node> nodes = {read(path("n1")), read(path("n2")), read(path("n3"))};
  for (const auto& n : nodes) {
    EXPECT_TRUE(n.problems.empty()) << n.name << ": " << kinds(n);
    EXPECT_EQ(n.lastIndex, 60u);
    EXPECT_EQ(n.lastTerm, 4u);
    ASSERT_EQ(n.log.size(), 60u);
    EXPECT_EQ(n.log.front().index, 1u);
    EXPECT_EQ(n.log.front().type, 3);
    ASSERT_NE(n.latestSnapshot(), nullptr);
    EXPECT_EQ(n.latestSnapshot()->index, 40u);
    EXPECT_EQ(n.latestSnapshot()->term, 3u);
    ASSERT_TRUE(n.configuration.readable) << n.configuration.error;
    EXPECT_EQ(n.configuration.voters().size(), 3u);
    ASSERT_TRUE(n.info.has_value());
    EXPECT_EQ(n.cluster.size(), 3u);
    ASSERT_NE(n.currentMetadata(), nullptr);
    EXPECT_EQ(n.currentMetadata()->version, 7u);
    EXPECT_EQ(n.currentMetadata()->term, 4u);
  }
  EXPECT_EQ(nodes[0].segments.size(), 6u);  // 4 closed, open-1, open-2
  EXPECT_EQ(nodes[2].segments.size(), 3u);
  EXPECT_EQ(nodes[2].segments.back().state, "never written");
  const dq::LogEntry* e = nodes[0].entryAt(58);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(nodes[0].segments[e->segment].name, "open-1");
  EXPECT_EQ(nodes[0].label(), "n1 (10.0.0.1:19001)");
  EXPECT_TRUE(dq::compareNodes(nodes, 0).empty());
  const dq::Choice c = dq::chooseSource(nodes);
  EXPECT_EQ(c.source, 0u);
  EXPECT_EQ(c.tied.size(), 2u);
  EXPECT_NE(c.reason.find("newest last entry (index 60, term 4)"), std::string::npos) << c.reason;
  EXPECT_TRUE(c.warning.empty());
}

TEST_F(DqliteTest, NodeBehindIsNamedAndMissingRangesListed) {
  dqlite::writeNode(path("n1"), layout({10, 25, 40}, 0, 50));
  dqlite::writeNode(path("n2"), layout({20, 50}, 1));
  std::vector<dq::Node> nodes = {read(path("n1")), read(path("n2"))};
  EXPECT_TRUE(nodes[0].problems.empty()) << kinds(nodes[0]);
  const dq::Choice c = dq::chooseSource(nodes);
  EXPECT_EQ(c.source, 1u);
  EXPECT_NE(c.reason.find("same last term (4) as n1 and the highest last index (60 against 50)"),
            std::string::npos)
      << c.reason;
  const dq::Relation r = dq::relate(nodes[1], nodes[0]);
  EXPECT_EQ(r.kind, "behind");
  EXPECT_EQ(r.behindBy, 10u);
  const auto diffs = dq::compareNodes(nodes, 1);
  std::string all;
  for (const auto& d : diffs) all += d.kind + ": " + d.message + "\n";
  EXPECT_NE(all.find("missing: entries 51-60 of n2 are missing here"), std::string::npos) << all;
  EXPECT_NE(all.find("last-entry"), std::string::npos) << all;
}

TEST_F(DqliteTest, HigherLastTermWinsOverLongerLog) {
  // n1: 50 entries ending in term 4. n2: the same first 45, then 46-60 written in term 3 by a
  // leader that lost its place: longer, but an older last term.
  NodeLayout a = layout({25, 40}, 0, 50);
  NodeLayout b = layout({20, 50}, 1, 60);
  auto other = dqlite::makeLog(
      60, [](uint64_t i) { return i <= 45 ? standardTerm(i) : 3; }, b.members, 2);
  for (size_t i = 45; i < 60; ++i) b.log[i] = other[i];
  dqlite::writeNode(path("n1"), a);
  dqlite::writeNode(path("n2"), b);
  std::vector<dq::Node> nodes = {read(path("n1")), read(path("n2"))};
  EXPECT_EQ(nodes[1].lastIndex, 60u);
  EXPECT_EQ(nodes[1].lastTerm, 3u);
  const dq::Choice c = dq::chooseSource(nodes);
  EXPECT_EQ(c.source, 0u);
  EXPECT_NE(c.reason.find("highest last term (4"), std::string::npos) << c.reason;
  const dq::Relation r = dq::relate(nodes[0], nodes[1]);
  EXPECT_EQ(r.kind, "diverged");
  EXPECT_EQ(r.at, 46u);
  EXPECT_EQ(r.termHere, 3u);
  EXPECT_EQ(r.termSource, 4u);
  const auto diffs = dq::compareNodes(nodes, 0);
  std::string all;
  for (const auto& d : diffs) all += d.kind + ": " + d.message + "\n";
  EXPECT_NE(all.find("entries: 5 entries differ from n1's, the first at index 46 (term 3 here, 4 "
                     "on n1)"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("extra: holds entries 51-60"), std::string::npos) << all;
}

TEST_F(DqliteTest, SameIndexDifferentTermIsDiverged) {
  NodeLayout a = layout({20, 50}, 0);
  NodeLayout b = layout({30}, 1);
  auto other = dqlite::makeLog(
      60, [](uint64_t i) { return i < 58 ? standardTerm(i) : 5; }, b.members, 3);
  for (size_t i = 57; i < 60; ++i) b.log[i] = other[i];
  dqlite::writeNode(path("n1"), a);
  dqlite::writeNode(path("n2"), b);
  std::vector<dq::Node> nodes = {read(path("n1")), read(path("n2"))};
  const dq::Choice c = dq::chooseSource(nodes);
  EXPECT_EQ(c.source, 1u) << "term 5 beats term 4 at the same last index";
  const dq::Relation r = dq::relate(nodes[1], nodes[0]);
  EXPECT_EQ(r.kind, "diverged");
  EXPECT_EQ(r.at, 58u);
  EXPECT_NE(r.summary.find("diverged at index 58 (term 4 here, 5 on n2)"), std::string::npos)
      << r.summary;
}

TEST_F(DqliteTest, TornOpenSegmentCountsOnlyCompleteBatches) {
  NodeLayout l = layout({30}, 0, 48);
  dqlite::writeNode(path("n1"), l);
  NodeWriter w(path("n1"));
  // open-1: batches 31-33, ..., 43-45, then batch 46-48 cut in the middle of its data, the rest
  // of the preallocated file still zero.
  std::vector<std::vector<Entry>> good;
  for (size_t i = 30; i < 45; i += 3) good.push_back({l.log[i], l.log[i + 1], l.log[i + 2]});
  std::string bytes = dqlite::segmentBytes(good);
  const std::string torn = dqlite::encodeBatch({l.log[45], l.log[46], l.log[47]});
  bytes += torn.substr(0, torn.size() - 20);
  bytes.resize(32 * 1024, '\0');
  w.raw("open-1", bytes);
  dq::Node n = read(path("n1"));
  ASSERT_EQ(n.problems.size(), 1u) << kinds(n);
  EXPECT_EQ(n.problems[0].kind, "torn-open-segment");
  EXPECT_EQ(n.problems[0].file, "open-1");
  EXPECT_FALSE(n.problems[0].inCopiedData);
  EXPECT_NE(n.problems[0].message.find("batch 6 at byte"), std::string::npos)
      << n.problems[0].message;
  EXPECT_NE(n.problems[0].message.find("entries from 46 on"), std::string::npos);
  EXPECT_EQ(n.lastIndex, 45u);
  EXPECT_EQ(n.lastTerm, 3u);
  EXPECT_EQ(n.segments[1].state, "torn tail");
  EXPECT_EQ(n.segments[1].batches, 5u);

  // The same batch cut off by the end of the file (no preallocated tail).
  w.raw("open-1", dqlite::segmentBytes(good) + torn.substr(0, 30));
  n = read(path("n1"));
  ASSERT_EQ(n.problems.size(), 1u) << kinds(n);
  EXPECT_NE(n.problems[0].message.find("the file ends inside its entry headers"), std::string::npos)
      << n.problems[0].message;
  EXPECT_EQ(n.lastIndex, 45u);
}

TEST_F(DqliteTest, OpenSegmentsFollowEachOtherByCounter) {
  NodeLayout l = layout({30}, 0);
  dqlite::writeNode(path("n1"), l);
  NodeWriter w(path("n1"));
  std::filesystem::remove(path("n1/open-1"));
  std::filesystem::remove(path("n1/open-2"));
  std::vector<std::vector<Entry>> first, second;
  for (size_t i = 30; i < 45; i += 3) first.push_back({l.log[i], l.log[i + 1], l.log[i + 2]});
  for (size_t i = 45; i < 60; i += 5) {
    second.push_back({l.log[i], l.log[i + 1], l.log[i + 2], l.log[i + 3], l.log[i + 4]});
  }
  w.openSegment(9, first);
  w.openSegment(10, second);  // sorts before open-9 by name, after it by counter
  w.openSegment(11, {});
  const dq::Node n = read(path("n1"));
  EXPECT_TRUE(n.problems.empty()) << kinds(n);
  EXPECT_EQ(n.lastIndex, 60u);
  EXPECT_EQ(n.segments[n.entryAt(40)->segment].name, "open-9");
  EXPECT_EQ(n.segments[n.entryAt(50)->segment].name, "open-10");
  EXPECT_EQ(n.entryAt(50)->checksum, read(path("n1")).entryAt(50)->checksum);
}

TEST_F(DqliteTest, SegmentsRaftCannotLoad) {
  dqlite::writeNode(path("n1"), layout({30}, 0));
  NodeWriter w(path("n1"));
  w.raw("open-2", std::string(4, '\0'));
  dq::Node n = read(path("n1"));
  ASSERT_EQ(n.problems.size(), 1u) << kinds(n);
  EXPECT_EQ(n.problems[0].kind, "open-segment");
  EXPECT_NE(n.problems[0].message.find("file has only 4 bytes"), std::string::npos);
  std::string data(4096, '\0');
  data[100] = 'x';
  w.raw("open-2", data);
  n = read(path("n1"));
  ASSERT_EQ(n.problems.size(), 1u) << kinds(n);
  EXPECT_EQ(n.problems[0].kind, "open-segment");
  w.raw("open-2", std::string(4096, '\0'));
  w.raw("0000000000000061-0000000000000070", std::string(4096, '\0'));
  n = read(path("n1"));
  ASSERT_EQ(n.problems.size(), 2u) << kinds(n);
  EXPECT_EQ(n.problems[0].kind, "zeroed-segment");
  EXPECT_NE(n.problems[0].message.find("the file is all zeros"), std::string::npos);
  EXPECT_EQ(n.problems[1].kind, "gap") << "open-1 now counts from 71";
}

TEST_F(DqliteTest, FlippedPayloadByteInClosedSegmentIsCrcMismatch) {
  dqlite::writeNode(path("n1"), layout({10, 25, 40, 55}, 0));
  dqlite::writeNode(path("n2"), layout({20, 50}, 1, 58));
  NodeWriter w(path("n1"));
  const std::string name = "0000000000000011-0000000000000025";
  std::string bytes = w.read(name);
  bytes[bytes.size() - 5] ^= 0x20;  // in the payload of the last batch (entries 23-25)
  w.raw(name, bytes);
  std::vector<dq::Node> nodes = {read(path("n1")), read(path("n2"))};
  const dq::Node& n = nodes[0];
  ASSERT_EQ(n.problems.size(), 1u) << kinds(n);
  EXPECT_EQ(n.problems[0].kind, "crc-mismatch");
  EXPECT_EQ(n.problems[0].file, name);
  EXPECT_TRUE(n.problems[0].inCopiedData);
  EXPECT_NE(n.problems[0].message.find("(entries 23-25): its data checksum does not match"),
            std::string::npos)
      << n.problems[0].message;
  EXPECT_EQ(n.lastIndex, 60u) << "the headers are intact: index and term still count";
  EXPECT_TRUE(n.entryAt(24)->damaged);
  EXPECT_FALSE(n.entryAt(22)->damaged);
  const dq::Choice c = dq::chooseSource(nodes);
  EXPECT_EQ(c.source, 0u);
  ASSERT_TRUE(c.fallback.has_value());
  EXPECT_EQ(*c.fallback, 1u);
  EXPECT_NE(c.warning.find("n1 has damage in the files a recovery copies (crc-mismatch in " + name),
            std::string::npos)
      << c.warning;
  EXPECT_NE(c.warning.find("The best node without such damage is n2 (10.0.0.2:19001)"),
            std::string::npos)
      << c.warning;
  EXPECT_NE(c.warning.find("run plan again with --source n2"), std::string::npos) << c.warning;

  // plan --source n2: copy from the undamaged node, and say what that gives up.
  dq::PlanOptions options;
  options.source = 1;
  const dq::Plan plan = dq::makePlan(nodes, options);
  EXPECT_EQ(plan.choice.source, 1u);
  EXPECT_NE(plan.choice.reason.find("chosen with --source. By raft's rule the source would be n1"),
            std::string::npos)
      << plan.choice.reason;
  ASSERT_EQ(plan.warnings.size(), 1u);
  EXPECT_NE(plan.warnings[0].find("n1 holds entries 59-60 (up to term 4) that n2 does not have: "
                                  "they will be replaced; 1 entry in common differs only where "
                                  "one copy fails its checksum"),
            std::string::npos)
      << plan.warnings[0];
  EXPECT_EQ(plan.relations[0].kind, "ahead");
  EXPECT_EQ(plan.steps[3].commands[0].find("sudo tar -C"), 0u);
  EXPECT_NE(plan.steps[4].title.find("Copy the archive from n2 to n1."), std::string::npos);
}

TEST_F(DqliteTest, FlippedHeaderByteStopsTheSegmentAndLeavesAHole) {
  dqlite::writeNode(path("n1"), layout({10, 25, 40, 55}, 0));
  NodeWriter w(path("n1"));
  const std::string name = "0000000000000041-0000000000000055";
  std::string bytes = w.read(name);
  bytes[8 + 8 + 8 + 16 + 2] ^= 0x01;  // the term of entry 42 in the first batch's header
  w.raw(name, bytes);
  const dq::Node n = read(path("n1"));
  ASSERT_GE(n.problems.size(), 2u) << kinds(n);
  EXPECT_EQ(n.problems[0].kind, "crc-mismatch");
  EXPECT_NE(n.problems[0].message.find("header checksum does not match"), std::string::npos);
  EXPECT_NE(n.problems[0].message.find("entries 41-55 are missing here"), std::string::npos)
      << n.problems[0].message;
  bool gap = false;
  for (const auto& p : n.problems) {
    gap = gap || (p.kind == "gap" && p.message.find("entries 41-55 are missing") == 0);
  }
  EXPECT_TRUE(gap) << kinds(n);
}

TEST_F(DqliteTest, ConflictingMetadataIsReported) {
  NodeLayout l = layout({30}, 0);
  dqlite::writeNode(path("n1"), l);
  NodeWriter w(path("n1"));
  w.metadata(1, 8, 4, l.self.id);
  w.metadata(2, 8, 5, l.self.id);
  const dq::Node n = read(path("n1"));
  ASSERT_EQ(n.problems.size(), 1u) << kinds(n);
  EXPECT_EQ(n.problems[0].kind, "metadata-conflict");
  EXPECT_FALSE(n.problems[0].inCopiedData);
  EXPECT_NE(n.problems[0].message.find("both at version 8 (term 4 and 5)"), std::string::npos)
      << n.problems[0].message;
  const dq::Plan plan = dq::makePlan({n}, dq::PlanOptions{});
  ASSERT_FALSE(plan.warnings.empty());
  EXPECT_NE(plan.warnings[0].find("keeps its own metadata files"), std::string::npos);
  ASSERT_EQ(plan.warnings.size(), 2u);
  EXPECT_NE(plan.warnings[1].find("Only n1 was given"), std::string::npos) << plan.warnings[1];
  EXPECT_NE(plan.steps.front().title.find("until step 4 "), std::string::npos)
      << plan.steps.front().title;
}

TEST_F(DqliteTest, HoleAboveTheSnapshotIsAGapBelowItANote) {
  dqlite::writeNode(path("n1"), layout({10, 25, 40, 50, 55}, 0));
  std::filesystem::remove(path("n1/0000000000000011-0000000000000025"));
  dq::Node n = read(path("n1"));
  EXPECT_TRUE(n.problems.empty()) << kinds(n);
  bool noted = false;
  for (const auto& note : n.notes) noted = noted || note.find("entries 11-25") == 0;
  EXPECT_TRUE(noted) << "the snapshot at 40 covers the hole";
  std::filesystem::remove(path("n1/0000000000000041-0000000000000050"));
  n = read(path("n1"));
  ASSERT_EQ(n.problems.size(), 1u) << kinds(n);
  EXPECT_EQ(n.problems[0].kind, "gap");
  EXPECT_NE(n.problems[0].message.find("entries 41-50 are missing"), std::string::npos);
  EXPECT_TRUE(n.problems[0].inCopiedData);
}

TEST_F(DqliteTest, EntryCountMustMatchTheSegmentName) {
  NodeLayout l = layout({30}, 0);
  dqlite::writeNode(path("n1"), l);
  NodeWriter w(path("n1"));
  std::filesystem::remove(path("n1/0000000000000001-0000000000000030"));
  std::vector<std::vector<Entry>> batches;
  for (size_t i = 0; i < 29; ++i) batches.push_back({l.log[i]});
  w.raw("0000000000000001-0000000000000030", dqlite::segmentBytes(batches));
  const dq::Node n = read(path("n1"));
  ASSERT_FALSE(n.problems.empty());
  EXPECT_EQ(n.problems[0].kind, "entry-count");
  EXPECT_NE(n.problems[0].message.find("found 29 entries (expected 30)"), std::string::npos);
}

TEST_F(DqliteTest, LogEmptyAfterSnapshotTakesIndexAndTermFromIt) {
  NodeLayout l = layout({}, 0, 0);
  NodeWriter w(path("n1"));
  w.snapshot(6, 900, 17, 850, l.members, "data");
  w.openSegment(3, {});
  w.metadata(1, 3, 6, l.self.id);
  w.metadata(2, 2, 6, l.self.id);
  const dq::Node n = read(path("n1"));
  EXPECT_TRUE(n.problems.empty()) << kinds(n);
  EXPECT_EQ(n.lastIndex, 900u);
  EXPECT_EQ(n.lastTerm, 6u);
  EXPECT_EQ(n.configuration.source, "snapshot-6-900-17.meta");
}

TEST_F(DqliteTest, ConfigurationChangeInTheLogIsNewerThanTheSnapshot) {
  NodeLayout l = layout({30}, 0);
  std::vector<Member> two = {l.members[0], l.members[1]};
  two[1].role = 1;  // stand-by
  l.log[49].type = 3;
  l.log[49].payload = dqlite::encodeConfiguration(two);
  dqlite::writeNode(path("n1"), l);
  const dq::Node n = read(path("n1"));
  EXPECT_TRUE(n.problems.empty()) << kinds(n);
  EXPECT_EQ(n.configuration.source, "log entry 50");
  ASSERT_EQ(n.configuration.servers.size(), 2u);
  EXPECT_EQ(n.configuration.servers[1].role, dq::Role::kStandBy);
  ASSERT_EQ(n.configuration.voters().size(), 1u);
  EXPECT_EQ(n.configuration.voters()[0].address, "10.0.0.1:19001");
  bool noted = false;
  for (const auto& note : n.notes) noted = noted || note.find("cluster.yaml lists other") == 0;
  EXPECT_TRUE(noted);
}

TEST_F(DqliteTest, UnreadableConfigurationIsNotedButDoesNotStopTheComparison) {
  NodeLayout l = layout({30}, 0);
  dqlite::writeNode(path("n1"), l);
  // A fork's encoding with a joint-consensus phase after the format byte; the CRC is right.
  std::string fork(1, '\1');
  fork += dqlite::u64le(0) + dqlite::u64le(3);
  for (const auto& m : l.members) fork += dqlite::u64le(m.id) + m.address + '\0' + '\1';
  fork.resize((fork.size() + 7) / 8 * 8, '\0');
  NodeWriter w(path("n1"));
  w.raw("snapshot-3-40-1700000000123.meta", dqlite::snapshotMetaBytes(1, fork));
  const dq::Node n = read(path("n1"));
  EXPECT_TRUE(n.problems.empty()) << kinds(n);
  EXPECT_TRUE(n.configuration.present);
  EXPECT_FALSE(n.configuration.readable);
  EXPECT_EQ(n.lastIndex, 60u);
  EXPECT_EQ(n.lastTerm, 4u);
  bool noted = false;
  for (const auto& note : n.notes)
    noted = noted || note.find("could not be decoded") != std::string::npos;
  EXPECT_TRUE(noted);
  std::ostringstream text;
  dq::printInspect(text, {n}, dq::chooseSource({n}));
  EXPECT_NE(text.str().find("? (unreadable)"), std::string::npos) << text.str();
}

TEST_F(DqliteTest, DamagedSnapshotMetaIsACrcMismatch) {
  dqlite::writeNode(path("n1"), layout({30}, 0));
  NodeWriter w(path("n1"));
  std::string meta = w.read("snapshot-3-40-1700000000123.meta");
  meta[40] ^= 0x04;
  w.raw("snapshot-3-40-1700000000123.meta", meta);
  const dq::Node n = read(path("n1"));
  ASSERT_EQ(n.problems.size(), 1u) << kinds(n);
  EXPECT_EQ(n.problems[0].kind, "crc-mismatch");
  EXPECT_EQ(n.problems[0].file, "snapshot-3-40-1700000000123.meta");
}

TEST_F(DqliteTest, PaddedPayloadsOfAnyLengthAreRead) {
  NodeWriter w(path("n1"));
  w.closedSegment(1, {{{1, 1, "thirteen byte"}, {1, 1, "x"}}, {{2, 1, std::string(16, 'q')}}});
  w.metadata(1, 1, 2, 1);
  const dq::Node n = read(path("n1"));
  EXPECT_TRUE(n.problems.empty()) << kinds(n);
  EXPECT_EQ(n.lastIndex, 3u);
  EXPECT_EQ(n.lastTerm, 2u);
  EXPECT_EQ(n.entryAt(1)->length, 13u);
}

TEST_F(DqliteTest, ArchivesReadLikeTheDirectory) {
  dqlite::writeNode(path("parent/n1"), layout({10, 25, 40, 55}, 0));
  const std::string tar = "/bin/tar";
  ASSERT_EQ(runCommand(tar, {"-C", path("parent/n1"), "-czf", path("n1.tar.gz"), "."}).exitCode, 0);
  ASSERT_EQ(runCommand(tar, {"-C", path("parent"), "-czf", path("deep.tgz"), "n1"}).exitCode, 0);
  ASSERT_EQ(runCommand(tar, {"-C", path("parent/n1"), "-cf", path("plain.tar"), "."}).exitCode, 0);
  const dq::Node dir = read(path("parent/n1"));
  for (const char* archive : {"n1.tar.gz", "deep.tgz", "plain.tar"}) {
    SCOPED_TRACE(archive);
    const dq::Node n = read(path(archive));
    EXPECT_TRUE(n.tarball);
    EXPECT_TRUE(n.problems.empty()) << kinds(n);
    EXPECT_EQ(n.lastIndex, dir.lastIndex);
    EXPECT_EQ(n.lastTerm, dir.lastTerm);
    ASSERT_EQ(n.log.size(), dir.log.size());
    for (size_t i = 0; i < n.log.size(); ++i) {
      ASSERT_EQ(n.log[i].checksum, dir.log[i].checksum);
      ASSERT_EQ(n.segments[n.log[i].segment].name, dir.segments[dir.log[i].segment].name);
    }
    EXPECT_EQ(n.latestSnapshot()->dataSha256, dir.latestSnapshot()->dataSha256);
    EXPECT_EQ(n.info->address, dir.info->address);
    for (const auto& d : dq::compareNodes({dir, n}, 0)) {
      EXPECT_EQ(d.kind, "info-yaml") << "only the identity is shared: " << d.message;
    }
  }
  EXPECT_EQ(read(path("n1.tar.gz")).name, "n1");
  EXPECT_EQ(read(path("deep.tgz")).prefix, "n1");

  // Two nodes in one archive, and things that are not archives.
  dqlite::writeNode(path("parent/n2"), layout({30}, 1));
  ASSERT_EQ(
      runCommand(tar, {"-C", path("parent"), "-czf", path("two.tar.gz"), "n1", "n2"}).exitCode, 0);
  auto two = dq::readNode(path("two.tar.gz"));
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.error().find("several directories (n1/, n2/)"), std::string::npos) << two.error();
  writeText(path("junk.tar.gz"), std::string(2000, 'j'));
  auto junk = dq::readNode(path("junk.tar.gz"));
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.error().find("not a tar archive"), std::string::npos) << junk.error();
  std::string gz = readText(path("n1.tar.gz"));
  writeText(path("cut.tar.gz"), gz.substr(0, gz.size() / 2));
  auto cut = dq::readNode(path("cut.tar.gz"));
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.error().find("truncated"), std::string::npos) << cut.error();
}

TEST_F(DqliteTest, UnusableInputIsAnError) {
  auto missing = dq::readNode(path("nope"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("does not exist"), std::string::npos);
  std::filesystem::create_directories(path("empty"));
  writeText(path("empty/notes.txt"), "hello");
  auto empty = dq::readNode(path("empty"));
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().find("holds no dqlite files"), std::string::npos);
  dqlite::writeNode(path("n1"), layout({30}, 0));
  writeText(path("n1/metadata1"), std::string(20, '\1'));
  auto truncated = dq::readNode(path("n1"));
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.error().find("metadata1 has 20 bytes; a raft metadata file has exactly 32"),
            std::string::npos)
      << truncated.error();
}

TEST(DqliteConfiguration, RolesUseRaftNumbering) {
  std::vector<Member> members = {{1, "a:1", 0}, {2, "b:1", 1}, {3, "c:1", 2}};
  auto servers = dq::decodeConfiguration(dqlite::encodeConfiguration(members));
  ASSERT_TRUE(servers.ok()) << servers.error();
  ASSERT_EQ(servers->size(), 3u);
  EXPECT_EQ((*servers)[0].role, dq::Role::kVoter);
  EXPECT_EQ((*servers)[1].role, dq::Role::kStandBy);
  EXPECT_EQ((*servers)[2].role, dq::Role::kSpare);
  EXPECT_EQ(dq::roleFromRaft(0), dq::Role::kStandBy);
  EXPECT_EQ(dq::roleFromDqlite(0), dq::Role::kVoter);
  EXPECT_FALSE(dq::decodeConfiguration("").ok());
  EXPECT_FALSE(dq::decodeConfiguration(std::string("\2") + dqlite::u64le(1)).ok());
  std::string huge = std::string("\1") + dqlite::u64le(1000000) + std::string(32, 'x');
  EXPECT_FALSE(dq::decodeConfiguration(huge).ok());
}

TEST_F(DqliteTest, PlanCopiesFromTheSourceAndNamesTheOthers) {
  NodeLayout a = layout({25, 40}, 0, 50);
  NodeLayout b = layout({20, 50}, 1, 60);
  NodeLayout c = layout({30}, 2, 60);
  auto other = dqlite::makeLog(
      60, [](uint64_t i) { return i <= 45 ? standardTerm(i) : 3; }, c.members, 2);
  for (size_t i = 45; i < 60; ++i) c.log[i] = other[i];
  dqlite::writeNode(path("n1"), a);
  dqlite::writeNode(path("n2"), b);
  dqlite::writeNode(path("n3"), c);
  std::vector<dq::Node> nodes = {read(path("n1")), read(path("n2")), read(path("n3"))};
  const dq::Plan plan = dq::makePlan(nodes, dq::PlanOptions{});
  EXPECT_EQ(plan.choice.source, 1u);
  EXPECT_TRUE(plan.warnings.empty());
  std::ostringstream text;
  dq::printPlan(text, nodes, plan, dq::PlanOptions{});
  const std::string s = text.str();
  EXPECT_NE(s.find("Source of truth: n2 (10.0.0.2:19001)"), std::string::npos) << s;
  EXPECT_NE(s.find("n1 (10.0.0.1:19001): 10 entries behind"), std::string::npos) << s;
  EXPECT_NE(s.find("n3 (10.0.0.3:19001): diverged at index 46 (term 3 here, 4 on n2)"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("sudo tar -C /var/snap/microk8s/current/var/kubernetes/backend -czf "
                   "/root/backend.tar.gz --exclude=info.yaml --exclude=metadata1 "
                   "--exclude=metadata2"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("scp /root/backend.tar.gz 10.0.0.1:/root/backend.tar.gz"), std::string::npos);
  const size_t startSource = s.find("Start n2 first");
  const size_t startOthers = s.find("Then start n1, n3");
  ASSERT_NE(startSource, std::string::npos) << s;
  ASSERT_NE(startOthers, std::string::npos) << s;
  EXPECT_LT(startSource, startOthers);
}

TEST_F(DqliteTest, VerifyFindsCopiedInfoYamlAndSnapshotDifferences) {
  NodeLayout a = layout({20, 50}, 0);
  NodeLayout b = layout({30}, 1);
  b.snapshotData = "other snapshot bytes";
  b.self = a.self;  // info.yaml copied from n1
  dqlite::writeNode(path("n1"), a);
  dqlite::writeNode(path("n2"), b);
  const auto diffs = dq::compareNodes({read(path("n1")), read(path("n2"))}, 0);
  std::string all;
  for (const auto& d : diffs) all += d.kind + ": " + d.message + "\n";
  EXPECT_NE(all.find("snapshot: snapshot at index 40, term 3: the data differs"), std::string::npos)
      << all;
  EXPECT_NE(all.find("info-yaml: info.yaml has the same ID (3297041220608546238) as n1's"),
            std::string::npos)
      << all;
}

TEST_F(DqliteTest, SameDirectoryNamesAreDisambiguated) {
  dqlite::writeNode(path("node1/backend"), layout({30}, 0));
  dqlite::writeNode(path("node2/backend"), layout({30}, 1));
  std::vector<dq::Node> nodes = {read(path("node1/backend")), read(path("node2/backend/"))};
  EXPECT_EQ(nodes[0].name, "backend");
  dq::disambiguateNames(nodes);
  EXPECT_EQ(nodes[0].name, "node1/backend");
  EXPECT_EQ(nodes[1].name, "node2/backend");
}

}  // namespace
}  // namespace stateguard::testing
