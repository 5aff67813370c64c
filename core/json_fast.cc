#include "core/json_fast.h"

#include <simdjson.h>

namespace stateguard {
namespace {

/// Copies a simdjson element into nlohmann::json; false on a type it cannot represent.
bool convert(simdjson::dom::element e, json& out, size_t depth) {
  using Type = simdjson::dom::element_type;
  if (depth == 0) return false;
  switch (e.type()) {
    case Type::OBJECT: {
      out = json::object();
      for (auto field : simdjson::dom::object(e)) {
        // Later duplicates win, as with json::parse.
        if (!convert(field.value, out[std::string(field.key)], depth - 1)) return false;
      }
      return true;
    }
    case Type::ARRAY: {
      out = json::array();
      const simdjson::dom::array items(e);
      // Exact size: growing by doubling would hold up to twice the nodes, and 1.5 old + new
      // copies while it moves (a 3 MiB array of zeros is 1.5 million 16-byte nodes).
      out.get_ref<json::array_t&>().reserve(items.size());
      for (auto item : items) {
        out.push_back(nullptr);
        if (!convert(item, out.back(), depth - 1)) return false;
      }
      return true;
    }
    case Type::STRING:
      out = std::string(std::string_view(e));
      return true;
    case Type::INT64:
      out = static_cast<int64_t>(e);
      return true;
    case Type::UINT64:
      out = static_cast<uint64_t>(e);
      return true;
    case Type::DOUBLE:
      out = static_cast<double>(e);
      return true;
    case Type::BOOL:
      out = static_cast<bool>(e);
      return true;
    case Type::NULL_VALUE:
      out = nullptr;
      return true;
  }
  return false;
}

}  // namespace

bool parseJsonFast(std::string_view text, json& out, size_t maxDepth) {
  // Memory, not speed, decides above the limit: simdjson's tape takes 16 bytes per number and
  // 4 per structural character on top of the tree it is copied into (a 3 MiB array of zeros
  // peaked at 63 MiB this way, 32 MiB through json::parse), and the thread's parser keeps its
  // buffers sized for the largest document it has seen.
  if (text.size() > kFastJsonMaxBytes) return false;
  // One parser per thread: it keeps its buffers between documents.
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element root;
  // realloc_if_needed: simdjson reads up to SIMDJSON_PADDING bytes past the end, so it copies the
  // text into a padded buffer of its own first (a memcpy; the buffer is kept between documents).
  if (parser.parse(text.data(), text.size(), true).get(root) != simdjson::SUCCESS) return false;
  json result;
  if (!convert(root, result, maxDepth + 1)) return false;
  out = std::move(result);
  return true;
}

}  // namespace stateguard
