#include "cli/dqlite/tarball.h"

#include <zlib.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>

namespace stateguard::cli::dqlite {
namespace {

constexpr size_t kBlock = 512;
/// Members larger than this are not read into memory (a dqlite segment is at most 8 MiB).
constexpr uint64_t kMaxMemberSize = uint64_t{4} << 30;

/// Sequential reader over a file that is either gzip-compressed or plain.
class ByteStream {
 public:
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;
  ~ByteStream() {
    if (gzip_) inflateEnd(&zs_);
  }

  static Result<std::unique_ptr<ByteStream>> open(const std::string& path) {
    std::unique_ptr<ByteStream> s(new ByteStream());
    s->path_ = path;
    s->in_.open(path, std::ios::binary | std::ios::in);
    if (!s->in_) return makeError("cannot open " + path + ": " + std::strerror(errno));
    unsigned char magic[2] = {0, 0};
    s->in_.read(reinterpret_cast<char*>(magic), 2);
    const auto got = s->in_.gcount();
    s->in_.clear();
    s->in_.seekg(0);
    s->gzip_ = got == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    if (s->gzip_) {
      std::memset(&s->zs_, 0, sizeof s->zs_);
      if (inflateInit2(&s->zs_, 15 + 32) != Z_OK) return makeError("zlib: cannot initialise");
    }
    return s;
  }

  /// Reads up to n bytes; fewer only at the end of the data.
  Result<size_t> read(char* out, size_t n) {
    if (!gzip_) {
      in_.read(out, static_cast<std::streamsize>(n));
      if (in_.bad()) return makeError("cannot read " + path_ + ": " + std::strerror(errno));
      return static_cast<size_t>(in_.gcount());
    }
    size_t got = 0;
    while (got < n && !finished_) {
      if (zs_.avail_in == 0 && !fill()) {
        if (!streamEnded_) {
          return makeError(path_ + " is truncated: the gzip stream ends before its end marker");
        }
        finished_ = true;
        break;
      }
      if (streamEnded_) {  // more bytes after a gzip member: another member, or trailing junk
        if (zs_.next_in[0] != 0x1f) {
          finished_ = true;
          break;
        }
        inflateReset(&zs_);
        streamEnded_ = false;
      }
      zs_.next_out = reinterpret_cast<Bytef*>(out + got);
      zs_.avail_out = static_cast<uInt>(n - got);
      const int rc = inflate(&zs_, Z_NO_FLUSH);
      got = n - zs_.avail_out;
      if (rc == Z_STREAM_END) {
        streamEnded_ = true;
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        return makeError(
            path_ + " is not a readable gzip file (" +
            (zs_.msg != nullptr ? std::string(zs_.msg) : "zlib error " + std::to_string(rc)) + ")");
      }
    }
    return got;
  }

 private:
  ByteStream() = default;

  bool fill() {
    if (in_.eof()) return false;
    in_.read(reinterpret_cast<char*>(buffer_.data()), static_cast<std::streamsize>(buffer_.size()));
    const auto n = in_.gcount();
    if (n <= 0) return false;
    zs_.next_in = buffer_.data();
    zs_.avail_in = static_cast<uInt>(n);
    return true;
  }

  std::string path_;
  std::ifstream in_;
  bool gzip_ = false;
  bool streamEnded_ = false;
  bool finished_ = false;
  z_stream zs_{};
  std::array<Bytef, 64 * 1024> buffer_{};
};

/// One header as found in the archive, long names already applied.
struct RawMember {
  std::string path;
  char type = '0';
  uint64_t size = 0;
};

uint64_t parseOctal(const unsigned char* p, size_t n) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == 0)) ++i;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i) v = (v << 3) | (p[i] - '0');
  return v;
}

uint64_t parseNumber(const unsigned char* p, size_t n) {
  if (p[0] & 0x80) {  // GNU base-256
    uint64_t v = p[0] & 0x7f;
    for (size_t i = 1; i < n; ++i) v = (v << 8) | p[i];
    return v;
  }
  return parseOctal(p, n);
}

