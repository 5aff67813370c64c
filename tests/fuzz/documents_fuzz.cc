// libFuzzer target: cluster-state / manifest text (JSON or multi-document YAML) through
// parseObjects, then into an ObjectStore as --cluster-state and stateguardctl load it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/cluster_state.h"
#include "core/json_yaml.h"
#include "core/log.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stateguard::log::setQuiet(true);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stateguard;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto objects = parseObjects(text, "fuzz");
  if (objects.ok()) {
    for (const auto& o : objects.value()) {
      // What the CLI prints for an object; replace keeps invalid UTF-8 from YAML printable.
      (void)o.object.dump(-1, ' ', false, json::error_handler_t::replace);
    }
  }
  auto store = loadClusterStateText(text, "fuzz");
  if (store.ok()) {
    for (const auto& kind : watchedKinds()) (void)store.value()->list(kind.kind);
  }
  return 0;
}
