// In-process device probe: libblkid's safe probe, then a bounded search for the data libblkid
// does not report (backup superblocks, secondary headers, non-zero sampled regions).
// Read-only (one O_RDONLY descriptor, shared with libblkid), no exec.

#include "csi-sidecar/probe.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <set>
#include <system_error>
#include <utility>

#include "csi-sidecar/digest.h"

namespace stateguard::csi {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t kTiB = 1024 * kGiB;
constexpr uint64_t kPiB = 1024 * kTiB;

/// The XFS search tries AG starts on a grid of at most this many offsets (see findXfsSecondary).
constexpr uint64_t kXfsGridReads = 128;

std::string errnoText(int err) { return std::generic_category().message(err); }

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}
uint64_t le64(const uint8_t* p) { return le32(p) | static_cast<uint64_t>(le32(p + 4)) << 32; }
uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | static_cast<uint32_t>(p[3]);
}
uint64_t be64(const uint8_t* p) { return static_cast<uint64_t>(be32(p)) << 32 | be32(p + 4); }

bool isPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

/// 16 raw bytes as "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (how blkid prints ext/xfs/btrfs UUIDs).
std::string formatUuid(const uint8_t* p) {
  std::string out;
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[p[i] >> 4];
    out += kHex[p[i] & 0xF];
  }
  return out;
}

/// A NUL-padded on-disk string (label, LUKS UUID), printable ASCII only.
std::string fixedString(const uint8_t* p, size_t n) {
  std::string out;
  for (size_t i = 0; i < n && p[i] != 0; ++i)
    out += (p[i] >= 0x20 && p[i] < 0x7F) ? char(p[i]) : '?';
  return out;
}

std::string formatBytes(uint64_t n) {
  if (n < kKiB) return std::to_string(n) + " B";
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(n) / 1024.0;
  size_t unit = 0;
  while (v >= 1024.0 && unit + 1 < std::size(kUnits)) {
    v /= 1024.0;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  return buf;
}

/// The device under probe: one read-only descriptor; every read is counted, and an error or a
/// short read is remembered (error()) so that no caller can mistake it for zeros.
class Device {
 public:
  Device(int fd, uint64_t size, std::string path) : fd_(fd), size_(size), path_(std::move(path)) {}

  uint64_t size() const { return size_; }
  size_t reads() const { return reads_; }
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  bool fits(uint64_t offset, uint64_t len) const {
    return offset <= size_ && len <= size_ - offset;
  }

  /// Exactly `len` bytes at `offset` into `buf`; false on an error or a short read.
  bool read(uint64_t offset, size_t len, std::vector<uint8_t>& buf) {
    buf.assign(len, 0);
    ++reads_;
    size_t done = 0;
    while (done < len) {
      ssize_t n = ::pread(fd_, buf.data() + done, len - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        error_ = "read " + path_ + " at offset " + std::to_string(offset + done) + ": " +
                 errnoText(errno);
        return false;
      }
      if (n == 0) {
        error_ = "short read of " + path_ + " at offset " + std::to_string(offset) + ": got " +
                 std::to_string(done) + " of " + std::to_string(len) + " bytes (size " +
                 std::to_string(size_) + ")";
        return false;
      }
      done += static_cast<size_t>(n);
    }
    return true;
  }

 private:
  int fd_;
  uint64_t size_;
  std::string path_;
  size_t reads_ = 0;
  std::string error_;
};

// ---- non-zero sampled regions ----------------------------------------------------------------

/// Reads `sampleCount` regions spread evenly over the device (the first at 0, the last ending at
/// the device's end, the others 4 KiB-aligned) and reports the non-zero ones as one Evidence.
size_t sampleRegions(Device& dev, const ProbeOptions& options, std::vector<Evidence>& out) {
  const uint64_t len = std::min<uint64_t>(std::max<size_t>(options.sampleBytes, 512), dev.size());
  const uint64_t count = std::max<size_t>(options.sampleCount, 2);
  const uint64_t span = dev.size() - len;
  std::vector<uint64_t> offsets;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t off = span;
    if (i + 1 < count) {
      off = static_cast<uint64_t>(static_cast<unsigned __int128>(span) * i / (count - 1));
      off &= ~uint64_t{4095};
    }
    if (offsets.empty() || offsets.back() != off) offsets.push_back(off);
  }
  std::vector<uint8_t> buf;
  size_t nonZero = 0;
  uint64_t first = 0;
  for (uint64_t off : offsets) {
    if (!dev.read(off, static_cast<size_t>(len), buf)) return 0;
    auto it = std::find_if(buf.begin(), buf.end(), [](uint8_t b) { return b != 0; });
    if (it == buf.end()) continue;
    if (nonZero++ == 0) first = off + static_cast<uint64_t>(it - buf.begin());
  }
  if (nonZero > 0) {
    out.push_back({"nonzero-data", first, "", "",
                   std::to_string(nonZero) + " of " + std::to_string(offsets.size()) +
                       " sampled regions (" + std::to_string(len) +
                       " bytes each) hold non-zero bytes, the first at byte " +
                       std::to_string(first)});
  }
  return offsets.size();
}

