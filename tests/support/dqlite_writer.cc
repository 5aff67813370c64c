#include "tests/support/dqlite_writer.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace stateguard::testing::dqlite {
namespace {

std::string pad8(std::string s) {
  s.resize((s.size() + 7) / 8 * 8, '\0');
  return s;
}

int raftRole(int dqliteRole) {
  switch (dqliteRole) {
    case 0:
      return 1;  // voter
    case 1:
      return 0;  // stand-by
    default:
      return dqliteRole;  // spare = 2
  }
}

}  // namespace

uint32_t bitwiseCrc32(std::string_view data, uint32_t init) {
  uint32_t crc = init;
  for (unsigned char byte : data) {
    for (int bit = 7; bit >= 0; --bit) {
      const bool in = ((byte >> bit) & 1) != 0;
      const bool top = (crc & 0x80000000u) != 0;
      crc <<= 1;
      if (in != top) crc ^= 0x04C11DB7u;
    }
  }
  return crc;
}

std::string u64le(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

std::string u32le(uint32_t v) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

std::string encodeBatch(const std::vector<Entry>& entries) {
  std::string header = u64le(entries.size());
  std::string data;
  for (const auto& e : entries) {
    header += u64le(e.term);
    header += static_cast<char>(e.type);
    header += std::string(3, '\0');
    header += u32le(static_cast<uint32_t>(e.payload.size()));
    data += pad8(e.payload);
  }
  return u32le(bitwiseCrc32(header)) + u32le(bitwiseCrc32(data)) + header + data;
}

std::string segmentBytes(const std::vector<std::vector<Entry>>& batches) {
  std::string out = u64le(1);
  for (const auto& b : batches) out += encodeBatch(b);
  return out;
}

std::string encodeConfiguration(const std::vector<Member>& members) {
  std::string out(1, '\1');
  out += u64le(members.size());
  for (const auto& m : members) {
    out += u64le(m.id);
    out += m.address;
    out += '\0';
    out += static_cast<char>(raftRole(m.role));
  }
  return pad8(out);
}

std::string snapshotMetaBytes(uint64_t confIndex, const std::string& configuration) {
  const std::string indexAndLength = u64le(confIndex) + u64le(configuration.size());
  const uint32_t crc = bitwiseCrc32(configuration, bitwiseCrc32(indexAndLength));
  return u64le(1) + u64le(crc) + indexAndLength + configuration;
}

std::string metadataBytes(uint64_t version, uint64_t term, uint64_t votedFor) {
  return u64le(1) + u64le(version) + u64le(term) + u64le(votedFor);
}

std::string clusterYaml(const std::vector<Member>& members) {
  std::ostringstream out;
  for (const auto& m : members) {
    out << "- Address: " << m.address << "\n  ID: " << m.id << "\n  Role: " << m.role << "\n";
  }
  return out.str();
}

std::string infoYaml(const Member& self) {
  std::ostringstream out;
  out << "Address: " << self.address << "\nID: " << self.id << "\nRole: " << self.role << "\n";
  return out.str();
}

NodeWriter::NodeWriter(std::string dir) : dir_(std::move(dir)) {
  std::filesystem::create_directories(dir_);
}

void NodeWriter::raw(const std::string& name, const std::string& bytes) {
  std::ofstream out(dir_ + "/" + name, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out) throw std::runtime_error("cannot write " + dir_ + "/" + name);
}

std::string NodeWriter::read(const std::string& name) const {
  std::ifstream in(dir_ + "/" + name, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string NodeWriter::closedSegment(uint64_t first,
                                      const std::vector<std::vector<Entry>>& batches) {
  size_t n = 0;
  for (const auto& b : batches) n += b.size();
  char name[64];
  std::snprintf(name, sizeof name, "%016llu-%016llu", static_cast<unsigned long long>(first),
                static_cast<unsigned long long>(first + n - 1));
  raw(name, segmentBytes(batches));
  return name;
}

std::string NodeWriter::openSegment(uint64_t counter,
                                    const std::vector<std::vector<Entry>>& batches,
                                    size_t preallocate) {
  std::string bytes = batches.empty() ? std::string() : segmentBytes(batches);
  if (bytes.size() < preallocate) bytes.resize(preallocate, '\0');
  const std::string name = "open-" + std::to_string(counter);
  raw(name, bytes);
  return name;
}

void NodeWriter::snapshot(uint64_t term, uint64_t index, uint64_t timestamp, uint64_t confIndex,
                          const std::vector<Member>& members, const std::string& data) {
  const std::string name = "snapshot-" + std::to_string(term) + "-" + std::to_string(index) + "-" +
                           std::to_string(timestamp);
  raw(name + ".meta", snapshotMetaBytes(confIndex, encodeConfiguration(members)));
  raw(name, data);
}

void NodeWriter::metadata(int n, uint64_t version, uint64_t term, uint64_t votedFor) {
  raw("metadata" + std::to_string(n), metadataBytes(version, term, votedFor));
}

void NodeWriter::cluster(const std::vector<Member>& members) {
  raw("cluster.yaml", clusterYaml(members));
}

void NodeWriter::info(const Member& self) { raw("info.yaml", infoYaml(self)); }

namespace {

std::vector<std::vector<Entry>> batchesOf(const std::vector<Entry>& log, size_t from, size_t to,
                                          size_t batchSize) {
  std::vector<std::vector<Entry>> out;
  for (size_t i = from; i < to; i += batchSize) {
    out.emplace_back(log.begin() + static_cast<std::ptrdiff_t>(i),
                     log.begin() + static_cast<std::ptrdiff_t>(std::min(to, i + batchSize)));
  }
  return out;
}

}  // namespace

void writeNode(const std::string& dir, const NodeLayout& layout) {
  NodeWriter w(dir);
  size_t from = 0;
  for (uint64_t end : layout.closedEnds) {
    w.closedSegment(from + 1, batchesOf(layout.log, from, end, layout.batchSize));
    from = end;
  }
  w.openSegment(1, batchesOf(layout.log, from, layout.log.size(), layout.batchSize));
  w.openSegment(2, {});
  if (layout.snapshotIndex > 0) {
    const uint64_t term = layout.log[layout.snapshotIndex - 1].term;
    w.snapshot(term, layout.snapshotIndex, 1700000000123, 1, layout.members, layout.snapshotData);
  }
  const uint64_t term = layout.metadataTerm != 0 ? layout.metadataTerm
                        : layout.log.empty()     ? 1
                                                 : layout.log.back().term;
  w.metadata(1, layout.metadataVersion, term, layout.self.id);
  w.metadata(2, layout.metadataVersion - 1, term, layout.self.id);
  w.cluster(layout.members);
  w.info(layout.self);
  w.raw("cluster.crt", "-----BEGIN CERTIFICATE-----\nnot a real certificate\n");
}

std::vector<Member> threeMembers() {
  return {{3297041220608546238ull, "10.0.0.1:19001", 0},
          {9373968242441247628ull, "10.0.0.2:19001", 0},
          {3349965794193426000ull, "10.0.0.3:19001", 0}};
}

std::vector<Entry> makeLog(size_t n, const std::function<uint64_t(uint64_t)>& termOf,
                           const std::vector<Member>& members, uint64_t seed) {
  std::vector<Entry> log;
  for (uint64_t index = 1; index <= n; ++index) {
    Entry e;
    e.term = termOf(index);
    if (index == 1) {
      e.type = 3;
      e.payload = encodeConfiguration(members);
    } else {
      std::string text = "put /registry/pods/default/p" + std::to_string(index) + " seed " +
                         std::to_string(seed) + " ";
      const size_t size = 8 * (1 + (index * 7 + seed) % 8);
      while (text.size() < size) text += static_cast<char>('a' + (index + text.size()) % 26);
      text.resize((text.size() + 7) / 8 * 8, '.');
      e.payload = text;
    }
    log.push_back(std::move(e));
  }
  return log;
}

}  // namespace stateguard::testing::dqlite
