#include "csi-sidecar/device_template.h"

namespace stateguard::csi {

namespace {

bool hasControl(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool hasDotDot(const std::string& s) {
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find('/', start);
    if (end == std::string::npos) end = s.size();
    if (s.compare(start, end - start, "..") == 0 && end - start == 2) return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

bool isCleanAbsolutePath(const std::string& path) {
  if (path.empty() || path[0] != '/' || path.find('\0') != std::string::npos) return false;
  if (path == "/") return true;
  if (path.back() == '/') return false;
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string comp = path.substr(start, end - start);
    if (comp.empty() || comp == "." || comp == "..") return false;
    start = end + 1;
  }
  return true;
}

bool isUnder(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  if (path.size() < root.size() || path.compare(0, root.size(), root) != 0) return false;
  return path.size() == root.size() || path[root.size()] == '/';
}

Result<DeviceTemplate> DeviceTemplate::parse(const std::string& text,
                                             std::vector<std::string> roots) {
  const std::string where = "--device-path-template \"" + text + "\": ";
  if (text.empty()) return makeError(where + "empty");
  DeviceTemplate t;
  t.text_ = text;
  size_t i = 0;
  while (i < text.size()) {
    size_t open = text.find('{', i);
    size_t close = text.find('}', i);
    if (close < open)
      return makeError(where + "'}' without '{' at offset " + std::to_string(close));
    if (open == std::string::npos) {
      t.parts_.push_back({Part::kLiteral, text.substr(i)});
      break;
    }
    if (open > i) t.parts_.push_back({Part::kLiteral, text.substr(i, open - i)});
    if (close == std::string::npos) {
      return makeError(where + "'{' at offset " + std::to_string(open) + " is never closed");
    }
    std::string name = text.substr(open + 1, close - open - 1);
    if (name == "volume_id") {
      t.parts_.push_back({Part::kVolumeId, ""});
    } else if (name.rfind("publish_context.", 0) == 0 && name.size() > 16) {
      t.parts_.push_back({Part::kPublishContext, name.substr(16)});
    } else if (name.rfind("volume_context.", 0) == 0 && name.size() > 15) {
      t.parts_.push_back({Part::kVolumeContext, name.substr(15)});
    } else {
      return makeError(where + "unknown placeholder {" + name +
                       "}; use {volume_id}, {publish_context.KEY} or {volume_context.KEY}");
    }
    i = close + 1;
  }
  if (t.parts_.front().kind == Part::kLiteral && t.parts_.front().value[0] != '/') {
    return makeError(where + "must be an absolute path or start with a placeholder");
  }
  if (roots.empty()) roots.push_back("/dev");
  for (const std::string& r : roots) {
    if (!isCleanAbsolutePath(r)) {
      return makeError("--device-root \"" + r + "\": must be a clean absolute path");
    }
  }
  t.roots_ = std::move(roots);
  return t;
}

Result<std::optional<std::string>> DeviceTemplate::resolve(const DeviceInputs& inputs) const {
  std::string out;
  for (size_t i = 0; i < parts_.size(); ++i) {
    const Part& p = parts_[i];
    std::string value;
    std::string what;
    switch (p.kind) {
      case Part::kLiteral:
        out += p.value;
        continue;
      case Part::kVolumeId:
        value = inputs.volumeId;
        what = "volume id";
        break;
      case Part::kPublishContext:
      case Part::kVolumeContext: {
        const auto& m =
            p.kind == Part::kPublishContext ? inputs.publishContext : inputs.volumeContext;
        auto it = m.find(p.value);
        if (it == m.end()) return std::optional<std::string>();
        value = it->second;
        what = (p.kind == Part::kPublishContext ? "publish_context." : "volume_context.") + p.value;
        break;
      }
    }
    if (value.empty()) {
      if (p.kind == Part::kVolumeId) return makeError("the request has an empty volume id");
      return std::optional<std::string>();
    }
    const bool isWholePathStart = i == 0;
    if (hasControl(value) || value.find('\0') != std::string::npos) {
      return makeError(what + " contains a control character; refusing to build a device path");
    }
    if (hasDotDot(value) || value == ".") {
      return makeError(what + " \"" + value + "\" contains a '..' or '.' path component");
    }
    if (!isWholePathStart && value.find('/') != std::string::npos) {
      return makeError(what + " \"" + value +
                       "\" contains '/'; it would name another path than "
                       "the template's directory");
    }
    out += value;
  }
  if (!isCleanAbsolutePath(out)) {
    return makeError("device path \"" + out + "\" (from --device-path-template \"" + text_ +
                     "\") is not a clean absolute path");
  }
  for (const std::string& root : roots_) {
    if (isUnder(out, root)) return std::optional<std::string>(out);
  }
  std::string list;
  for (const std::string& root : roots_) list += (list.empty() ? "" : ", ") + root;
  return makeError("device path \"" + out + "\" (from --device-path-template \"" + text_ +
                   "\") is outside the device roots (" + list + ")");
}

}  // namespace stateguard::csi