// ---- ext2/3/4 backup superblocks -------------------------------------------------------------

/// Block groups holding a backup superblock under sparse_super: 1 and the powers of 3, 5 and 7.
std::vector<uint64_t> sparseSuperGroups(uint64_t groupCount) {
  std::set<uint64_t> groups;
  if (groupCount > 1) groups.insert(1);
  for (uint64_t base : {3, 5, 7}) {
    for (uint64_t g = base; g < groupCount; g *= base) groups.insert(g);
  }
  return {groups.begin(), groups.end()};
}

/// libblkid's naming: ext4 when a feature ext3 lacks is set, ext3 with a journal, else ext2.
std::string extType(const uint8_t* sb) {
  const uint32_t compat = le32(sb + 0x5C), incompat = le32(sb + 0x60), roCompat = le32(sb + 0x64);
  if (incompat & 0x0008) return "jbd";                          // external journal device
  constexpr uint32_t kExt3Incompat = 0x0002 | 0x0004 | 0x0010;  // filetype, recover, meta_bg
  constexpr uint32_t kExt3RoCompat = 0x0001 | 0x0002 | 0x0004;  // sparse_super, large_file, btree
  if ((incompat & ~kExt3Incompat) != 0 || (roCompat & ~kExt3RoCompat) != 0) return "ext4";
  if (compat & 0x0004) return "ext3";  // has_journal
  return "ext2";
}

std::optional<Evidence> extBackupAt(const std::vector<uint8_t>& b, uint64_t offset, uint64_t group,
                                    uint32_t blockSize) {
  const uint8_t* sb = b.data();
  const uint32_t firstDataBlock = blockSize == 1024 ? 1 : 0;
  const uint32_t logBlockSize = le32(sb + 0x18);
  if (le16(sb + 0x38) != 0xEF53 || le16(sb + 0x5A) != (group & 0xFFFF)) return std::nullopt;
  if (logBlockSize > 6 || (1024u << logBlockSize) != blockSize) return std::nullopt;
  if (le32(sb + 0x20) != 8 * blockSize || le32(sb + 0x14) != firstDataBlock) return std::nullopt;
  uint64_t blocks = le32(sb + 0x04);
  if (le32(sb + 0x60) & 0x0080) blocks |= static_cast<uint64_t>(le32(sb + 0x150)) << 32;  // 64bit
  if (le32(sb + 0x00) == 0 || blocks <= firstDataBlock + group * 8 * blockSize) {
    return std::nullopt;
  }
  Evidence e{"ext-backup-superblock", offset, extType(sb), formatUuid(sb + 0x68), ""};
  e.detail = e.type + " backup superblock of block group " + std::to_string(group) + " (" +
             std::to_string(blockSize) + "-byte blocks, " + std::to_string(blocks) + " blocks";
  const std::string label = fixedString(sb + 0x78, 16);
  e.detail += label.empty() ? ")" : ", label \"" + label + "\")";
  return e;
}

