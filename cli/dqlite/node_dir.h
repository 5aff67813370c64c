#pragma once
// One dqlite node's backend directory (or a tar archive of it) read into a model, strictly
// read-only: the raft log entries found in closed and open segments (index, term, type, a checksum
// of each payload), the snapshots and their .meta, metadata1/2, cluster.yaml and info.yaml, and
// every problem found on the way. The byte layout follows canonical/raft (src/uv_segment.c,
// uv_encoding.c, uv_metadata.c, uv_snapshot.c, configuration.c); see cli/dqlite/README.md.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace stateguard::cli::dqlite {

/// A server's role. cluster.yaml and info.yaml (go-dqlite) number them 0 voter, 1 stand-by,
/// 2 spare; raft's own configuration encoding numbers them 0 stand-by, 1 voter, 2 spare.
enum class Role { kVoter, kStandBy, kSpare, kUnknown };

std::string roleName(Role role);
/// cluster.yaml / info.yaml numbering (go-dqlite NodeRole, dqlite.h DQLITE_VOTER...).
Role roleFromDqlite(int64_t value);
/// raft configuration numbering (raft.h RAFT_STANDBY, RAFT_VOTER, RAFT_SPARE).
Role roleFromRaft(uint8_t value);

/// One member of a configuration, of cluster.yaml, or the node itself in info.yaml.
struct Server {
  uint64_t id = 0;
  std::string address;
  Role role = Role::kUnknown;
};

/// Decodes a raft configuration (u8 format 1, u64 count, per server u64 id, NUL-terminated
/// address, u8 role, zero padding to 8 bytes). Anything else, forks included, is an error.
Result<std::vector<Server>> decodeConfiguration(std::string_view bytes);

/// The latest raft configuration a node holds: from a snapshot .meta or a RAFT_CHANGE entry.
struct Configuration {
  bool present = false;   ///< some configuration was found
  bool readable = false;  ///< and this tool could decode it
  std::string error;      ///< why not
  std::string source;     ///< "snapshot-2-300-99.meta" or "log entry 250"
  uint64_t index = 0;     ///< the raft index it belongs to
  std::vector<Server> servers;

  std::vector<Server> voters() const;
};

/// Something wrong with a node's data: what was found, what it means, what to do.
struct Problem {
  std::string kind;           ///< crc-mismatch, torn-open-segment, gap, entry-count, ...
  std::string file;           ///< the file it is about, "" for the node as a whole
  std::string message;        ///< one or two sentences for a person
  bool inCopiedData = false;  ///< in files a recovery copies to the other nodes
};

/// One raft log entry as found on disk.
struct LogEntry {
  uint64_t index = 0;
  uint64_t term = 0;
  uint8_t type = 0;       ///< 1 command, 2 barrier, 3 configuration change
  uint32_t length = 0;    ///< payload bytes, without padding
  uint64_t checksum = 0;  ///< FNV-1a 64 of the payload: compares entries across nodes
  bool damaged = false;   ///< the data checksum of its batch did not match
  uint32_t segment = 0;   ///< index into Node::segments
};

/// One segment file and what reading it found.
struct SegmentFile {
  std::string name;
  bool open = false;
  uint64_t counter = 0;    ///< open-N
  uint64_t nameFirst = 0;  ///< closed segment: first index in the name
  uint64_t nameLast = 0;   ///< closed segment: last index in the name
  uint64_t size = 0;
  uint64_t format = 0;
  size_t batches = 0;       ///< complete batches read
  size_t entries = 0;       ///< entries in them
  uint64_t firstIndex = 0;  ///< indexes given to its entries (0 when it has none)
  uint64_t lastIndex = 0;
  std::string state;  ///< "ok", "never written", "torn tail", "damaged", "unreadable"
};

/// One snapshot: data file snapshot-TERM-INDEX-TIMESTAMP and its .meta.
struct Snapshot {
  std::string name;  ///< the data file's name
  uint64_t term = 0;
  uint64_t index = 0;
  uint64_t timestamp = 0;
  bool hasMeta = false;
  bool hasData = false;
  bool metaOk = false;  ///< format 1, readable, checksum matches
  uint64_t dataSize = 0;
  std::string dataSha256;
  std::string metaSha256;
  Configuration configuration;
};

/// metadata1 or metadata2: format, version, term, voted_for (4 x u64 LE).
struct Metadata {
  bool present = false;
  uint64_t size = 0;
  uint64_t format = 0;
  uint64_t version = 0;
  uint64_t term = 0;
  uint64_t votedFor = 0;
};

/// One node's backend directory, as read.
struct Node {
  std::string input;  ///< the path given on the command line
  std::string name;   ///< directory base name, or the archive name without .tar.gz
  bool tarball = false;
  std::string prefix;  ///< inside an archive: the directory holding the files, "" = top level
  std::optional<Server> info;  ///< info.yaml
  bool hasClusterYaml = false;
  std::vector<Server> cluster;  ///< cluster.yaml
  Metadata metadata1;
  Metadata metadata2;
  std::vector<SegmentFile> segments;  ///< closed by first index, then open by counter
  std::vector<Snapshot> snapshots;    ///< raft's order: term, index, timestamp
  std::vector<LogEntry> log;          ///< by index, one entry per index
  uint64_t lastIndex = 0;  ///< highest entry index, or the snapshot's when the log ends before
  uint64_t lastTerm = 0;
  Configuration configuration;  ///< the latest one
  std::vector<Problem> problems;
  std::vector<std::string> notes;  ///< worth knowing, not wrong

  /// The snapshot raft would load: complete (data and .meta), highest term, index, timestamp.
  const Snapshot* latestSnapshot() const;
  const LogEntry* entryAt(uint64_t index) const;
  /// "name (address from info.yaml)", or the name alone.
  std::string label() const;
  /// The metadata file with the higher version, or nullptr when neither is usable.
  const Metadata* currentMetadata() const;
  /// Problems in segments, snapshots or cluster.yaml: what a copy would spread.
  std::vector<const Problem*> copiedDamage() const;
};

/// Reads DIR or an archive (.tar.gz, .tgz, .tar) of one node's backend directory. Errors are for
/// input that cannot be used at all (missing, unreadable, not a dqlite directory, truncated
/// metadata); damaged data is reported in Node::problems instead.
Result<Node> readNode(const std::string& path);

/// Makes node names unique ("backend" x3 -> "node1/backend", ...) by adding parent directories.
void disambiguateNames(std::vector<Node>& nodes);

}  // namespace stateguard::cli::dqlite
