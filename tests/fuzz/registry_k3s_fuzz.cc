// libFuzzer target: k3s/RKE2 registries.yaml -> parseK3sRegistries (default endpoint kept and
// disabled) -> checks.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "registry/mirrors.h"
#include "tests/fuzz/registry_fuzz.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stateguard::log::setQuiet(true);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  stateguard::fuzz::checkMirrors(stateguard::registry::parseK3sRegistries(text, "fuzz", false));
  stateguard::fuzz::checkMirrors(stateguard::registry::parseK3sRegistries(text, "fuzz", true));
  return 0;
}
