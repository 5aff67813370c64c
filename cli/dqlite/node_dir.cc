#include "cli/dqlite/node_dir.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "cli/dqlite/node_builder.h"
#include "cli/dqlite/tarball.h"

namespace stateguard::cli::dqlite {
namespace {

namespace fs = std::filesystem;

std::string baseName(const std::string& path) {
  fs::path p(path);
  while (!p.empty() && !p.has_filename() && p.has_parent_path() && p != p.root_path()) {
    p = p.parent_path();
  }
  std::string name = p.filename().string();
  if (name.empty() || name == "." || name == "..") {
    std::error_code ec;
    name = fs::weakly_canonical(fs::absolute(path), ec).filename().string();
  }
  return name.empty() ? path : name;
}

std::string tarballBase(const std::string& path) {
  std::string name = baseName(path);
  for (const char* ext : {".tar.gz", ".tgz", ".tar"}) {
    if (name.size() > std::strlen(ext) && name.ends_with(ext)) {
      return name.substr(0, name.size() - std::strlen(ext));
    }
  }
  return name;
}

std::string permissionHint(int err) {
  return err == EACCES ? " (the backend directory belongs to root: run with sudo)" : "";
}

Result<std::string> readWhole(const fs::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::in);
  if (!in) {
    const int err = errno;
    return makeError("cannot open " + path.string() + ": " + std::strerror(err) +
                     permissionHint(err));
  }
  std::string content;
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (!ec) content.reserve(static_cast<size_t>(size));
  std::array<char, 1 << 16> chunk{};
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    content.append(chunk.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) return makeError("cannot read " + path.string() + ": " + std::strerror(errno));
  return content;
}

std::string movedAside(const std::string& name) {
  return name +
         ": raft moved a segment it found damaged aside under this name; its entries are "
         "not part of the log any more";
}

const char* const kNotBackend =
    " holds no dqlite files (no segments, snapshots, metadata1/2, cluster.yaml): is it a "
    "backend directory? MicroK8s keeps it at /var/snap/microk8s/current/var/kubernetes/backend";

Result<Node> readDirectory(const std::string& path) {
  Node node;
  node.input = path;
  node.name = baseName(path);
  std::error_code ec;
  std::vector<std::string> names;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    const auto status = it->symlink_status(ec);
    if (ec) break;
    const std::string name = it->path().filename().string();
    if (fs::is_regular_file(status) && isDqliteFile(name)) names.push_back(name);
    if (name.rfind("corrupt-", 0) == 0) node.notes.push_back(movedAside(name));
  }
  if (ec) {
    return makeError("cannot list " + path + ": " + ec.message() + permissionHint(ec.value()));
  }
  if (names.empty()) return makeError(path + kNotBackend);
  std::sort(names.begin(), names.end());
  NodeBuilder builder(std::move(node));
  for (const auto& name : names) {
    auto content = readWhole(fs::path(path) / name);
    if (!content.ok()) return makeError(content.error());
    if (auto st = builder.addFile(name, std::move(content).value()); !st.ok()) {
      return makeError(st.error());
    }
  }
  return builder.finish();
}

Result<Node> readArchive(const std::string& path) {
  std::vector<std::string> skipped;
  auto members = listTarball(path, &skipped);
  if (!members.ok()) {
    return makeError(path +
                     " is neither a directory nor a readable tar archive: " + members.error());
  }
  std::set<std::string> dirs;
  for (const auto& m : members.value()) {
    const size_t slash = m.path.rfind('/');
    const std::string name = slash == std::string::npos ? m.path : m.path.substr(slash + 1);
    if (isDqliteFile(name)) dirs.insert(slash == std::string::npos ? "" : m.path.substr(0, slash));
  }
  if (dirs.empty()) return makeError(path + kNotBackend);
  if (dirs.size() > 1) {
    std::string list;
    for (const auto& d : dirs) list += (list.empty() ? "" : ", ") + (d.empty() ? "." : d + "/");
    return makeError(path + " holds dqlite files in several directories (" + list +
                     "): give one node's backend directory per archive");
  }
  Node node;
  node.input = path;
  node.name = tarballBase(path);
  node.tarball = true;
  node.prefix = *dirs.begin();
  const std::string prefix = node.prefix.empty() ? "" : node.prefix + "/";
  for (const auto& s : skipped) node.notes.push_back("archive member skipped: " + s);
  for (const auto& m : members.value()) {
    if (m.path.rfind(prefix + "corrupt-", 0) == 0) {
      node.notes.push_back(movedAside(m.path.substr(prefix.size())));
    }
  }
  NodeBuilder builder(std::move(node));
  auto wanted = [&](const std::string& p) {
    if (p.rfind(prefix, 0) != 0) return false;
    const std::string rest = p.substr(prefix.size());
    return rest.find('/') == std::string::npos && isDqliteFile(rest);
  };
  auto st = readTarball(path, wanted, [&](const std::string& p, std::string content) {
    return builder.addFile(p.substr(prefix.size()), std::move(content));
  });
  if (!st.ok()) return makeError(st.error());
  return builder.finish();
}

}  // namespace