std::string cString(const unsigned char* p, size_t n) {
  size_t len = 0;
  while (len < n && p[len] != 0) ++len;
  return std::string(reinterpret_cast<const char*>(p), len);
}

/// Reads tar headers and data from a ByteStream.
class TarReader {
 public:
  TarReader(ByteStream& stream, std::string path) : stream_(stream), path_(std::move(path)) {}

  /// The next member; false at the end of the archive.
  Result<bool> next(RawMember* member) {
    std::string longName;
    std::string paxPath;
    for (;;) {
      std::array<unsigned char, kBlock> h{};
      auto got = stream_.read(reinterpret_cast<char*>(h.data()), kBlock);
      if (!got.ok()) return makeError(got.error());
      if (got.value() == 0) return false;  // no end marker: accept what was there
      if (got.value() < kBlock) {
        if (offset_ == 0) {
          return makeError(path_ + " is not a tar archive (" + std::to_string(got.value()) +
                           " bytes, less than one tar header)");
        }
        return makeError(path_ + " is truncated: it ends inside a tar header at byte " +
                         std::to_string(offset_));
      }
      const uint64_t headerAt = offset_;
      offset_ += kBlock;
      bool zero = true;
      for (unsigned char c : h) zero = zero && c == 0;
      if (zero) return false;
      uint64_t sum = 0;
      for (size_t i = 0; i < kBlock; ++i) sum += (i >= 148 && i < 156) ? ' ' : h[i];
      if (sum != parseOctal(h.data() + 148, 8)) {
        return makeError(
            path_ + " is not a tar archive" +
            (headerAt == 0 ? std::string() : " past byte " + std::to_string(headerAt)) +
            " (header checksum does not match)");
      }
      RawMember m;
      m.type = static_cast<char>(h[156]);
      m.size = parseNumber(h.data() + 124, 12);
      m.path = cString(h.data(), 100);
      if (std::memcmp(h.data() + 257, "ustar", 5) == 0) {
        const std::string prefix = cString(h.data() + 345, 155);
        if (!prefix.empty()) m.path = prefix + "/" + m.path;
      }
      if (m.type == 'L' || m.type == 'x' || m.type == 'g' || m.type == 'K') {
        std::string data;
        if (auto st = readData(m.size, &data); !st.ok()) return makeError(st.error());
        if (m.type == 'L')
          longName = cString(reinterpret_cast<const unsigned char*>(data.data()), data.size());
        if (m.type == 'x') paxPath = paxValue(data, "path");
        continue;
      }
      if (!longName.empty()) m.path = longName;
      if (!paxPath.empty()) m.path = paxPath;
      *member = std::move(m);
      return true;
    }
  }

  Status readData(uint64_t size, std::string* out) {
    if (size > kMaxMemberSize) {
      return makeError(path_ + ": a member of " + std::to_string(size) +
                       " bytes is too large to inspect in memory");
    }
    out->resize(size);
    auto got = stream_.read(out->data(), size);
    if (!got.ok()) return makeError(got.error());
    if (got.value() < size) return truncated();
    offset_ += size;
    return skipPadding(size);
  }

