// Building a Node from the files of a backend directory, one at a time: raft's closed and open
// segments, snapshots and their .meta, metadata1/2, and dqlite's cluster.yaml and info.yaml
// (node_dir.cc finds the files in a directory or an archive and hands them over here).

#include "cli/dqlite/node_builder.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "cli/dqlite/raft_crc.h"
#include "core/json_yaml.h"

namespace stateguard::cli::dqlite {
namespace {

constexpr uint64_t kMaxSegmentSize = 8 * 1024 * 1024;             // UV__MAX_SEGMENT_SIZE
constexpr uint64_t kMaxBatchEntries = kMaxSegmentSize / (8 * 4);  // raft's own sanity bound
constexpr uint64_t kMaxConfigurationSize = 1024 * 1024;           // UV__META_MAX_CONFIGURATION_SIZE
constexpr uint8_t kEntryChange = 3;                               // RAFT_CHANGE

uint64_t le64(std::string_view b, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}

uint32_t le32(std::string_view b, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}

uint64_t pad8(uint64_t n) { return (n + 7) / 8 * 8; }

bool allZero(std::string_view b) {
  return std::all_of(b.begin(), b.end(), [](char c) { return c == 0; });
}

uint64_t fnv1a64(std::string_view b) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : b) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string sha256Hex(std::string_view b) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(b.data(), b.size(), digest, &len, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

std::string hex32(uint32_t v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

std::string range(uint64_t a, uint64_t b) {
  return a == b ? std::to_string(a) : std::to_string(a) + "-" + std::to_string(b);
}

bool parseDigits(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

/// What a file in a backend directory is, by name (raft's templates in src/uv.h).
enum class FileKind {
  kClosed,        // %016llu-%016llu
  kOpen,          // open-%llu
  kSnapshotData,  // snapshot-%llu-%llu-%llu
  kSnapshotMeta,  // snapshot-%llu-%llu-%llu.meta
  kMetadata1,
  kMetadata2,
  kClusterYaml,
  kInfoYaml,
  kOther,
};

/// A file name and the numbers in it.
struct NameInfo {
  FileKind kind = FileKind::kOther;
  uint64_t a = 0, b = 0, c = 0;
};

NameInfo classify(std::string_view name) {
  NameInfo info;
  if (name == "metadata1") info.kind = FileKind::kMetadata1;
  if (name == "metadata2") info.kind = FileKind::kMetadata2;
  if (name == "cluster.yaml") info.kind = FileKind::kClusterYaml;
  if (name == "info.yaml") info.kind = FileKind::kInfoYaml;
  if (info.kind != FileKind::kOther) return info;
  if (name.rfind("open-", 0) == 0) {
    if (parseDigits(name.substr(5), &info.a)) info.kind = FileKind::kOpen;
    return info;
  }
  if (name.rfind("snapshot-", 0) == 0) {
    std::string_view rest = name.substr(9);
    bool meta = false;
    if (rest.size() > 5 && rest.ends_with(".meta")) {
      meta = true;
      rest.remove_suffix(5);
    }
    const size_t d1 = rest.find('-');
    const size_t d2 = d1 == std::string_view::npos ? d1 : rest.find('-', d1 + 1);
    if (d2 == std::string_view::npos) return info;
    if (parseDigits(rest.substr(0, d1), &info.a) &&
        parseDigits(rest.substr(d1 + 1, d2 - d1 - 1), &info.b) &&
        parseDigits(rest.substr(d2 + 1), &info.c)) {
      info.kind = meta ? FileKind::kSnapshotMeta : FileKind::kSnapshotData;
    }
    return info;
  }
  const size_t dash = name.find('-');
  if (dash != std::string_view::npos && parseDigits(name.substr(0, dash), &info.a) &&
      parseDigits(name.substr(dash + 1), &info.b)) {
    info.kind = FileKind::kClosed;
  }
  return info;
}
/// An entry from a segment, before it joins the node's log.
struct ParsedEntry {
  LogEntry entry;
  std::string change;  ///< the payload of a configuration change entry
};

}  // namespace

bool isDqliteFile(std::string_view name) { return classify(name).kind != FileKind::kOther; }

/// Reads a node's files one at a time and builds the Node.
class NodeBuilder::Impl {
 public:
  explicit Impl(Node node) : node_(std::move(node)) {}

  Status addFile(const std::string& name, std::string content) {
    const NameInfo info = classify(name);
    switch (info.kind) {
      case FileKind::kClosed:
        addClosed(name, info, content);
        return Ok{};
      case FileKind::kOpen:
        open_.push_back({info.a, name, std::move(content)});
        return Ok{};
      case FileKind::kSnapshotData: {
        Snapshot& s = snapshot(info);
        s.hasData = true;
        s.dataSize = content.size();
        s.dataSha256 = sha256Hex(content);
        return Ok{};
      }
      case FileKind::kSnapshotMeta:
        addMeta(name, info, content);
        return Ok{};
      case FileKind::kMetadata1:
        return addMetadata(name, content, &node_.metadata1);
      case FileKind::kMetadata2:
        return addMetadata(name, content, &node_.metadata2);
      case FileKind::kClusterYaml:
        addClusterYaml(content);
        return Ok{};
      case FileKind::kInfoYaml:
        addInfoYaml(content);
        return Ok{};
      case FileKind::kOther:
        return Ok{};
    }
    return Ok{};
  }

  Node finish() {
    for (auto& [key, s] : snapshots_) node_.snapshots.push_back(std::move(s));
    noteSnapshots();
    std::sort(open_.begin(), open_.end(),
              [](const OpenFile& x, const OpenFile& y) { return x.counter < y.counter; });
    // Open segments continue after the last closed segment, or after the snapshot when there is
    // no closed segment (raft's uvSegmentLoadOpen with the legacy format 1).
    uint64_t next = 1;
    if (!closedEnds_.empty()) {
      next = *std::max_element(closedEnds_.begin(), closedEnds_.end()) + 1;
    } else if (const Snapshot* s = node_.latestSnapshot()) {
      next = s->index + 1;
    }
    for (auto& f : open_) {
      SegmentFile seg;
      seg.name = f.name;
      seg.open = true;
      seg.counter = f.counter;
      parseSegment(&seg, f.content, next);
      if (seg.entries > 0) next = seg.lastIndex + 1;
      node_.segments.push_back(std::move(seg));
      f.content.clear();
    }
    sortSegments();
    buildLog();
    checkMetadata();
    pickConfiguration();
    return std::move(node_);
  }

 private:
  /// An open segment kept until the closed segments say where its numbering starts.
  struct OpenFile {
    uint64_t counter = 0;
    std::string name;
    std::string content;
  };

  void problem(std::string kind, std::string file, std::string message, bool copied) {
    node_.problems.push_back({std::move(kind), std::move(file), std::move(message), copied});
  }

  Snapshot& snapshot(const NameInfo& info) {
    Snapshot& s = snapshots_[{info.a, info.b, info.c}];
    s.term = info.a;
    s.index = info.b;
    s.timestamp = info.c;
    s.name = "snapshot-" + std::to_string(info.a) + "-" + std::to_string(info.b) + "-" +
             std::to_string(info.c);
    return s;
  }

  void addClosed(const std::string& name, const NameInfo& info, std::string_view content) {
    SegmentFile seg;
    seg.name = name;
    seg.nameFirst = info.a;
    seg.nameLast = info.b;
    if (info.b < info.a) {
      problem("segment-name", name,
              name +
                  ": the last index in the name is below the first. raft cannot use this "
                  "file; its entries are not counted.",
              true);
      seg.state = "unreadable";
      node_.segments.push_back(std::move(seg));
      return;
    }
    closedEnds_.push_back(info.b);
    parseSegment(&seg, content, info.a);
    const uint64_t expected = info.b - info.a + 1;
    if (seg.state == "ok" && seg.entries != expected) {
      problem("entry-count", name,
              name + ": holds " + std::to_string(seg.entries) + " entries but its name says " +
                  range(info.a, info.b) + " (" + std::to_string(expected) +
                  "). raft refuses to start with it (\"found " + std::to_string(seg.entries) +
                  " entries (expected " + std::to_string(expected) + ")\").",
              true);
      seg.state = "damaged";
    }
    node_.segments.push_back(std::move(seg));
  }

  /// Reads the batches of one segment; entries are numbered from `first`.
  void parseSegment(SegmentFile* seg, std::string_view b, uint64_t first) {
    const std::string& name = seg->name;
    const bool open = seg->open;
    seg->size = b.size();
    seg->state = "ok";
    const std::string lost =
        open ? ""
             : " raft refuses to start with a damaged closed segment (entries " +
                   range(seg->nameFirst, seg->nameLast) + ").";
    if (b.empty() && open) {
      seg->state = "never written";
      return;
    }
    if (b.size() < 8) {
      problem(open ? "open-segment" : "truncated-segment", name,
              name + ": " + std::to_string(b.size()) +
                  " bytes, less than the 8-byte segment header." +
                  (open ? std::string(" raft refuses to load it (\"file has only ") +
                              std::to_string(b.size()) +
                              " bytes\"); it holds no complete entry: move it aside (after the "
                              "backup) on the node that starts with it."
                        : lost),
              true);
      seg->state = "unreadable";
      return;
    }
    seg->format = le64(b, 0);
    if (seg->format == 0) {
      if (open && allZero(b)) {
        seg->state = "never written";  // preallocated by raft, never used
        return;
      }
      if (open) {
        problem("open-segment", name,
                name +
                    ": the segment header is zero (format 0) but the file holds data. raft "
                    "treats it as corrupt (\"unexpected format version 0\") and does not "
                    "load it.",
                true);
      } else {
        problem("zeroed-segment", name,
                name +
                    (allZero(b) ? ": the file is all zeros: its content was never written "
                                  "or was wiped."
                                : ": the segment header is zero (format 0) but the file "
                                  "holds data: it was partly wiped.") +
                    lost,
                true);
      }
      seg->state = "unreadable";
      return;
    }
    if (seg->format != 1) {
      problem("segment-format", name,
              name + ": segment format " + std::to_string(seg->format) +
                  "; this tool reads format 1 (canonical/raft and dqlite as MicroK8s ships "
                  "them). Its entries are not counted: compare this node by hand.",
              true);
      seg->state = "unreadable";
      return;
    }
    size_t off = 8;
    uint64_t index = first;
    while (off < b.size()) {
      const size_t remaining = b.size() - off;
      const std::string where =
          "batch " + std::to_string(seg->batches + 1) + " at byte " + std::to_string(off);
      if (remaining < 16 || allZero(b.substr(off, 16))) {
        if (allZero(b.substr(off))) {
          if (!open) {
            node_.notes.push_back(name + ": " + std::to_string(remaining) +
                                  " zero bytes after the last batch");
          }
          return;  // the rest was preallocated and never written
        }
        return cutOff(seg, off,
                      remaining < 16 ? "the file ends inside the batch header"
                                     : "an empty batch header is followed by non-zero bytes",
                      index, lost);
      }
      const uint32_t crcHeader = le32(b, off);
      const uint32_t crcData = le32(b, off + 4);
      const uint64_t count = le64(b, off + 8);
      if (count == 0 || count > kMaxBatchEntries) {
        return cutOff(seg, off, "its entry count " + std::to_string(count) + " is not plausible",
                      index, lost);
      }
      const uint64_t headerLen = 8 + 16 * count;
      if (remaining < 8 + headerLen) {
        return cutOff(seg, off, "the file ends inside its entry headers", index, lost);
      }
      const std::string_view header = b.substr(off + 8, headerLen);
      const uint32_t headerCrc = raftCrc32(header);
      if (headerCrc != crcHeader) {
        return cutOff(seg, off,
                      "its header checksum does not match (stored " + hex32(crcHeader) +
                          ", computed " + hex32(headerCrc) + ")",
                      index, lost);
      }
      std::vector<ParsedEntry> entries;
      uint64_t dataLen = 0;
      bool badType = false;
      for (uint64_t i = 0; i < count; ++i) {
        ParsedEntry e;
        e.entry.term = le64(header, 8 + 16 * i);
        e.entry.type = static_cast<uint8_t>(header[8 + 16 * i + 8]);
        e.entry.length = le32(header, 8 + 16 * i + 12);
        badType = badType || e.entry.type < 1 || e.entry.type > 3;
        dataLen += pad8(e.entry.length);
        entries.push_back(std::move(e));
      }
      if (badType) {
        return cutOff(seg, off, "an entry has an unknown type (not 1, 2 or 3)", index, lost);
      }
      if (remaining - 8 - headerLen < dataLen) {
        return cutOff(seg, off, "the file ends inside its entry data", index, lost);
      }
      const size_t dataAt = off + 8 + headerLen;
      const uint32_t dataCrc = raftCrc32(b.substr(dataAt, dataLen));
      const bool damaged = dataCrc != crcData;
      if (damaged) {
        const std::string why = "its data checksum does not match (stored " + hex32(crcData) +
                                ", computed " + hex32(dataCrc) + ")";
        if (open) return cutOff(seg, off, why, index, lost);
        problem("crc-mismatch", seg->name,
                seg->name + ": " + where + " (entries " + range(index, index + count - 1) +
                    "): " + why + ". The payload of these entries is damaged." + lost,
                true);
        seg->state = "damaged";
      }
      size_t at = dataAt;
      for (auto& e : entries) {
        e.entry.index = index++;
        e.entry.damaged = damaged;
        e.entry.segment = static_cast<uint32_t>(node_.segments.size());
        const std::string_view payload = b.substr(at, e.entry.length);
        e.entry.checksum = fnv1a64(payload);
        if (e.entry.type == kEntryChange && !damaged) e.change = std::string(payload);
        at += pad8(e.entry.length);
        if (seg->entries == 0) seg->firstIndex = e.entry.index;
        seg->lastIndex = e.entry.index;
        ++seg->entries;
        add(std::move(e));
      }
      ++seg->batches;
      off = dataAt + dataLen;
    }
  }

  void tornProblem(const std::string& name, size_t at, size_t batch, const std::string& why,
                   uint64_t nextIndex) {
    problem("torn-open-segment", name,
            name + ": batch " + std::to_string(batch) + " at byte " + std::to_string(at) +
                " is incomplete: " + why +
                ". The node stopped while writing it; raft drops it when the node starts, so "
                "entries from " +
                std::to_string(nextIndex) + " on in this file are not counted.",
            false);
  }

  /// A batch that cannot be read: the end of an open segment, damage in a closed one.
  void cutOff(SegmentFile* seg, size_t at, const std::string& why, uint64_t nextIndex,
              const std::string& lost) {
    const size_t batch = seg->batches + 1;
    if (seg->open) {
      tornProblem(seg->name, at, batch, why, nextIndex);
      seg->state = "torn tail";
      return;
    }
    const std::string where = "batch " + std::to_string(batch) + " at byte " + std::to_string(at);
    problem(why.find("checksum") != std::string::npos ? "crc-mismatch" : "truncated-segment",
            seg->name,
            seg->name + ": " + where + ": " + why + ". Nothing from there on can be read, so " +
                (nextIndex <= seg->nameLast
                     ? "entries " + range(nextIndex, seg->nameLast) + " are missing here."
                     : std::string("the file ends in damage.")) +
                lost,
            true);
    seg->state = "damaged";
  }

  void add(ParsedEntry e) {
    if (e.entry.type == kEntryChange && !e.change.empty() &&
        (!change_ || e.entry.index >= change_->first)) {
      change_ = std::make_pair(e.entry.index, std::move(e.change));
    }
    entries_.push_back(e.entry);
  }

  void addMeta(const std::string& name, const NameInfo& info, std::string_view b) {
    Snapshot& s = snapshot(info);
    s.hasMeta = true;
    s.metaSha256 = sha256Hex(b);
    if (b.size() < 32) {
      problem("snapshot-meta", name,
              name + ": " + std::to_string(b.size()) +
                  " bytes, shorter than the 32-byte header of a snapshot .meta. raft cannot "
                  "load this snapshot, and will not start while it is the latest.",
              true);
      return;
    }
    const uint64_t format = le64(b, 0);
    const uint32_t stored = static_cast<uint32_t>(le64(b, 8));
    const uint64_t confIndex = le64(b, 16);
    const uint64_t confLen = le64(b, 24);
    if (format != 1) {
      problem("snapshot-meta", name,
              name + ": format " + std::to_string(format) +
                  ", expected 1. raft cannot load this snapshot.",
              true);
      return;
    }
    if (confLen == 0 || confLen > kMaxConfigurationSize || b.size() < 32 + confLen) {
      problem("snapshot-meta", name,
              name + ": says its configuration has " + std::to_string(confLen) +
                  " bytes but the file has " + std::to_string(b.size()) +
                  ". The .meta is truncated or damaged; raft cannot load this snapshot.",
              true);
      return;
    }
    const std::string_view conf = b.substr(32, confLen);
    const uint32_t crc = raftCrc32(conf, raftCrc32(b.substr(16, 16)));
    if (crc != stored) {
      problem("crc-mismatch", name,
              name + ": checksum does not match (stored " + hex32(stored) + ", computed " +
                  hex32(crc) +
                  "). The configuration stored with the snapshot is damaged; raft refuses to "
                  "load this snapshot.",
              true);
      return;
    }
    s.metaOk = true;
    s.configuration.present = true;
    s.configuration.source = name;
    s.configuration.index = confIndex;
    auto servers = decodeConfiguration(conf);
    if (servers.ok()) {
      s.configuration.readable = true;
      s.configuration.servers = std::move(servers).value();
    } else {
      s.configuration.error = servers.error();
    }
  }

  Status addMetadata(const std::string& name, std::string_view b, Metadata* m) {
    m->present = true;
    m->size = b.size();
    if (b.size() < 32) {
      return makeError(
          label() + ": " + name + " has " + std::to_string(b.size()) +
          " bytes; a raft metadata file has exactly 32 (format, version, term, vote). It is "
          "truncated, so this is not a complete copy of the node's backend directory. Copy the "
          "directory again (with the node stopped); if the node's own file is this short, raft "
          "treats it as never written: inspect a copy without " +
          name + ".");
    }
    m->format = le64(b, 0);
    m->version = le64(b, 8);
    m->term = le64(b, 16);
    m->votedFor = le64(b, 24);
    if (b.size() > 32) {
      node_.notes.push_back(name + " has " + std::to_string(b.size()) +
                            " bytes; raft reads only the first 32");
    }
    if (m->format != 1) {
      problem("metadata", name,
              name + ": format " + std::to_string(m->format) +
                  ", expected 1. raft refuses to start this node (\"bad format version\"). "
                  "metadata files are never copied between nodes; this node needs its own.",
              false);
    } else if (m->version == 0) {
      problem("metadata", name,
              name +
                  ": version 0. raft refuses to start this node (\"version is set to "
                  "zero\").",
              false);
    }
    return Ok{};
  }

  void checkMetadata() {
    const Metadata& m1 = node_.metadata1;
    const Metadata& m2 = node_.metadata2;
    if (!m1.present && !m2.present) {
      node_.notes.push_back(
          "no metadata1/metadata2: raft starts this node with term 0 and no vote");
      return;
    }
    if (m1.present && m2.present && m1.format == 1 && m2.format == 1 && m1.version != 0 &&
        m1.version == m2.version) {
      problem("metadata-conflict", "metadata1",
              "metadata1 and metadata2 are both at version " + std::to_string(m1.version) +
                  " (term " + std::to_string(m1.term) + " and " + std::to_string(m2.term) +
                  "). raft refuses to start this node (\"metadata1 and metadata2 are both at "
                  "version " +
                  std::to_string(m1.version) +
                  "\"). Its log is still readable. In a recovery this node keeps metadata "
                  "files of its own: move the stale one aside (the lower term) before starting.",
              false);
    }
    if (m1.present && m1.version % 2 == 0 && m1.version != 0) {
      node_.notes.push_back("metadata1 holds an even version (" + std::to_string(m1.version) +
                            "); raft writes odd versions there");
    }
    if (m2.present && m2.version % 2 == 1) {
      node_.notes.push_back("metadata2 holds an odd version (" + std::to_string(m2.version) +
                            "); raft writes even versions there");
    }
  }

  static std::optional<uint64_t> idOf(const json& v) {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer() && v.get<int64_t>() >= 0)
      return static_cast<uint64_t>(v.get<int64_t>());
    uint64_t id = 0;
    if (v.is_string() && parseDigits(v.get<std::string>(), &id)) return id;
    return std::nullopt;
  }

  static Result<Server> serverOf(const json& v) {
    if (!v.is_object()) return makeError("an entry is not a mapping of ID, Address, Role");
    Server s;
    auto id = idOf(v.value("ID", json()));
    if (!id) return makeError("an entry has no numeric ID");
    s.id = *id;
    const json address = v.value("Address", json());
    if (!address.is_string()) return makeError("ID " + std::to_string(s.id) + " has no Address");
    s.address = address.get<std::string>();
    const json role = v.value("Role", json(0));
    s.role = role.is_number_integer() ? roleFromDqlite(role.get<int64_t>()) : Role::kUnknown;
    return s;
  }

  void addClusterYaml(std::string_view text) {
    node_.hasClusterYaml = true;
    auto docs = parseDocuments(text, "cluster.yaml");
    std::string error;
    if (!docs.ok()) {
      error = docs.error();
    } else if (docs->empty() || !docs->front().is_array()) {
      error = "it is not a list of ID, Address, Role";
    } else {
      for (const auto& item : docs->front()) {
        auto s = serverOf(item);
        if (!s.ok()) {
          error = s.error();
          break;
        }
        node_.cluster.push_back(s.value());
      }
    }
    if (!error.empty()) {
      node_.cluster.clear();
      problem("cluster-yaml", "cluster.yaml",
              "cluster.yaml cannot be read: " + error +
                  ". dqlite reads the member list from it at start; fix it by hand (a YAML list "
                  "of ID, Address, Role) before using this node's data.",
              true);
    }
  }

  void addInfoYaml(std::string_view text) {
    auto docs = parseDocuments(text, "info.yaml");
    std::string error;
    if (!docs.ok()) {
      error = docs.error();
    } else if (docs->empty()) {
      error = "it is empty";
    } else {
      auto s = serverOf(docs->front());
      if (s.ok()) {
        node_.info = s.value();
      } else {
        error = s.error();
      }
    }
    if (!error.empty()) {
      problem("info-yaml", "info.yaml",
              "info.yaml cannot be read: " + error +
                  ". It tells dqlite which node this is; this node needs its own, correct "
                  "info.yaml before it starts.",
              false);
    }
  }

  void noteSnapshots() {
    std::sort(
        node_.snapshots.begin(), node_.snapshots.end(), [](const Snapshot& x, const Snapshot& y) {
          return std::tie(x.term, x.index, x.timestamp) < std::tie(y.term, y.index, y.timestamp);
        });
    for (const auto& s : node_.snapshots) {
      if (!s.hasData) {
        node_.notes.push_back(s.name +
                              ".meta has no data file: an unfinished snapshot, raft "
                              "ignores it");
      } else if (!s.hasMeta) {
        node_.notes.push_back(s.name + " has no .meta: an unfinished snapshot, raft ignores it");
      } else if (s.dataSize == 0) {
        node_.notes.push_back(s.name + " is empty: an unfinished snapshot, raft ignores it");
      }
    }
  }

  /// Closed segments by first index, then open ones by counter (archives list them in any order).
  void sortSegments() {
    auto& segs = node_.segments;
    std::vector<size_t> order(segs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
      const SegmentFile& a = segs[x];
      const SegmentFile& b = segs[y];
      return std::make_tuple(a.open, a.open ? a.counter : a.nameFirst) <
             std::make_tuple(b.open, b.open ? b.counter : b.nameFirst);
    });
    std::vector<uint32_t> position(segs.size());
    std::vector<SegmentFile> sorted;
    for (size_t i = 0; i < order.size(); ++i) {
      position[order[i]] = static_cast<uint32_t>(i);
      sorted.push_back(std::move(segs[order[i]]));
    }
    segs = std::move(sorted);
    for (auto& e : entries_) e.segment = position[e.segment];
  }

  void buildLog() {
    std::stable_sort(entries_.begin(), entries_.end(),
                     [](const LogEntry& x, const LogEntry& y) { return x.index < y.index; });
    std::vector<LogEntry>& log = node_.log;
    for (const auto& e : entries_) {
      if (!log.empty() && log.back().index == e.index) {
        const LogEntry& kept = log.back();
        const std::string& a = node_.segments[kept.segment].name;
        const std::string& b = node_.segments[e.segment].name;
        if (overlaps_.insert({a, b}).second) {
          problem("overlap", b,
                  b + " holds entries that " + a + " holds too (from index " +
                      std::to_string(e.index) + (kept.term != e.term ? ", with other terms" : "") +
                      "). raft expects segments not to overlap; remove the stale one (after a "
                      "backup) or use another node as the source.",
                  true);
        }
        continue;
      }
      log.push_back(e);
    }
    entries_.clear();
    const Snapshot* snap = node_.latestSnapshot();
    const uint64_t covered = snap != nullptr ? snap->index : 0;
    uint64_t expect = log.empty() ? 0 : log.front().index;
    if (!log.empty() && log.front().index > covered + 1) {
      gap(covered + 1, log.front().index - 1, covered, snap != nullptr);
    }
    for (const auto& e : log) {
      if (e.index > expect) gap(expect, e.index - 1, covered, snap != nullptr);
      expect = e.index + 1;
    }
    if (!log.empty() && (snap == nullptr || log.back().index >= snap->index)) {
      node_.lastIndex = log.back().index;
      node_.lastTerm = log.back().term;
    } else if (snap != nullptr) {
      node_.lastIndex = snap->index;
      node_.lastTerm = snap->term;
    }
    if (snap != nullptr && log.empty()) {
      node_.notes.push_back("the log is empty after the snapshot: last index and term come from " +
                            snap->name);
    }
    if (const LogEntry* e = snap != nullptr ? node_.entryAt(snap->index) : nullptr) {
      if (e->term != snap->term) {
        problem("snapshot-term", snap->name,
                snap->name + " was taken at index " + std::to_string(snap->index) + ", term " +
                    std::to_string(snap->term) + ", but the log holds that index with term " +
                    std::to_string(e->term) +
                    ". The log and the snapshot disagree; do not use this node as the source.",
                true);
      }
    }
  }

  void gap(uint64_t from, uint64_t to, uint64_t covered, bool hasSnapshot) {
    if (to <= covered) {
      node_.notes.push_back("entries " + range(from, to) + " are not in any segment, but the " +
                            "snapshot at index " + std::to_string(covered) + " covers them");
      return;
    }
    const std::string cover =
        hasSnapshot ? "the snapshot (index " + std::to_string(covered) + ") does not cover them"
                    : "there is no snapshot to cover them";
    problem("gap", "",
            "entries " + range(from, to) + " are missing: no segment holds them and " + cover +
                ". raft cannot start with a hole in its log; this node cannot be the source.",
            true);
  }

  void pickConfiguration() {
    Configuration c;
    const Snapshot* snap = node_.latestSnapshot();
    if (snap != nullptr && snap->metaOk) c = snap->configuration;
    if (change_ && (!c.present || change_->first > c.index)) {
      c = Configuration{};
      c.present = true;
      c.source = "log entry " + std::to_string(change_->first);
      c.index = change_->first;
      auto servers = decodeConfiguration(change_->second);
      if (servers.ok()) {
        c.readable = true;
        c.servers = std::move(servers).value();
      } else {
        c.error = servers.error();
      }
    }
    if (c.present && !c.readable) {
      node_.notes.push_back(
          c.source + ": the raft configuration could not be decoded (" + c.error +
          "); its checksum is fine, so this is likely a raft fork with another encoding. The "
          "voters are unknown here; the index and term comparison is not affected.");
    }
    if (c.readable && node_.hasClusterYaml && !node_.cluster.empty()) {
      std::set<uint64_t> conf, yaml;
      for (const auto& s : c.servers) {
        if (s.role == Role::kVoter) conf.insert(s.id);
      }
      for (const auto& s : node_.cluster) {
        if (s.role == Role::kVoter) yaml.insert(s.id);
      }
      if (conf != yaml) {
        node_.notes.push_back(
            "cluster.yaml lists other voters than the raft configuration (" + c.source +
            "); dqlite rewrites cluster.yaml from the configuration. If this node is the "
            "source, make cluster.yaml list the nodes that should vote before copying it.");
      }
    }
    node_.configuration = std::move(c);
  }

  std::string label() const { return node_.name; }

  Node node_;
  std::map<std::tuple<uint64_t, uint64_t, uint64_t>, Snapshot> snapshots_;
  std::vector<OpenFile> open_;
  std::vector<uint64_t> closedEnds_;
  std::vector<LogEntry> entries_;
  std::optional<std::pair<uint64_t, std::string>> change_;
  std::set<std::pair<std::string, std::string>> overlaps_;
};

NodeBuilder::NodeBuilder(Node node) : impl_(std::make_unique<Impl>(std::move(node))) {}
NodeBuilder::~NodeBuilder() = default;
Status NodeBuilder::addFile(const std::string& name, std::string content) {
  return impl_->addFile(name, std::move(content));
}
Node NodeBuilder::finish() { return impl_->finish(); }

Result<std::vector<Server>> decodeConfiguration(std::string_view b) {
  if (b.size() < 9) return makeError("only " + std::to_string(b.size()) + " bytes");
  if (static_cast<unsigned char>(b[0]) != 1) {
    return makeError("encoding format " + std::to_string(static_cast<unsigned char>(b[0])) +
                     ", expected 1");
  }
  const uint64_t n = le64(b, 1);
  if (n == 0 || n > (b.size() - 9) / 11) {
    return makeError("server count " + std::to_string(n) + " does not fit in " +
                     std::to_string(b.size()) + " bytes");
  }
  std::vector<Server> servers;
  size_t at = 9;
  for (uint64_t i = 0; i < n; ++i) {
    if (b.size() - at < 10) return makeError("server " + std::to_string(i + 1) + " is cut off");
    Server s;
    s.id = le64(b, at);
    at += 8;
    const size_t nul = b.find('\0', at);
    if (nul == std::string_view::npos || nul + 1 >= b.size()) {
      return makeError("server " + std::to_string(i + 1) + " has no terminated address");
    }
    s.address = std::string(b.substr(at, nul - at));
    for (unsigned char c : s.address) {
      if (c < 0x20 || c > 0x7e) return makeError("an address holds unprintable bytes");
    }
    at = nul + 1;
    const uint8_t role = static_cast<uint8_t>(b[at++]);
    s.role = roleFromRaft(role);
    if (s.id == 0 || s.role == Role::kUnknown) {
      return makeError("server " + std::to_string(i + 1) + " has id " + std::to_string(s.id) +
                       " and role " + std::to_string(role));
    }
    servers.push_back(std::move(s));
  }
  if (!allZero(b.substr(at))) {
    return makeError("non-zero bytes after the last server (another encoding?)");
  }
  return servers;
}

}  // namespace stateguard::cli::dqlite
