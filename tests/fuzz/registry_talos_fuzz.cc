// libFuzzer target: Talos machine config / RegistryMirrorConfig YAML -> parseTalos -> checks.

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
  stateguard::fuzz::checkMirrors(stateguard::registry::parseTalos(text, "fuzz"));
  return 0;
}
