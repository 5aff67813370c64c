#pragma once
// Writes dqlite (canonical/raft) backend directories byte for byte as a MicroK8s node holds them:
// closed segments %016llu-%016llu and open segments open-N with batches and raft's CRC-32,
// preallocated zero tails, snapshots with their .meta, metadata1/2, cluster.yaml and info.yaml.
// It has its own encoder and its own bit-by-bit CRC, independent of cli/dqlite/, so the tests
// check the reader against the format and not against itself.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace stateguard::testing::dqlite {

/// One log entry: term, type (1 command, 2 barrier, 3 configuration change) and payload.
struct Entry {
  uint64_t term = 1;
  uint8_t type = 1;
  std::string payload;
};

/// A cluster member. `role` uses cluster.yaml's numbering (0 voter, 1 stand-by, 2 spare); encoded
/// raft configurations use raft's (0 stand-by, 1 voter, 2 spare), the writer converts.
struct Member {
  uint64_t id = 0;
  std::string address;
  int role = 0;
};

/// raft's CRC-32 computed bit by bit (MSB first, polynomial 0x04C11DB7, init, no final XOR).
uint32_t bitwiseCrc32(std::string_view data, uint32_t init = 0);

std::string u64le(uint64_t v);
std::string u32le(uint32_t v);

/// A batch: u32 header CRC, u32 data CRC, u64 count, 16 bytes per entry, payloads padded to 8.
std::string encodeBatch(const std::vector<Entry>& entries);
/// u64 format 1, then the batches.
std::string segmentBytes(const std::vector<std::vector<Entry>>& batches);
/// u8 format 1, u64 count, per member u64 id, address + NUL, u8 raft role; padded to 8.
std::string encodeConfiguration(const std::vector<Member>& members);
/// u64 format 1, u64 CRC, u64 configuration index, u64 length, configuration.
std::string snapshotMetaBytes(uint64_t confIndex, const std::string& configuration);
/// u64 format 1, version, term, voted for.
std::string metadataBytes(uint64_t version, uint64_t term, uint64_t votedFor);
std::string clusterYaml(const std::vector<Member>& members);
std::string infoYaml(const Member& self);

/// Writes one node's backend directory file by file.
class NodeWriter {
 public:
  explicit NodeWriter(std::string dir);  ///< creates the directory

  const std::string& dir() const { return dir_; }
  /// A closed segment named first..first+entries-1; returns the file name.
  std::string closedSegment(uint64_t first, const std::vector<std::vector<Entry>>& batches);
  /// open-N holding the batches, then zeros up to `preallocate` bytes; returns the file name.
  std::string openSegment(uint64_t counter, const std::vector<std::vector<Entry>>& batches,
                          size_t preallocate = 32 * 1024);
  void snapshot(uint64_t term, uint64_t index, uint64_t timestamp, uint64_t confIndex,
                const std::vector<Member>& members, const std::string& data);
  void metadata(int n, uint64_t version, uint64_t term, uint64_t votedFor);
  void cluster(const std::vector<Member>& members);
  void info(const Member& self);
  void raw(const std::string& name, const std::string& bytes);
  std::string read(const std::string& name) const;

 private:
  std::string dir_;
};

/// The usual shape of a node: log entries 1..N, cut into closed segments at `closedEnds`, the
/// rest in open-1 (plus an empty preallocated open-2), an optional snapshot, both metadata
/// files, cluster.yaml and info.yaml.
struct NodeLayout {
  std::vector<Entry> log;            ///< entry i + 1
  std::vector<uint64_t> closedEnds;  ///< last index of each closed segment
  size_t batchSize = 3;              ///< entries per batch
  uint64_t snapshotIndex = 0;        ///< 0: no snapshot
  std::string snapshotData = "sqlite snapshot bytes";
  std::vector<Member> members;
  Member self;
  uint64_t metadataVersion = 7;  ///< metadata1 gets it (odd), metadata2 the one below
  uint64_t metadataTerm = 0;     ///< 0: the last entry's term
};

void writeNode(const std::string& dir, const NodeLayout& layout);

/// Three voters on 10.0.0.1-3:19001 with realistic 64-bit IDs.
std::vector<Member> threeMembers();
/// A log of n entries: entry 1 is the bootstrap configuration (type 3), the others commands with
/// payloads of 8 to 64 bytes (multiples of 8, as raft requires) that depend on `seed` and index.
std::vector<Entry> makeLog(size_t n, const std::function<uint64_t(uint64_t)>& termOf,
                           const std::vector<Member>& members, uint64_t seed = 1);

}  // namespace stateguard::testing::dqlite
