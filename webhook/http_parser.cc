#include "webhook/http_parser.h"

#include <cstring>

namespace stateguard {

namespace {

char lowerChar(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool percentDecode(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int hi = hexValue(in[i + 1]), lo = hexValue(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

bool isToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c <= ' ' || c >= 127 || std::strchr("\"(),/:;<=>?@[\\]{}", c) != nullptr) return false;
  }
  return true;
}

/// True if the comma-separated header value holds `token` (case-insensitive).
bool hasToken(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view item = trim(value.substr(0, comma));
    if (lowerCase(item) == token) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

std::string lowerCase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lowerChar(c);
  return out;
}

std::string HttpRequest::header(const std::string& lowerName) const {
  for (const auto& [name, value] : headers) {
    if (name == lowerName) return value;
  }
  return "";
}

bool findHeadEnd(std::string_view in, size_t from, HeadSpan& span) {
  for (size_t i = from; i < in.size(); ++i) {
    if (in[i] != '\n') continue;
    if (i + 1 < in.size() && in[i + 1] == '\n') {
      span = HeadSpan{i + 1, i + 2};
      return true;
    }
    if (i + 2 < in.size() && in[i + 1] == '\r' && in[i + 2] == '\n') {
      span = HeadSpan{i + 1, i + 3};
      return true;
    }
  }
  return false;
}

bool parseRequestHead(std::string_view head, HttpRequest& req, bool& keepAlive, bool& http10,
                      int& code, std::string& error) {
  bool askedClose = false;
  size_t eol = head.find('\n');
  std::string_view line = head.substr(0, eol);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    error = "malformed request line";
    return false;
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!isToken(method)) {
    error = "malformed request line";
    return false;
  }
  if (method != "GET" && method != "POST" && method != "PUT" && method != "DELETE" &&
      method != "PATCH" && method != "HEAD") {
    code = 501;
    error = "method " + std::string(method) + " is not supported";
    return false;
  }
  if (version == "HTTP/1.0") {
    http10 = true;
    keepAlive = false;
  } else if (version != "HTTP/1.1") {
    code = version.substr(0, 5) == "HTTP/" ? 505 : 400;
    error = code == 505 ? "only HTTP/1.0 and HTTP/1.1 are supported" : "malformed request line";
    return false;
  }
  if (target.empty() || target.front() != '/') {
    error = "the request target must be an absolute path";
    return false;
  }
  req.method = std::string(method);
  size_t q = target.find('?');
  if (q != std::string_view::npos) req.query = std::string(target.substr(q + 1));
  if (!percentDecode(target.substr(0, q), req.path)) {
    error = "malformed percent-encoding in the request path";
    return false;
  }
  while (eol != std::string_view::npos && eol + 1 < head.size()) {
    size_t start = eol + 1;
    eol = head.find('\n', start);
    line = head.substr(start, eol == std::string_view::npos ? std::string_view::npos : eol - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || !isToken(line.substr(0, colon))) {
      error = "malformed header line";
      return false;
    }
    std::string name = lowerCase(line.substr(0, colon));
    std::string_view value = trim(line.substr(colon + 1));
    if (name == "connection") {
      askedClose = askedClose || hasToken(value, "close");
      if (http10 && hasToken(value, "keep-alive")) keepAlive = true;
    }
    req.headers.emplace_back(std::move(name), std::string(value));
  }
  // "close" wins wherever it appears (an HTTP/1.0 keep-alive in a later header included: found
  // by http_parser_fuzz).
  if (askedClose) keepAlive = false;
  return true;
}

BodyFraming bodyFraming(const HttpRequest& req, const HttpLimits& limits) {
  BodyFraming out;
  bool hasLength = false, hasEncoding = false;
  std::string length;
  for (const auto& [name, value] : req.headers) {
    if (name == "content-length") {
      if (hasLength && value != length) {
        out.code = 400;
        out.error = "conflicting Content-Length headers";
        return out;
      }
      hasLength = true;
      length = value;
    } else if (name == "transfer-encoding") {
      hasEncoding = true;
    }
  }
  if (hasEncoding) {
    out.code = 411;
    out.error =
        "Transfer-Encoding is not supported; send the body with a Content-Length (at most " +
        std::to_string(limits.maxBodyBytes) + " bytes)";
    return out;
  }
  if (!hasLength) {
    if (req.method == "POST") {
      out.code = 411;
      out.error = "POST needs a Content-Length";
    }
    return out;
  }
  if (length.empty() || length.size() > 18 ||
      length.find_first_not_of("0123456789") != std::string::npos) {
    out.code = 400;
    out.error = "Content-Length " + length + " is not a number";
    return out;
  }
  const size_t n = std::stoull(length);
  if (n > limits.maxDrainBytes) {
    out.code = 413;
    out.error = "Content-Length " + length + " is over the " + std::to_string(limits.maxBodyBytes) +
                "-byte limit";
    return out;
  }
  out.length = n;
  out.drain = n > limits.maxBodyBytes;
  return out;
}

}  // namespace stateguard
