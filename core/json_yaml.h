#pragma once
// Reading Kubernetes documents: JSON or (multi-document) YAML into nlohmann::json.

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
};

/// Parses JSON text, or YAML text with one or more `---` separated documents.
/// Empty documents are skipped. YAML scalars keep Kubernetes semantics:
/// quoted stay strings, plain true/false/null/numbers become JSON types.
Result<std::vector<json>> parseDocuments(std::string_view text, const std::string& source);

/// Parses documents and flattens `kind: List` (and `*List`) items into objects.
Result<std::vector<SourcedObject>> parseObjects(std::string_view text, const std::string& source);

/// Reads a file (or stdin for "-") completely.
Result<std::string> readFile(const std::string& path);

}  // namespace stateguard
