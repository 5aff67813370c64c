#pragma once
// Reading Kubernetes documents: JSON or (multi-document) YAML into nlohmann::json.

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace stateguard {

using json = nlohmann::json;

/// One Kubernetes object read from a file, with where it came from.
struct SourcedObject {
  json object;
  std::string source;   ///< file name (or "-")
  size_t document = 0;  ///< 0-based document index in that file
  size_t item = 0;      ///< index inside a List document, else 0
  size_t line = 0;      ///< 1-based line where the document (or YAML list item) starts; 0 unknown
};

/// Parses JSON text, or YAML text with one or more `---` separated documents.
/// Empty documents are skipped. YAML scalars keep Kubernetes semantics:
/// quoted stay strings, plain true/false/null/numbers become JSON types.
/// `lines`, when given, receives the 1-based start line of each returned document.
/// `itemHook`, when given, sees each object two levels down in a JSON document (the items of a
/// List) as soon as it is parsed, and may trim it before the next is read: a large List is then
/// never held whole.
using ItemHook = std::function<void(json&)>;
Result<std::vector<json>> parseDocuments(std::string_view text, const std::string& source,
                                         std::vector<size_t>* lines = nullptr,
                                         const ItemHook* itemHook = nullptr);

/// Parses documents and flattens `kind: List` (and `*List`) items into objects.
Result<std::vector<SourcedObject>> parseObjects(std::string_view text, const std::string& source,
                                                const ItemHook* itemHook = nullptr);

/// Reads a file (or stdin for "-") completely.
Result<std::string> readFile(const std::string& path);

}  // namespace stateguard