/// Tries the backup superblock positions of the default layouts (1, 2 and 4 KiB blocks,
/// 8 * block size blocks per group, sparse_super) in increasing group order; stops at the first.
void findExtBackup(Device& dev, std::vector<Evidence>& out) {
  struct Candidate {
    uint64_t group;
    uint32_t blockSize;
  };
  std::vector<Candidate> candidates;
  for (uint32_t blockSize : {4096u, 1024u, 2048u}) {
    const uint64_t firstDataBlock = blockSize == 1024 ? 1 : 0;
    const uint64_t blocksPerGroup = 8 * blockSize;
    const uint64_t blocks = dev.size() / blockSize;
    if (blocks <= firstDataBlock) continue;
    const uint64_t groupCount = (blocks - firstDataBlock + blocksPerGroup - 1) / blocksPerGroup;
    for (uint64_t g : sparseSuperGroups(groupCount)) candidates.push_back({g, blockSize});
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.group < b.group; });
  std::vector<uint8_t> buf;
  for (const Candidate& c : candidates) {
    const uint64_t firstDataBlock = c.blockSize == 1024 ? 1 : 0;
    const uint64_t offset = (firstDataBlock + c.group * 8 * c.blockSize) * c.blockSize;
    if (!dev.fits(offset, 1024)) continue;
    if (!dev.read(offset, 1024, buf)) return;
    if (auto e = extBackupAt(buf, offset, c.group, c.blockSize)) {
      out.push_back(std::move(*e));
      return;
    }
  }
}

// ---- btrfs superblock mirrors ----------------------------------------------------------------

void findBtrfsMirror(Device& dev, std::vector<Evidence>& out) {
  std::vector<uint8_t> buf;
  int mirror = 0;
  for (uint64_t offset : {64 * kMiB, 256 * kGiB, kPiB}) {
    ++mirror;
    if (!dev.fits(offset, 4096)) break;
    if (!dev.read(offset, 1024, buf)) return;
    if (std::memcmp(buf.data() + 0x40, "_BHRfS_M", 8) != 0 || le64(buf.data() + 0x30) != offset) {
      continue;
    }
    Evidence e{"btrfs-mirror", offset, "btrfs", formatUuid(buf.data() + 0x20), ""};
    const std::string label = fixedString(buf.data() + 0x12B, 256);
    e.detail = "btrfs superblock mirror " + std::to_string(mirror) +
               (label.empty() ? "" : " (label \"" + label + "\")");
    out.push_back(std::move(e));
    return;
  }
}

// ---- LUKS2 secondary header ------------------------------------------------------------------

/// LUKS2 keeps a second binary header right after the first, at one of these offsets (the size
/// of the header area). libblkid 2.38 checks them itself when the primary is gone, so this only
/// matters with a libblkid that does not.
void findLuks2Secondary(Device& dev, std::vector<Evidence>& out) {
  std::vector<uint8_t> buf;
  for (uint64_t offset = 16 * kKiB; offset <= 4 * kMiB; offset *= 2) {
    if (!dev.fits(offset, 4096)) break;
    if (!dev.read(offset, 512, buf)) return;
    if (std::memcmp(buf.data(), "SKUL\xba\xbe", 6) != 0 || be16(buf.data() + 6) != 2 ||
        be64(buf.data() + 256) != offset) {
      continue;
    }
    Evidence e{"luks2-secondary-header", offset, "crypto_LUKS", fixedString(buf.data() + 168, 40),
               ""};
    e.detail = "LUKS2 secondary header";
    out.push_back(std::move(e));
    return;
  }
}

// ---- XFS allocation-group superblocks --------------------------------------------------------

