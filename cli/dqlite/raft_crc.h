#pragma once
// raft's own CRC-32, as canonical/raft (src/byte.c, taken from libiberty's crc32.c) computes it
// over segment batches and snapshot .meta files: the non-reflected (MSB-first) table for the
// polynomial 0x04C11DB7, initial value 0, no final XOR. It is NOT zlib's crc32.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace stateguard::cli::dqlite {

/// CRC of `bytes`, continuing from `init` (the CRC of the bytes before them; 0 to start).
uint32_t raftCrc32(std::string_view bytes, uint32_t init = 0);

}  // namespace stateguard::cli::dqlite
