#include "core/json_yaml.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
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

json scalarToJson(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  // A quoted scalar (tag "!") is always a string.
  if (node.Tag() == "!") return s;
  if (isYamlNull(s) && node.Tag() != "tag:yaml.org,2002:str") return nullptr;
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

json yamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return scalarToJson(node);
    case YAML::NodeType::Sequence: {
      json arr = json::array();
      for (const auto& item : node) arr.push_back(yamlToJson(item));
      return arr;
    }
    case YAML::NodeType::Map: {
      json obj = json::object();
      for (const auto& kv : node) obj[kv.first.as<std::string>()] = yamlToJson(kv.second);
      return obj;
    }
  }
  return nullptr;
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
  std::string jsonError;
  if (startsLikeJson(text)) {
    try {
      docs.push_back(json::parse(text));
      if (lines != nullptr) lines->assign(1, 1);
      return docs;
    } catch (const json::parse_error& e) {
      // Flow-style YAML ("{kind: Pod}") also starts with a brace: try YAML before giving up.
      jsonError = source + ": invalid JSON: " + e.what();
    }
  }
  try {
    std::vector<YAML::Node> nodes = YAML::LoadAll(std::string(text));
    if (lines != nullptr) lines->clear();
    for (const auto& node : nodes) {
      json doc = yamlToJson(node);
      if (!doc.is_null()) {
        docs.push_back(std::move(doc));
        if (lines != nullptr) lines->push_back(static_cast<size_t>(node.Mark().line) + 1);
      }
    }
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
    const std::string kind = doc.value("kind", "");
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
