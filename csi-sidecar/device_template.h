#pragma once
// --device-path-template: where a volume's block device appears on the node, e.g.
// "/dev/longhorn/{volume_id}" (Longhorn) or "{publish_context.devicePath}" (EBS).

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"

namespace stateguard::csi {

/// What a template may refer to: the volume id and the two string maps of a stage/publish call.
struct DeviceInputs {
  std::string volumeId;
  std::map<std::string, std::string> publishContext;
  std::map<std::string, std::string> volumeContext;
};

class DeviceTemplate {
 public:
  /// Checks the template: placeholders are {volume_id}, {publish_context.KEY} and
  /// {volume_context.KEY}; braces balance; the result is an absolute path. `roots` are the
  /// directories a resolved path must lie under (default {"/dev"}); each must be absolute.
  static Result<DeviceTemplate> parse(const std::string& text,
                                      std::vector<std::string> roots = {"/dev"});

  /// The device path for one call:
  ///  - nullopt when a referenced key is absent (the caller falls back to the post-check);
  ///  - an error when a value would escape: a volume id or value with "/" (unless the
  ///    placeholder starts the template and so is itself a path), "..", NUL or a control
  ///    character, or a result that is not a clean absolute path under one of the roots.
  Result<std::optional<std::string>> resolve(const DeviceInputs& inputs) const;

  const std::string& text() const { return text_; }
  const std::vector<std::string>& roots() const { return roots_; }

 private:
  struct Part {
    enum Kind { kLiteral, kVolumeId, kPublishContext, kVolumeContext } kind;
    std::string value;  ///< the literal text, or the map key
  };
  std::string text_;
  std::vector<Part> parts_;
  std::vector<std::string> roots_;
};

/// True when `path` is absolute and has no empty, "." or ".." component and no NUL.
bool isCleanAbsolutePath(const std::string& path);
/// True when `path` is `root` or inside it (component-wise, not a string prefix).
bool isUnder(const std::string& path, const std::string& root);

}  // namespace stateguard::csi
