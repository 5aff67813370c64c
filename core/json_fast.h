#pragma once
// A faster JSON reader for the admission hot path: simdjson parses (validating UTF-8 on the way)
// and the result is copied into the nlohmann::json tree every rule reads. About twice as fast as
// json::parse for AdmissionReviews (bench/review-path-bench). Inputs simdjson refuses are left to
// json::parse, whose error messages the webhook reports.

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/json_yaml.h"

namespace stateguard {

/// Documents larger than this are left to json::parse, which needs half the memory.
inline constexpr size_t kFastJsonMaxBytes = 256 * 1024;

/// Parses `text` into `out`; false (and `out` untouched) when simdjson cannot, the document
/// nests deeper than `maxDepth`, or it is over kFastJsonMaxBytes.
bool parseJsonFast(std::string_view text, json& out, size_t maxDepth);

/// Says whether a decoder may skip the field at `path` (object keys from the document's root, no
/// array steps; at most 3 deep) without building it: see cacheSkipsField().
using FieldSkip = std::function<bool(std::span<const std::string_view> path)>;

/// Decodes the pages of a list (`{"apiVersion":..,"metadata":{"resourceVersion":..,
/// "continue":..},"items":[...]}`) with simdjson, whatever their size, handing each item over as
/// a tree built without the fields a FieldSkip names (managedFields, most of a Pod). The watch
/// cache keeps one for a whole list: simdjson's buffers, sized for the largest page, are freed
/// with it. Not thread-safe.
class ListPageDecoder {
 public:
  ListPageDecoder();
  ~ListPageDecoder();
  ListPageDecoder(const ListPageDecoder&) = delete;
  ListPageDecoder& operator=(const ListPageDecoder&) = delete;

  /// What a page says besides its items.
  struct Page {
    std::string apiVersion;
    std::string resourceVersion;
    std::string continueToken;
    bool itemsIsArray = false;  ///< false when items is absent or null
  };
  /// Parses `text` (kept by the caller until forEachItem() returns); false and `error` set when
  /// it is not JSON, not an object, or items is neither an array nor null.
  bool parse(std::string_view text, Page& page, std::string& error);
  /// Calls `onItem` with each item of the page parse() accepted (non-objects included, as they
  /// are), skipping the fields `skip` names inside objects; false when an item nests deeper than
  /// `maxDepth`.
  bool forEachItem(const FieldSkip& skip, const std::function<void(json item)>& onItem,
                   size_t maxDepth = 512);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stateguard