  Status skipData(uint64_t size) {
    std::array<char, 64 * 1024> scratch{};
    uint64_t left = size;
    while (left > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(left, scratch.size()));
      auto got = stream_.read(scratch.data(), n);
      if (!got.ok()) return makeError(got.error());
      if (got.value() < n) return truncated();
      left -= n;
    }
    offset_ += size;
    return skipPadding(size);
  }

 private:
  Status skipPadding(uint64_t size) {
    const size_t pad = static_cast<size_t>((kBlock - size % kBlock) % kBlock);
    if (pad == 0) return Ok{};
    std::array<char, kBlock> scratch{};
    auto got = stream_.read(scratch.data(), pad);
    if (!got.ok()) return makeError(got.error());
    offset_ += got.value();
    return Ok{};  // a missing final padding loses nothing
  }

  Status truncated() const {
    return makeError(path_ + " is truncated: a member's data is cut off after byte " +
                     std::to_string(offset_));
  }

  static std::string paxValue(const std::string& records, const std::string& key) {
    size_t pos = 0;
    while (pos < records.size()) {
      const size_t space = records.find(' ', pos);
      if (space == std::string::npos) break;
      const size_t len = std::strtoull(records.c_str() + pos, nullptr, 10);
      if (len == 0 || pos + len > records.size()) break;
      const std::string record = records.substr(space + 1, pos + len - space - 2);
      if (record.rfind(key + "=", 0) == 0) return record.substr(key.size() + 1);
      pos += len;
    }
    return "";
  }

  ByteStream& stream_;
  std::string path_;
  uint64_t offset_ = 0;
};

/// "./a//b/" -> "a/b"; empty when the path is absolute or climbs out with "..".
std::string normalise(const std::string& raw, bool* unsafe) {
  *unsafe = !raw.empty() && raw[0] == '/';
  std::string out;
  size_t pos = 0;
  while (pos <= raw.size()) {
    size_t slash = raw.find('/', pos);
    if (slash == std::string::npos) slash = raw.size();
    const std::string part = raw.substr(pos, slash - pos);
    if (part == "..") *unsafe = true;
    if (!part.empty() && part != ".") out += (out.empty() ? "" : "/") + part;
    pos = slash + 1;
  }
  return *unsafe ? std::string() : out;
}

bool isRegular(char type) { return type == '0' || type == '\0' || type == '7'; }

}  // namespace

Result<std::vector<TarMember>> listTarball(const std::string& file,
                                           std::vector<std::string>* skipped) {
  auto stream = ByteStream::open(file);
  if (!stream.ok()) return makeError(stream.error());
  TarReader reader(*stream.value(), file);
  std::vector<TarMember> members;
  RawMember m;
  for (;;) {
    auto more = reader.next(&m);
    if (!more.ok()) return makeError(more.error());
    if (!more.value()) break;
    bool unsafe = false;
    const std::string path = normalise(m.path, &unsafe);
    if (unsafe && skipped != nullptr) skipped->push_back(m.path + " (path leaves the archive)");
    if (!unsafe && (m.type == '1' || m.type == '2') && skipped != nullptr) {
      skipped->push_back(m.path + " (link, not followed)");
    }
    if (!unsafe && isRegular(m.type) && !path.empty()) members.push_back({path, m.size});
    if (auto st = reader.skipData(m.type == '5' || m.type == '1' || m.type == '2' ? 0 : m.size);
        !st.ok()) {
      return makeError(st.error());
    }
  }
  return members;
}

Status readTarball(
    const std::string& file, const std::function<bool(const std::string&)>& wanted,
    const std::function<Status(const std::string& path, std::string content)>& visit) {
  auto stream = ByteStream::open(file);
  if (!stream.ok()) return makeError(stream.error());
  TarReader reader(*stream.value(), file);
  RawMember m;
  for (;;) {
    auto more = reader.next(&m);
    if (!more.ok()) return makeError(more.error());
    if (!more.value()) return Ok{};
    bool unsafe = false;
    const std::string path = normalise(m.path, &unsafe);
    const bool hasData = !(m.type == '5' || m.type == '1' || m.type == '2');
    if (!unsafe && isRegular(m.type) && !path.empty() && wanted(path)) {
      std::string content;
      if (auto st = reader.readData(m.size, &content); !st.ok()) return st;
      if (auto st = visit(path, std::move(content)); !st.ok()) return st;
    } else if (auto st = reader.skipData(hasData ? m.size : 0); !st.ok()) {
      return st;
    }
  }
}

}  // namespace stateguard::cli::dqlite
