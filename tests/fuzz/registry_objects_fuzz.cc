// libFuzzer target: Kubernetes objects carrying mirror configurations (YAML/JSON documents:
// ConfigMaps, Secrets with base64 data, CABPT TalosConfig/TalosConfigTemplate patches,
// TalosControlPlane, Rancher Cluster) -> mirrorsOfObject -> checks.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/k8s.h"
#include "registry/kube.h"
#include "tests/fuzz/registry_fuzz.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stateguard::log::setQuiet(true);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stateguard;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto docs = parseDocuments(text, "fuzz");
  if (!docs.ok()) return 0;
  for (const auto& doc : docs.value()) {
    const std::string apiVersion = k8s::str(doc, "/apiVersion");
    const auto slash = apiVersion.find('/');
    const std::string group = slash == std::string::npos ? "" : apiVersion.substr(0, slash);
    const auto got = registry::mirrorsOfObject(doc, group, registry::kDefaultConfigLabel);
    fuzz::checkMirrors(got.mirrors);
  }
  return 0;
}
