// libFuzzer target: the webhook's HTTP/1.1 request parser (webhook/http_parser.h), the part of
// the server a client reaches first. Raw request bytes ->
//   findHeadEnd, on the whole input and again as the bytes arrive in small pieces with the scan
//   resuming where it stopped (as the server does): both must find the same end;
//   parseRequestHead: either a request (method supported, path absolute, header names lower-case
//   tokens) or a refusal with a status and a message;
//   bodyFraming: either a refusal (400, 411, 413) with a message, or a length within the limits.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "webhook/http_parser.h"

namespace {

using namespace stateguard;

[[noreturn]] void fail(const char* what, std::string_view input) {
  std::fprintf(stderr, "http_parser_fuzz: %s (input %zu bytes)\n", what, input.size());
  std::abort();
}

void check(bool ok, const char* what, std::string_view input) {
  if (!ok) fail(what, input);
}

/// The comma-separated options of a Connection header, trimmed and in lower case.
std::vector<std::string> connectionOptions(std::string_view value) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string_view::npos) comma = value.size();
    std::string_view item = value.substr(start, comma - start);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    out.push_back(lowerCase(item));
    start = comma + 1;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  HttpLimits limits;
  limits.maxBodyBytes = 3 * 1024 * 1024;
  limits.maxDrainBytes = 16 * 1024 * 1024;

  HeadSpan whole;
  const bool found = findHeadEnd(in, 0, whole);
  // The same bytes arriving in pieces of 1-8 bytes (the first byte picks the size).
  const size_t piece = size == 0 ? 1 : (data[0] % 8) + 1;
  HeadSpan incremental;
  bool foundIncrementally = false;
  size_t from = 0;
  for (size_t have = std::min(piece, size);; have = std::min(have + piece, size)) {
    if (findHeadEnd(in.substr(0, have), from, incremental)) {
      foundIncrementally = true;
      break;
    }
    from = headScanResume(have);
    if (have == size) break;
  }
  check(found == foundIncrementally, "the resumed scan and the whole scan disagree", in);
  if (!found) return 0;
  check(incremental.headBytes == whole.headBytes && incremental.bodyStart == whole.bodyStart,
        "the resumed scan found another end", in);
  check(whole.headBytes > 0 && whole.headBytes < whole.bodyStart && whole.bodyStart <= size,
        "head span out of order", in);
  check(in[whole.bodyStart - 1] == '\n', "the head does not end with a line end", in);

  HttpRequest req;
  bool keepAlive = true, http10 = false;
  int code = 400;
  std::string error;
  if (!parseRequestHead(in.substr(0, whole.headBytes), req, keepAlive, http10, code, error)) {
    check(!error.empty(), "a refusal without a message", in);
    check(code == 400 || code == 501 || code == 505, "a refusal with an unexpected status", in);
    return 0;
  }
  check(req.method == "GET" || req.method == "POST" || req.method == "PUT" ||
            req.method == "DELETE" || req.method == "PATCH" || req.method == "HEAD",
        "an unsupported method was accepted", in);
  check(!req.path.empty() && req.path.front() == '/', "a path that is not absolute", in);
  bool askedKeepAlive = false, askedClose = false;
  for (const auto& [name, value] : req.headers) {
    if (name != "connection") continue;
    for (const std::string& option : connectionOptions(value)) {
      askedKeepAlive |= option == "keep-alive";
      askedClose |= option == "close";
    }
  }
  check(!http10 || !keepAlive || askedKeepAlive, "HTTP/1.0 kept alive unasked", in);
  check(!keepAlive || !askedClose, "kept alive after Connection: close", in);
  for (const auto& [name, value] : req.headers) {
    check(!name.empty(), "an empty header name", in);
    check(name == lowerCase(name), "a header name not in lower case", in);
    check(name.find(':') == std::string::npos, "a header name with a colon", in);
    check(value.find('\n') == std::string::npos, "a header value spanning lines", in);
  }

  const BodyFraming framing = bodyFraming(req, limits);
  if (framing.code != 0) {
    check(framing.code == 400 || framing.code == 411 || framing.code == 413,
          "a framing refusal with an unexpected status", in);
    check(!framing.error.empty(), "a framing refusal without a message", in);
    return 0;
  }
  check(framing.length <= limits.maxDrainBytes, "a body length past the drain limit", in);
  check(framing.drain == (framing.length > limits.maxBodyBytes), "drain decided wrongly", in);
  check(req.method != "POST" || !req.header("content-length").empty(),
        "a POST without a length was framed", in);
  return 0;
}