std::string roleName(Role role) {
  switch (role) {
    case Role::kVoter:
      return "voter";
    case Role::kStandBy:
      return "stand-by";
    case Role::kSpare:
      return "spare";
    case Role::kUnknown:
      break;
  }
  return "unknown";
}

Role roleFromDqlite(int64_t value) {
  switch (value) {
    case 0:
      return Role::kVoter;
    case 1:
      return Role::kStandBy;
    case 2:
      return Role::kSpare;
    default:
      return Role::kUnknown;
  }
}

Role roleFromRaft(uint8_t value) {
  switch (value) {
    case 0:
      return Role::kStandBy;
    case 1:
      return Role::kVoter;
    case 2:
      return Role::kSpare;
    default:
      return Role::kUnknown;
  }
}

std::vector<Server> Configuration::voters() const {
  std::vector<Server> out;
  for (const auto& s : servers) {
    if (s.role == Role::kVoter) out.push_back(s);
  }
  return out;
}

const Snapshot* Node::latestSnapshot() const {
  const Snapshot* best = nullptr;
  for (const auto& s : snapshots) {
    if (s.hasData && s.hasMeta && s.dataSize > 0) best = &s;  // sorted: the last one wins
  }
  return best;
}

const LogEntry* Node::entryAt(uint64_t index) const {
  auto it = std::lower_bound(log.begin(), log.end(), index,
                             [](const LogEntry& e, uint64_t i) { return e.index < i; });
  return it != log.end() && it->index == index ? &*it : nullptr;
}

std::string Node::label() const {
  if (info && !info->address.empty()) return name + " (" + info->address + ")";
  return name;
}

const Metadata* Node::currentMetadata() const {
  const bool ok1 = metadata1.present && metadata1.format == 1 && metadata1.version > 0;
  const bool ok2 = metadata2.present && metadata2.format == 1 && metadata2.version > 0;
  if (ok1 && (!ok2 || metadata1.version > metadata2.version)) return &metadata1;
  if (ok2) return &metadata2;
  return nullptr;
}

std::vector<const Problem*> Node::copiedDamage() const {
  std::vector<const Problem*> out;
  for (const auto& p : problems) {
    if (p.inCopiedData) out.push_back(&p);
  }
  return out;
}

Result<Node> readNode(const std::string& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    if (ec && ec.value() == EACCES) {
      return makeError("cannot reach " + path + ": " + ec.message() + permissionHint(EACCES));
    }
    return makeError(path + " does not exist: give a node's backend directory or a .tar.gz of it");
  }
  if (fs::is_directory(status)) return readDirectory(path);
  if (fs::is_regular_file(status)) return readArchive(path);
  return makeError(path + " is neither a directory nor a tar archive");
}

void disambiguateNames(std::vector<Node>& nodes) {
  for (int depth = 1; depth < 8; ++depth) {
    std::map<std::string, int> count;
    for (const auto& n : nodes) ++count[n.name];
    bool clash = false;
    for (auto& n : nodes) {
      if (count[n.name] < 2) continue;
      clash = true;
      fs::path p = fs::absolute(n.input).lexically_normal();
      if (!p.has_filename()) p = p.parent_path();
      std::string name = n.tarball ? tarballBase(p.string()) : p.filename().string();
      fs::path parent = p.parent_path();
      for (int i = 0; i < depth && !parent.empty() && parent != parent.root_path(); ++i) {
        name = parent.filename().string() + "/" + name;
        parent = parent.parent_path();
      }
      n.name = name;
    }
    if (!clash) return;
  }
}

}  // namespace stateguard::cli::dqlite