/// A superblock copy at the start of allocation group n >= 1, checked against its own geometry:
/// block and sector sizes (and their logs), agblocks/agblklog, agcount/dblocks, and `offset` being
/// exactly n * agblocks * blocksize with 1 <= n < agcount. Secondaries do not record their n.
std::optional<Evidence> xfsSecondaryAt(const std::vector<uint8_t>& buf, uint64_t offset) {
  const uint8_t* sb = buf.data();
  if (std::memcmp(sb, "XFSB", 4) != 0) return std::nullopt;
  const uint32_t blockSize = be32(sb + 4);
  const uint16_t sectSize = be16(sb + 102);
  const uint8_t blockLog = sb[120], sectLog = sb[121], agBlkLog = sb[124];
  if (blockSize < 512 || blockSize > 65536 || !isPowerOfTwo(blockSize) || blockLog > 16 ||
      (1u << blockLog) != blockSize) {
    return std::nullopt;
  }
  if (sectSize < 512 || !isPowerOfTwo(sectSize) || sectLog > 15 || (1u << sectLog) != sectSize) {
    return std::nullopt;
  }
  const uint64_t dblocks = be64(sb + 8);
  const uint64_t agBlocks = be32(sb + 84), agCount = be32(sb + 88);
  if (agBlocks == 0 || agCount < 2 || agBlkLog > 32) return std::nullopt;
  // agblklog = log2 rounded up, as mkfs.xfs computes it.
  if ((uint64_t{1} << agBlkLog) < agBlocks ||
      (agBlkLog > 0 && (uint64_t{1} << (agBlkLog - 1)) >= agBlocks)) {
    return std::nullopt;
  }
  if (dblocks <= (agCount - 1) * agBlocks || dblocks > agCount * agBlocks) return std::nullopt;
  const uint64_t agBytes = agBlocks * blockSize;
  if (offset % agBytes != 0) return std::nullopt;
  const uint64_t ag = offset / agBytes;
  if (ag == 0 || ag >= agCount) return std::nullopt;
  Evidence e{"xfs-ag-superblock", offset, "xfs", formatUuid(sb + 32), ""};
  e.detail = "xfs superblock copy at the start of allocation group " + std::to_string(ag) + " of " +
             std::to_string(agCount) + " (" + std::to_string(agBlocks) + " blocks of " +
             std::to_string(blockSize) + " bytes per group";
  const std::string label = fixedString(sb + 108, 12);
  e.detail += label.empty() ? ")" : ", label \"" + label + "\")";
  return e;
}

/// calc_default_ag_geometry() of mkfs.xfs (xfsprogs 4.x-6.x): the AG size in blocks it chooses
/// for a data section of `dblocks` blocks of 2^blockLog bytes, with or without a stripe unit.
uint64_t mkfsXfsAgBlocks(uint64_t dblocks, unsigned blockLog, bool multidisk) {
  const uint64_t maxBlocks = ((uint64_t{1} << 40) - 1) >> blockLog;
  auto units = [blockLog](uint64_t n, unsigned log) { return n << (log - blockLog); };
  if (dblocks >= units(32, 40)) return maxBlocks;
  unsigned shift = 0;
  if (!multidisk && dblocks >= units(4, 40)) return maxBlocks;
  if (!multidisk && dblocks >= units(128, 20)) {
    shift = 2;
  } else {
    shift = 5;
    if (dblocks <= units(512, 30)) --shift;
    if (dblocks <= units(8, 30)) --shift;
    if (dblocks <= units(128, 20)) --shift;
    if (dblocks <= units(64, 20)) --shift;
    if (dblocks <= units(32, 20)) --shift;
  }
  uint64_t blocks = dblocks >> shift;
  if ((dblocks & ((uint64_t{1} << shift) - 1)) != 0 && blocks < maxBlocks) ++blocks;
  return blocks;
}

