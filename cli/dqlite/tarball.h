#pragma once
// Reading a node's backend directory from a tar archive (.tar.gz, .tgz or plain .tar) in memory:
// nothing is extracted to disk, member paths are only names (never opened, never followed).

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/result.h"

namespace stateguard::cli::dqlite {

/// One regular file in an archive: its normalised path ("a/b", no "./") and size.
struct TarMember {
  std::string path;
  uint64_t size = 0;
};

/// The regular files of an archive, in archive order. Members whose path is absolute or climbs
/// with ".." are left out and named in `skipped`.
Result<std::vector<TarMember>> listTarball(const std::string& file,
                                           std::vector<std::string>* skipped = nullptr);

/// Calls `visit` with the content of every regular file whose normalised path `wanted` accepts,
/// one member in memory at a time. Stops at the first error `visit` returns.
Status readTarball(
    const std::string& file, const std::function<bool(const std::string&)>& wanted,
    const std::function<Status(const std::string& path, std::string content)>& visit);

}  // namespace stateguard::cli::dqlite
