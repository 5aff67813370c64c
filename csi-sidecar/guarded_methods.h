#pragma once
// The methods the Guard judges, as gRPC paths. The one list: the proxy guards exactly these, and
// the HTTP/2 front (h2_front.h) sends exactly these to it. Header-only and free of gRPC, so the
// front (and its fuzz target) need nothing else from the proxy.

#include <string_view>

namespace stateguard::csi {

inline constexpr std::string_view kStageMethod = "/csi.v1.Node/NodeStageVolume";
inline constexpr std::string_view kPublishMethod = "/csi.v1.Node/NodePublishVolume";

inline bool isGuardedMethod(std::string_view path) {
  return path == kStageMethod || path == kPublishMethod;
}

}  // namespace stateguard::csi