/// sb_agblocks is unknown once the primary superblock is gone, so AG starts are tried in order:
///  1. from AG 0's AGF/AGI headers (sectors 1 and 2, for 512- and 4096-byte sectors), which hold
///     the AG length and survive a zeroed or wiped first sector: agblocks * 2^(9..16);
///  2. the geometry mkfs.xfs picks by default for this device size (4 AGs on a single disk,
///     more with a stripe unit), for every block size: AGs 1 to 3;
///  3. only while nothing else points at data: every multiple of a step (16 MiB doubled until
///     at most kXfsGridReads offsets remain; 1 GiB on 100 GiB). A filesystem made on N GiB has
///     AGs of N * 256 MiB, so with a step of 2^j * 256 MiB its AG 2^j is on the grid - the case
///     of a volume expanded after mkfs (more AGs once grown), which (2) misses.
/// Each candidate is validated by the fields of the copy itself; the first valid one is reported.
/// Not found: non-default AG sizes off the grid (mkfs.xfs -d agsize=/agcount= on odd sizes).
void findXfsSecondary(Device& dev, bool gridSearch, std::vector<Evidence>& out) {
  std::vector<uint64_t> candidates;
  std::vector<uint8_t> buf;
  std::vector<uint64_t> headerAgBlocks;
  for (uint64_t sector : {512, 4096}) {
    for (auto [index, magic] : {std::pair{1, "XAGF"}, std::pair{2, "XAGI"}}) {
      const uint64_t offset = sector * static_cast<uint64_t>(index);
      if (!dev.fits(offset, 512)) continue;
      if (!dev.read(offset, 512, buf)) return;
      // magic, versionnum 1, seqno 0 (AG 0), length
      if (std::memcmp(buf.data(), magic, 4) == 0 && be32(buf.data() + 4) == 1 &&
          be32(buf.data() + 8) == 0 && be32(buf.data() + 12) != 0) {
        headerAgBlocks.push_back(be32(buf.data() + 12));
      }
    }
  }
  for (uint64_t agBlocks : headerAgBlocks) {
    for (unsigned blockLog = 9; blockLog <= 16; ++blockLog) {
      candidates.push_back(agBlocks << blockLog);
    }
  }
  for (uint64_t ag = 1; ag <= 3; ++ag) {
    for (unsigned blockLog : {12u, 10u, 11u, 13u, 14u, 15u, 16u, 9u}) {
      const uint64_t dblocks = dev.size() >> blockLog;
      if (dblocks == 0) continue;
      for (bool multidisk : {false, true}) {
        const uint64_t agBlocks = mkfsXfsAgBlocks(dblocks, blockLog, multidisk);
        if (ag * agBlocks < dblocks) candidates.push_back((ag * agBlocks) << blockLog);
      }
    }
  }
  if (gridSearch) {
    uint64_t step = 16 * kMiB;
    while (dev.size() / step > kXfsGridReads) step *= 2;
    for (uint64_t offset = step; offset < dev.size(); offset += step) candidates.push_back(offset);
  }
  std::set<uint64_t> tried;
  for (uint64_t offset : candidates) {
    if (!dev.fits(offset, 512) || !tried.insert(offset).second) continue;
    if (!dev.read(offset, 512, buf)) return;
    if (auto e = xfsSecondaryAt(buf, offset)) {
      out.push_back(std::move(*e));
      return;
    }
  }
}

// ---- libblkid --------------------------------------------------------------------------------

std::string probeValue(blkid_probe pr, const char* name) {
  const char* data = nullptr;
  size_t len = 0;
  if (blkid_probe_lookup_value(pr, name, &data, &len) != 0 || data == nullptr) return "";
  return std::string(data, strnlen(data, len));
}

class BlkidProbe {
 public:
  BlkidProbe() : pr_(blkid_new_probe()) {}
  ~BlkidProbe() {
    if (pr_ != nullptr) blkid_free_probe(pr_);
  }
  BlkidProbe(const BlkidProbe&) = delete;
  BlkidProbe& operator=(const BlkidProbe&) = delete;
  blkid_probe get() const { return pr_; }

 private:
  blkid_probe pr_;
};

/// Closes the descriptor on every return path.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;

 private:
  int fd_;
};

ProbeResult& markUnknown(ProbeResult& r, std::string error) {
  r.state = ProbeState::kUnknown;
  r.error = std::move(error);
  return r;
}

