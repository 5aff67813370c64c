#include "cli/dqlite/raft_crc.h"

#include <array>

namespace stateguard::cli::dqlite {
namespace {

/// The MSB-first table for 0x04C11DB7: entry i is the CRC of the byte i shifted in from the top.
constexpr std::array<uint32_t, 256> makeTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i << 24;
    for (int bit = 0; bit < 8; ++bit) c = (c & 0x80000000u) ? (c << 1) ^ 0x04C11DB7u : c << 1;
    table[i] = c;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kTable = makeTable();
static_assert(kTable[1] == 0x04C11DB7u && kTable[255] == 0xB1F740B4u,
              "table must match canonical/raft src/byte.c");

}  // namespace

uint32_t raftCrc32(std::string_view bytes, uint32_t init) {
  uint32_t crc = init;
  for (unsigned char b : bytes) crc = (crc << 8) ^ kTable[((crc >> 24) ^ b) & 0xFFu];
  return crc;
}

}  // namespace stateguard::cli::dqlite
