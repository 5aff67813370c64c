// libFuzzer target: what the CSI sidecar and the format gate read from outside. The first byte
// selects the parser, the rest is its input:
//   0  ledger entry JSON (node file, PV annotation) -> ledgerEntryFromJson; an entry that parses
//      must serialise and parse back to the same entry, and its file name must decode back to
//      its volume id without a '/'.
//   1  --device-path-template and one call's inputs, NUL-separated: template, volume id, then
//      "p:KEY=VALUE" (publish_context), "v:KEY=VALUE" (volume_context), "r:ROOT" (--device-root).
//      A resolved path must be clean, absolute and under a root (checked here independently).
//   2  a formatting command line: the next byte picks the gated tool, the rest split on NUL is
//      its argv; every device targetDevices returns must be one of the arguments.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "csi-sidecar/device_template.h"
#include "csi-sidecar/format_gate.h"
#include "csi-sidecar/ledger.h"

namespace {

using namespace stateguard::csi;

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "csi_inputs_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

std::vector<std::string> splitNul(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t end = text.find('\0', start);
    if (end == std::string_view::npos) {
      out.emplace_back(text.substr(start));
      return out;
    }
    out.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // fileNameFor writes upper case only
}

/// Percent-decodes Ledger::fileNameFor's output; nullopt when it is not of that form.
std::optional<std::string> decodeFileName(const std::string& name) {
  const std::string prefix = "vol-", suffix = ".json";
  if (name.size() < prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return std::nullopt;
  }
  const std::string body = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '%') {
      out += body[i];
      continue;
    }
    if (i + 2 >= body.size()) return std::nullopt;
    const int hi = hexValue(body[i + 1]), lo = hexValue(body[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

void fuzzLedgerEntry(std::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return;
  auto entry = ledgerEntryFromJson(j, "fuzz");
  if (!entry.ok()) {
    if (entry.error().empty()) fail("ledgerEntryFromJson", "error without a message");
    return;
  }
  const LedgerEntry& e = entry.value();
  if (e.volumeId.empty()) fail("ledgerEntryFromJson", "entry without a volume id");

  const std::string name = Ledger::fileNameFor(e.volumeId);
  if (name.find('/') != std::string::npos || name.find('\0') != std::string::npos) {
    fail("fileNameFor", "file name with '/' or NUL: " + name);
  }
  if (decodeFileName(name) != e.volumeId) fail("fileNameFor", "does not decode back: " + name);

  // What store() writes must load back as the same entry (a hand-written quarantine without
  // its expected/seen identities included).
  const nlohmann::json out = toJson(e);
  auto again = ledgerEntryFromJson(out, "fuzz round trip");
  if (!again.ok()) fail("round trip", again.error());
  if (toJson(again.value()) != out) fail("round trip", "entry changed: " + out.dump());

  // Merging an entry with itself changes nothing in its history.
  const LedgerEntry self = mergeEntries(e, e);
  if (self.identities.size() > e.identities.size()) {
    fail("mergeEntries", "merge with itself grew the history");
  }
  if (self.quarantine.has_value() != e.quarantine.has_value()) {
    fail("mergeEntries", "merge with itself changed the quarantine");
  }
  LedgerEntry recorded = e;
  if (const FsIdentity* cur = e.current(); cur && recorded.record(*cur)) {
    fail("record", "recording the current identity added one");
  }
}

bool hasControl(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

/// Independent of isCleanAbsolutePath/isUnder: component lists.
std::optional<std::vector<std::string>> components(const std::string& path) {
  if (path.empty() || path[0] != '/') return std::nullopt;
  std::vector<std::string> out;
  if (path == "/") return out;
  std::string cur;
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (cur.empty() || cur == "." || cur == "..") return std::nullopt;
      out.push_back(cur);
      cur.clear();
    } else {
      cur += path[i];
    }
  }
  return out;
}

void fuzzDeviceTemplate(std::string_view text) {
  std::vector<std::string> parts = splitNul(text);
  DeviceInputs inputs;
  std::vector<std::string> roots;
  if (parts.size() > 1) inputs.volumeId = parts[1];
  for (size_t i = 2; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.size() < 2 || p[1] != ':') continue;
    const std::string rest = p.substr(2);
    if (p[0] == 'r') {
      roots.push_back(rest);
      continue;
    }
    const size_t eq = rest.find('=');
    const std::string key = rest.substr(0, eq);
    const std::string value = eq == std::string::npos ? std::string() : rest.substr(eq + 1);
    if (p[0] == 'p') inputs.publishContext[key] = value;
    if (p[0] == 'v') inputs.volumeContext[key] = value;
  }
  auto t = DeviceTemplate::parse(parts[0], roots);
  if (!t.ok()) {
    if (t.error().empty()) fail("DeviceTemplate::parse", "error without a message");
    return;
  }
  if (t->roots().empty()) fail("DeviceTemplate::parse", "no roots");
  auto r = t->resolve(inputs);
  if (!r.ok()) {
    if (r.error().empty()) fail("DeviceTemplate::resolve", "error without a message");
    return;
  }
  if (!r.value()) return;
  const std::string& path = *r.value();
  auto comps = components(path);
  if (!comps) fail("DeviceTemplate::resolve", "unclean path: " + path);
  // Control characters come only from the template's own text (the operator's flag).
  if (hasControl(path) && !hasControl(parts[0])) {
    fail("DeviceTemplate::resolve", "control character from a value: " + path);
  }
  bool under = false;
  for (const std::string& root : t->roots()) {
    auto rc = components(root);
    if (!rc) fail("DeviceTemplate::parse", "unclean root accepted: " + root);
    if (rc->size() <= comps->size() && std::equal(rc->begin(), rc->end(), comps->begin())) {
      under = true;
    }
  }
  if (!under) fail("DeviceTemplate::resolve", "path outside every root: " + path);
  // Same inputs, same answer.
  auto again = t->resolve(inputs);
  if (!again.ok() || again.value() != r.value()) fail("DeviceTemplate::resolve", "not stable");
}

void fuzzTargetDevices(std::string_view text) {
  if (text.empty()) return;
  const std::vector<std::string>& tools = gatedTools();
  const std::string& tool = tools[static_cast<uint8_t>(text[0]) % tools.size()];
  std::vector<std::string> args;
  if (text.size() > 1) args = splitNul(text.substr(1));
  auto devices = targetDevices(tool, args);
  if (!devices.ok()) {
    if (devices.error().empty()) fail("targetDevices", "error without a message");
    return;
  }
  if (tool != "mkfs.btrfs" && devices->size() > 1) {
    fail("targetDevices", tool + " formats one device, got more");
  }
  bool luksFormat = false;
  for (const std::string& a : args) luksFormat = luksFormat || a == "luksFormat";
  if (tool == "cryptsetup" && !devices->empty() && !luksFormat) {
    fail("targetDevices", "cryptsetup without luksFormat formats a device");
  }
  for (const std::string& d : devices.value()) {
    bool isArg = false;
    for (const std::string& a : args) isArg = isArg || a == d;
    if (!isArg) fail("targetDevices", "device that is not an argument: " + d);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      fuzzLedgerEntry(rest);
      break;
    case 1:
      fuzzDeviceTemplate(rest);
      break;
    default:
      fuzzTargetDevices(rest);
      break;
  }
  return 0;
}