/// libblkid's verdict. Returns true when it settled the state (signature, error, ambivalence).
bool blkidProbe(int fd, ProbeResult& r) {
  BlkidProbe probe;
  blkid_probe pr = probe.get();
  if (pr == nullptr) {
    markUnknown(r, "libblkid: cannot allocate a probe for " + r.path);
    return true;
  }
  errno = 0;
  if (blkid_probe_set_device(pr, fd, 0, 0) != 0) {
    const int err = errno;
    markUnknown(r, "libblkid cannot use " + r.path + (err ? ": " + errnoText(err) : ""));
    return true;
  }
  blkid_probe_enable_superblocks(pr, 1);
  blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID | BLKID_SUBLKS_TYPE |
                                            BLKID_SUBLKS_USAGE | BLKID_SUBLKS_BADCSUM);
  blkid_probe_enable_partitions(pr, 1);
  errno = 0;
  const int rc = blkid_do_safeprobe(pr);
  const int err = errno;
  if (rc == 0) {
    r.state = ProbeState::kFilesystem;
    r.type = probeValue(pr, "TYPE");
    r.usage = probeValue(pr, "USAGE");
    r.uuid = probeValue(pr, "UUID");
    r.label = probeValue(pr, "LABEL");
    if (r.type.empty()) {
      r.type = probeValue(pr, "PTTYPE");
      if (!r.type.empty()) {
        r.usage = "partition_table";
        r.uuid = probeValue(pr, "PTUUID");
      }
    }
    return true;
  }
  if (rc == 1) return false;
  if (rc == -2) {
    // Name the conflicting signatures: the non-safe probe returns them one by one.
    std::vector<std::string> types;
    blkid_reset_probe(pr);
    for (int i = 0; i < 8 && blkid_do_probe(pr) == 0; ++i) {
      std::string t = probeValue(pr, "TYPE");
      if (t.empty()) t = probeValue(pr, "PTTYPE");
      if (!t.empty() && std::find(types.begin(), types.end(), t) == types.end()) types.push_back(t);
    }
    std::string list;
    for (const auto& t : types) list += (list.empty() ? ": " : ", ") + t;
    r.ambivalent = true;
    markUnknown(r, "libblkid found conflicting signatures on " + r.path + list);
    return true;
  }
  markUnknown(r, "libblkid could not probe " + r.path +
                     (err ? ": " + errnoText(err) : " (error " + std::to_string(rc) + ")"));
  return true;
}

}  // namespace

std::string_view toString(ProbeState state) {
  switch (state) {
    case ProbeState::kFilesystem:
      return "filesystem";
    case ProbeState::kBlank:
      return "blank";
    case ProbeState::kDataEvidence:
      return "data-evidence";
    case ProbeState::kUnknown:
      return "unknown";
  }
  return "unknown";
}

