#include "core/json_writer.h"

#include <cstdint>
#include <cstring>

#include "core/json_yaml.h"

namespace stateguard {

namespace {

constexpr uint64_t kOnes = 0x0101010101010101ULL;
constexpr uint64_t kHighs = 0x8080808080808080ULL;

/// True when one of the 8 bytes in `v` needs attention: a control character (< 0x20), '"',
/// '\\', or a byte >= 0x80 (UTF-8 to validate). Classic SWAR byte tests.
inline bool special(uint64_t v) {
  const uint64_t quote = v ^ (kOnes * '"');
  const uint64_t slash = v ^ (kOnes * '\\');
  const uint64_t low = v - kOnes * 0x20;  // borrows into the high bit for bytes < 0x20
  return (((quote - kOnes) & ~quote) | ((slash - kOnes) & ~slash) | (low & ~v) | v) & kHighs;
}

}  // namespace

void appendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  const size_t start = out.size();
  out.reserve(start + s.size() + 2);
  out.push_back('"');
  const char* p = s.data();
  const char* end = p + s.size();
  const char* run = p;  // first byte not yet copied
  while (p < end) {
    if (end - p >= 8) {
      uint64_t v;
      std::memcpy(&v, p, 8);
      if (!special(v)) {
        p += 8;
        continue;
      }
    }
    const unsigned char c = static_cast<unsigned char>(*p);
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      ++p;
      continue;
    }
    if (c >= 0x80) {
      // UTF-8 to validate (or bytes to replace): nlohmann does it, so the output stays
      // byte-identical to json::dump.
      out.resize(start);
      out += json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
      return;
    }
    out.append(run, static_cast<size_t>(p - run));
    run = ++p;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += "\\u00";
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 0xF]);
    }
  }
  out.append(run, static_cast<size_t>(end - run));
  out.push_back('"');
}

}  // namespace stateguard
