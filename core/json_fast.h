#pragma once
// A faster JSON reader for the admission hot path: simdjson parses (validating UTF-8 on the way)
// and the result is copied into the nlohmann::json tree every rule reads. About twice as fast as
// json::parse for AdmissionReviews (bench/review-path-bench). Inputs simdjson refuses are left to
// json::parse, whose error messages the webhook reports.

#include <cstddef>
#include <string_view>

#include "core/json_yaml.h"

namespace stateguard {

/// Documents larger than this are left to json::parse, which needs half the memory.
inline constexpr size_t kFastJsonMaxBytes = 256 * 1024;

/// Parses `text` into `out`; false (and `out` untouched) when simdjson cannot, the document
/// nests deeper than `maxDepth`, or it is over kFastJsonMaxBytes.
bool parseJsonFast(std::string_view text, json& out, size_t maxDepth);

}  // namespace stateguard