ProbeResult probeDevice(const std::string& path, const ProbeOptions& options) {
  ProbeResult r;
  if (path.size() >= PATH_MAX) {
    // No such path can be opened (ENAMETOOLONG); quoting it whole would put megabytes into
    // messages and audit lines.
    r.path = shortenId(path, 512);
    return markUnknown(r, "open " + r.path + ": " + errnoText(ENAMETOOLONG));
  }
  r.path = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return markUnknown(r, "open " + path + ": " + errnoText(errno));
  FdGuard guard(fd);

  struct stat st {};
  if (::fstat(fd, &st) != 0) return markUnknown(r, "stat " + path + ": " + errnoText(errno));
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0) {
      return markUnknown(r, "size of " + path + " (BLKGETSIZE64): " + errnoText(errno));
    }
    r.sizeBytes = bytes;
  } else if (S_ISREG(st.st_mode)) {
    r.sizeBytes = static_cast<uint64_t>(st.st_size);
  } else {
    return markUnknown(r, path + ": " + (S_ISDIR(st.st_mode) ? errnoText(EISDIR) : "not a device") +
                              " (not a block device or regular file)");
  }
  if (r.sizeBytes == 0) {
    // An empty file, or a file that does not know its size (procfs, sysfs): a read says which.
    char byte = 0;
    const ssize_t n = ::pread(fd, &byte, 1, 0);
    if (n < 0) return markUnknown(r, "read " + path + " at offset 0: " + errnoText(errno));
    return markUnknown(
        r, path + ": size is 0" + std::string(n > 0 ? " but it reads data" : " (empty)"));
  }
  // Candidates are scattered small reads: readahead would only multiply the I/O.
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);

  if (blkidProbe(fd, r)) return r;

  Device dev(fd, r.sizeBytes, path);
  std::vector<Evidence> nonZero;  // reported after the more specific evidence
  r.sampledRegions = sampleRegions(dev, options, nonZero);
  if (!dev.failed()) findExtBackup(dev, r.evidence);
  if (!dev.failed()) findBtrfsMirror(dev, r.evidence);
  if (!dev.failed()) findLuks2Secondary(dev, r.evidence);
  // The grid part of the XFS search is its largest cost; it only runs while nothing says "data".
  if (!dev.failed()) findXfsSecondary(dev, r.evidence.empty() && nonZero.empty(), r.evidence);
  r.evidence.insert(r.evidence.end(), nonZero.begin(), nonZero.end());
  r.reads = dev.reads();
  if (dev.failed()) {
    r.evidence.clear();
    return markUnknown(r, dev.error());
  }
  r.state = r.evidence.empty() ? ProbeState::kBlank : ProbeState::kDataEvidence;
  return r;
}

std::string ProbeResult::summary() const {
  const std::string size = " (" + formatBytes(sizeBytes) + ")";
  switch (state) {
    case ProbeState::kFilesystem: {
      std::string noun = "signature";
      if (usage == "filesystem") noun = "filesystem";
      if (usage == "raid") noun = "RAID member";
      if (usage == "crypto") noun = "encrypted volume";
      if (usage == "partition_table") noun = "partition table";
      std::string s = (type.empty() ? "unnamed" : type) + " " + noun;
      if (!uuid.empty()) s += " UUID " + uuid;
      if (!label.empty()) s += " LABEL \"" + label + "\"";
      return s + size;
    }
    case ProbeState::kBlank:
      return "blank (" + std::to_string(sampledRegions) +
             " sampled regions read as zeros, no backup superblock)" + size;
    case ProbeState::kDataEvidence: {
      if (evidence.empty()) return "data-evidence" + size;
      const Evidence& e = evidence.front();
      std::string s = "no signature but data: " + e.detail;
      if (e.kind != "nonzero-data") {
        s += " at byte " + std::to_string(e.offset) + " (" + formatBytes(e.offset) + ")";
      }
      if (!e.uuid.empty()) s += ", UUID " + e.uuid;
      if (evidence.size() > 1) s += " (+" + std::to_string(evidence.size() - 1) + " more)";
      return s + size;
    }
    case ProbeState::kUnknown:
      return "unknown: " + (error.empty() ? std::string("not probed") : error);
  }
  return "unknown";
}

nlohmann::json toJson(const ProbeResult& result) {
  nlohmann::json evidence = nlohmann::json::array();
  for (const Evidence& e : result.evidence) {
    evidence.push_back({{"kind", e.kind},
                        {"offset", e.offset},
                        {"type", e.type},
                        {"uuid", e.uuid},
                        {"detail", e.detail}});
  }
  return {{"state", std::string(toString(result.state))},
          {"path", result.path},
          {"type", result.type},
          {"usage", result.usage},
          {"uuid", result.uuid},
          {"label", result.label},
          {"sizeBytes", result.sizeBytes},
          {"ambivalent", result.ambivalent},
          {"evidence", evidence},
          {"error", result.error},
          {"sampledRegions", result.sampledRegions},
          {"reads", result.reads},
          {"summary", result.summary()}};
}

std::string describeEvidence(const Evidence& e) {
  std::string out = e.detail;
  if (!e.uuid.empty()) out += ", UUID " + e.uuid;
  return out + ", at byte " + std::to_string(e.offset);
}

}  // namespace stateguard::csi
