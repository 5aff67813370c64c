#include "core/json_yaml.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

namespace stateguard {
namespace {

bool isYamlNull(const std::string& s) {
  return s == "null" || s == "Null" || s == "NULL" || s == "~" || s.empty();
}

bool isYamlBool(const std::string& s, bool& out) {
  if (s == "true" || s == "True" || s == "TRUE") {
    out = true;
    return true;
  }
  if (s == "false" || s == "False" || s == "FALSE") {
    out = false;
    return true;
  }
  return false;
}

bool looksNumeric(const std::string& s) {
  if (s.empty()) return false;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  bool digits = false;
  bool dot = false;
  bool exp = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c >= '0' && c <= '9') {
      digits = true;
    } else if (c == '.' && !dot && !exp) {
      dot = true;
    } else if ((c == 'e' || c == 'E') && digits && !exp) {
      exp = true;
      if (i + 1 < s.size() && (s[i + 1] == '-' || s[i + 1] == '+')) ++i;
    } else {
      return false;
    }
  }
  return digits;
}

json scalarToJson(const std::string& tag, const std::string& s) {
  // A quoted scalar (tag "!") is always a string.
  if (tag == "!") return s;
  if (isYamlNull(s) && tag != "tag:yaml.org,2002:str") return nullptr;
  bool b = false;
  if (isYamlBool(s, b)) return b;
  if (looksNumeric(s)) {
    bool integral = s.find_first_of(".eE") == std::string::npos;
    try {
      if (integral) return json(std::stoll(s));
      return json(std::stod(s));
    } catch (const std::exception&) {
      return s;  // out of range: keep the text
    }
  }
  return s;
}

/// Builds JSON documents straight from the parser's events (no intermediate node tree: about
/// twice as fast as YAML::LoadAll for large manifests). Aliases copy the anchored value, within
/// a budget: a few hundred bytes of nested aliases ("a billion laughs") would otherwise expand
/// to gigabytes before anything could look at them.
class JsonBuilder : public YAML::EventHandler {
 public:
  /// `aliasBudget`: bytes (estimated as 32 per node plus string lengths) that all alias
  /// copies in one document may add together.
  explicit JsonBuilder(size_t aliasBudget) : aliasBudget_(aliasBudget) {}
  std::vector<json> docs;
  std::vector<size_t> lines;
  size_t started = 0;  ///< documents begun, empty ones included

  void OnDocumentStart(const YAML::Mark& mark) override {
    ++started;
    docLine_ = static_cast<size_t>(mark.line) + 1;
    rootSeen_ = false;
    root_ = nullptr;
  }
  void OnDocumentEnd() override {
    if (!root_.is_null()) {
      docs.push_back(std::move(root_));
      lines.push_back(docLine_);
    }
    root_ = nullptr;
    anchors_.clear();
    aliasCost_ = 0;
  }
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    complete(nullptr, anchor, mark, kNodeCost);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) {
      complete(nullptr, 0, mark, kNodeCost);
      return;
    }
    aliasCost_ += it->second.cost;
    if (aliasCost_ > aliasBudget_) {
      throw YAML::ParserException(
          mark, "aliases in this document expand to more than " +
                    std::to_string(aliasBudget_ / 1024) +
                    " KiB (a YAML alias bomb?); stateguard stops reading here. Write the "
                    "repeated values out if this is meant");
    }
    complete(it->second.value, 0, mark, it->second.cost);
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    // Map keys stay text ("true", "1" as keys are names, not values).
    const size_t cost = kNodeCost + value.size();
    if (!stack_.empty() && stack_.back().isMap && !stack_.back().haveKey) {
      complete(value, anchor, mark, cost);
      return;
    }
    complete(scalarToJson(tag, value), anchor, mark, cost);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    noteRoot(mark);
    stack_.push_back(Frame{json::array(), false, false, {}, anchor, kNodeCost});
  }
  void OnSequenceEnd() override { finishContainer(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    noteRoot(mark);
    stack_.push_back(Frame{json::object(), true, false, {}, anchor, kNodeCost});
  }
  void OnMapEnd() override { finishContainer(); }

 private:
  struct Frame {
    json value;
    bool isMap;
    bool haveKey;
    std::string key;
    YAML::anchor_t anchor;
    size_t cost;  ///< estimated bytes of the value and everything in it
  };
  struct Anchored {
    json value;
    size_t cost;
  };
  static constexpr size_t kNodeCost = 32;

  void finishContainer() {
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    complete(std::move(f.value), f.anchor, YAML::Mark(), f.cost);
  }

  /// The document's line is where its first node starts (after any "---" and comments).
  void noteRoot(const YAML::Mark& mark) {
    if (stack_.empty() && !rootSeen_ && mark.line >= 0) {
      docLine_ = static_cast<size_t>(mark.line) + 1;
      rootSeen_ = true;
    }
  }

  void complete(json value, YAML::anchor_t anchor, const YAML::Mark& mark, size_t cost) {
    noteRoot(mark);
    if (anchor != 0) anchors_[anchor] = Anchored{value, cost};
    if (!stack_.empty()) stack_.back().cost += cost;
    if (stack_.empty()) {
      root_ = std::move(value);
      return;
    }
    Frame& parent = stack_.back();
    if (!parent.isMap) {
      parent.value.push_back(std::move(value));
    } else if (!parent.haveKey) {
      parent.key = value.is_string() ? value.get<std::string>()
                                     : value.dump(-1, ' ', false, json::error_handler_t::replace);
      parent.haveKey = true;
    } else {
      parent.value[parent.key] = std::move(value);
      parent.haveKey = false;
    }
  }

  std::vector<Frame> stack_;
  std::map<YAML::anchor_t, Anchored> anchors_;
  size_t aliasBudget_;
  size_t aliasCost_ = 0;
  json root_;
  size_t docLine_ = 1;
  bool rootSeen_ = false;
};

