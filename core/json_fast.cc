#include "core/json_fast.h"

#include <simdjson.h>

#include <array>

namespace stateguard {
namespace {

/// Where a conversion is in the document, for FieldSkip: the object keys from the root while
/// no array has been entered.
struct SkipPath {
  static constexpr size_t kMax = 3;
  const FieldSkip* skip = nullptr;
  std::array<std::string_view, kMax> keys{};
  size_t size = 0;
};

/// Copies a simdjson element into nlohmann::json; false on a type it cannot represent. Fields
/// `path->skip` names are not copied.
bool convert(simdjson::dom::element e, json& out, size_t depth, SkipPath* path = nullptr) {
  using Type = simdjson::dom::element_type;
  if (depth == 0) return false;
  switch (e.type()) {
    case Type::OBJECT: {
      out = json::object();
      const bool skipping = path != nullptr && path->skip != nullptr && path->size < SkipPath::kMax;
      for (auto field : simdjson::dom::object(e)) {
        if (skipping) {
          path->keys[path->size] = field.key;
          const std::span<const std::string_view> at(path->keys.data(), path->size + 1);
          if ((*path->skip)(at)) continue;
          ++path->size;
          const bool ok = convert(field.value, out[std::string(field.key)], depth - 1, path);
          --path->size;
          if (!ok) return false;
          continue;
        }
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

struct ListPageDecoder::Impl {
  simdjson::dom::parser parser;
  simdjson::dom::array items;
  bool hasItems = false;
};

ListPageDecoder::ListPageDecoder() : impl_(std::make_unique<Impl>()) {}
ListPageDecoder::~ListPageDecoder() = default;

bool ListPageDecoder::parse(std::string_view text, Page& page, std::string& error) {
  page = Page{};
  impl_->hasItems = false;
  simdjson::dom::element root;
  // realloc_if_needed: simdjson reads past the end of its input, so it copies into its padded
  // buffer (kept for the next page).
  if (auto code = impl_->parser.parse(text.data(), text.size(), true).get(root);
      code != simdjson::SUCCESS) {
    error = std::string("not JSON: ") + simdjson::error_message(code);
    return false;
  }
  simdjson::dom::object body;
  if (root.get_object().get(body) != simdjson::SUCCESS) {
    error = "not an object";
    return false;
  }
  std::string_view sv;
  if (body["apiVersion"].get_string().get(sv) == simdjson::SUCCESS) page.apiVersion = sv;
  simdjson::dom::object meta;
  if (body["metadata"].get_object().get(meta) == simdjson::SUCCESS) {
    if (meta["resourceVersion"].get_string().get(sv) == simdjson::SUCCESS)
      page.resourceVersion = sv;
    if (meta["continue"].get_string().get(sv) == simdjson::SUCCESS) page.continueToken = sv;
  }
  simdjson::dom::element items;
  if (body["items"].get(items) == simdjson::SUCCESS && !items.is_null()) {
    if (items.get_array().get(impl_->items) != simdjson::SUCCESS) {
      error = "items is not an array";
      return false;
    }
    impl_->hasItems = true;
    page.itemsIsArray = true;
  }
  return true;
}

bool ListPageDecoder::forEachItem(const FieldSkip& skip,
                                  const std::function<void(json item)>& onItem, size_t maxDepth) {
  if (!impl_->hasItems) return true;
  for (simdjson::dom::element e : impl_->items) {
    json item;
    SkipPath path;
    path.skip = skip ? &skip : nullptr;
    if (!convert(e, item, maxDepth + 1, &path)) return false;
    onItem(std::move(item));
  }
  return true;
}

}  // namespace stateguard
