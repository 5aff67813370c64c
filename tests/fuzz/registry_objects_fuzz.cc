// libFuzzer target: Kubernetes objects carrying mirror configurations (YAML/JSON documents:
// ConfigMaps, Secrets with base64 data, CABPT TalosConfig/TalosConfigTemplate patches,
// TalosControlPlane, Rancher Cluster) -> mirrorsOfObject -> checks, with the Services and Pods
// of the same input as the cluster state of registry-self-pull.

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
  // Services and Pods in the input are the cluster state registry-self-pull looks at.
  std::vector<const json*> services;
  std::vector<const json*> pods;
  for (const auto& doc : docs.value()) {
    if (k8s::kind(doc) == "Service") services.push_back(&doc);
    if (k8s::kind(doc) == "Pod") pods.push_back(&doc);
  }
  const registry::CheckOptions opts = registry::optionsFromParams(json::object());
  for (const auto& doc : docs.value()) {
    const std::string apiVersion = k8s::str(doc, "/apiVersion");
    const auto slash = apiVersion.find('/');
    const std::string group = slash == std::string::npos ? "" : apiVersion.substr(0, slash);
    const auto got = registry::mirrorsOfObject(doc, group, registry::kDefaultConfigLabel);
    fuzz::checkMirrors(got.mirrors);
    for (const auto& f : registry::checkSelfPull(got.mirrors, services, pods, opts)) {
      if (f.message.empty()) std::abort();
    }
  }
  return 0;
}
