#pragma once
// What is on a block device, judged without trusting a single read: libblkid's signature probe
// plus evidence of data that signature probing ignores (backup superblocks, non-zero sampled
// regions). In-process, read-only, no exec.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace stateguard::csi {

enum class ProbeState {
  kFilesystem,    ///< a signature libblkid recognises: filesystem, RAID member, crypto, table
  kBlank,         ///< no signature, no backup superblock, every sampled byte is zero
  kDataEvidence,  ///< no signature, but backup superblocks or non-zero data were found
  kUnknown,       ///< could not tell: missing, unopenable, read error, short read, ambivalent
};

std::string_view toString(ProbeState state);

struct Evidence;
/// A trace in one line for messages: its detail, the filesystem UUID it names and where it lies,
/// e.g. "ext4 backup superblock of block group 1 (...), UUID 1b2c..., at byte 134217728".
std::string describeEvidence(const Evidence& e);

/// A trace of data that libblkid's primary-signature probe does not report.
struct Evidence {
  std::string kind;     ///< "ext-backup-superblock", "xfs-ag-superblock", "btrfs-mirror",
                        ///< "luks2-secondary-header", "nonzero-data"
  uint64_t offset = 0;  ///< byte offset on the device where it was found
  std::string type;     ///< filesystem type it belongs to ("ext4", "xfs", "btrfs"), if known
  std::string uuid;     ///< filesystem UUID read from it, if any
  std::string detail;   ///< one human sentence, e.g. "ext4 backup superblock of group 1"
};

struct ProbeResult {
  ProbeState state = ProbeState::kUnknown;
  std::string path;         ///< the path probed, as given
  std::string type;         ///< blkid TYPE (or PTTYPE for a partition table), e.g. "ext4"
  std::string usage;        ///< blkid USAGE: "filesystem", "raid", "crypto", "other", or
                            ///< "partition_table"
  std::string uuid;         ///< blkid UUID when present
  std::string label;        ///< blkid LABEL when present
  uint64_t sizeBytes = 0;   ///< device (or image file) size
  bool ambivalent = false;  ///< libblkid found conflicting signatures
  std::vector<Evidence> evidence;
  std::string error;          ///< for kUnknown: what failed, with the path and errno text
  size_t sampledRegions = 0;  ///< regions read for non-zero bytes (0 when libblkid decided)
  size_t reads = 0;           ///< reads made by the evidence search (libblkid's own not counted)

  /// One line for messages and logs, e.g. "ext4 filesystem UUID 1b2c... (10.0 GiB)",
  /// "blank (64 sampled regions read as zeros)", "unknown: open /dev/x: No such file...".
  std::string summary() const;
};

struct ProbeOptions {
  size_t sampleCount = 64;    ///< regions spread evenly over the device, first and last included
  size_t sampleBytes = 4096;  ///< bytes read per region
};

/// Probes `path` (a block device or a regular image file). Never throws; every failure to read
/// what it needs is kUnknown with `error` set, never kBlank.
ProbeResult probeDevice(const std::string& path, const ProbeOptions& options = {});

/// Every field of the result under its C++ name ("state" as toString(), "evidence" as an array of
/// objects with kind/offset/type/uuid/detail), plus "summary".
nlohmann::json toJson(const ProbeResult& result);

}  // namespace stateguard::csi