/// Offset of the first byte that breaks UTF-8 (Kubernetes objects are UTF-8), or npos.
size_t invalidUtf8At(std::string_view text) {
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xE  ? 3
                 : (c >> 3) == 0x1E ? 4
                                    : 0;
    if (len == 0 || i + len > n || (len == 2 && c < 0xC2)) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return i;
    }
    if (len == 3) {
      const auto c1 = static_cast<unsigned char>(text[i + 1]);
      if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0)) return i;  // overlong, surrogate
    } else if (len == 4) {
      const auto c1 = static_cast<unsigned char>(text[i + 1]);
      if ((c == 0xF0 && c1 < 0x90) || c > 0xF4 || (c == 0xF4 && c1 >= 0x90)) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

bool startsLikeJson(std::string_view text) {
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    return c == '{' || c == '[';
  }
  return false;
}

}  // namespace

Result<std::vector<json>> parseDocuments(std::string_view text, const std::string& source,
                                         std::vector<size_t>* lines) {
  std::vector<json> docs;
  if (size_t bad = invalidUtf8At(text); bad != std::string_view::npos) {
    size_t line = 1 + static_cast<size_t>(
                          std::count(text.begin(), text.begin() + static_cast<long>(bad), '\n'));
    return makeError(source + ": not valid UTF-8 at line " + std::to_string(line) + " (byte " +
                     std::to_string(bad) + "); Kubernetes objects are UTF-8");
  }
  std::string jsonError;
  if (startsLikeJson(text)) {
    try {
      docs.push_back(json::parse(text));
      if (lines != nullptr) lines->assign(1, 1);
      return docs;
    } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers like 1e999
      // Flow-style YAML ("{kind: Pod}") also starts with a brace: try YAML before giving up.
      jsonError = source + ": invalid JSON: " + e.what();
    }
  }
  try {
    std::istringstream in{std::string(text)};
    YAML::Parser parser(in);
    // Aliases may add 1 MiB, or 16 times the input, whichever is more.
    JsonBuilder builder(std::max<size_t>(1 << 20, 16 * text.size()));
    // yaml-cpp 0.7 can report endless empty documents after a flow collection followed by a
    // comma ("[1],"; upstream issue 1040). Real input cannot hold more documents than bytes.
    const size_t maxDocuments = text.size() + 1;
    while (parser.HandleNextDocument(builder)) {
      if (builder.started > maxDocuments) {
        return makeError(
            jsonError.empty()
                ? source + ": invalid YAML: the parser stopped making progress near line " +
                      std::to_string(builder.lines.empty() ? 1 : builder.lines.back()) +
                      " (a flow collection followed by a comma?)"
                : jsonError);
      }
    }
    docs = std::move(builder.docs);
    if (lines != nullptr) *lines = std::move(builder.lines);
  } catch (const YAML::Exception& e) {
    if (!jsonError.empty()) return makeError(jsonError);
    return makeError(source + ": invalid YAML at line " + std::to_string(e.mark.line + 1) +
                     ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  return docs;
}

Result<std::vector<SourcedObject>> parseObjects(std::string_view text, const std::string& source) {
  std::vector<size_t> lines;
  auto docs = parseDocuments(text, source, &lines);
  if (!docs.ok()) return makeError(docs.error());
  std::vector<SourcedObject> out;
  size_t docIndex = 0;
  for (auto& doc : docs.value()) {
    if (doc.is_array()) {  // a bare array of objects reads like a List
      doc = json{{"kind", "List"}, {"items", std::move(doc)}};
    }
    if (!doc.is_object()) {
      return makeError(source + ": document " + std::to_string(docIndex) +
                       " is not an object (expected a Kubernetes object or List)");
    }
    const auto kindIt = doc.find("kind");
    const std::string kind =
        kindIt != doc.end() && kindIt->is_string() ? kindIt->get<std::string>() : "";
    bool isList =
        kind == "List" || (kind.size() > 4 && kind.ends_with("List") && doc.contains("items"));
    if (isList && doc.contains("items") && doc["items"].is_array()) {
      size_t item = 0;
      for (auto& obj : doc["items"]) {
        out.push_back(SourcedObject{std::move(obj), source, docIndex, item++, lines[docIndex]});
      }
    } else {
      out.push_back(SourcedObject{std::move(doc), source, docIndex, 0, lines[docIndex]});
    }
    ++docIndex;
  }
  return out;
}

Result<std::string> readFile(const std::string& path) {
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return makeError("cannot open " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return makeError("cannot read " + path + ": " + std::strerror(errno));
  return ss.str();
}

}  // namespace stateguard
