#include "csi-sidecar/ledger.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/timeutil.h"
#include "csi-sidecar/digest.h"

namespace stateguard::csi {

using nlohmann::json;

namespace {

constexpr char kPrefix[] = "vol-";
constexpr char kSuffix[] = ".json";
/// Escaped names up to this length are used as they are (the names every release wrote).
constexpr size_t kMaxPlainName = 160;
/// Longer ones keep this much of the escaped name before the digest (4+80+1+64+5 = 154 bytes).
constexpr size_t kDigestNameHead = 84;

std::string errnoText(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

std::string getString(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<FsIdentity> identityFromJson(const json& j, const std::string& where) {
  if (!j.is_object()) return makeError(where + ": a filesystem identity must be an object");
  FsIdentity id;
  id.type = getString(j, "type");
  id.uuid = getString(j, "uuid");
  id.firstSeen = getString(j, "firstSeen");
  id.node = getString(j, "node");
  if (auto it = j.find("sizeBytes"); it != j.end()) {
    if (!it->is_number_unsigned()) {
      return makeError(where + ": sizeBytes must be a non-negative integer");
    }
    id.sizeBytes = it->get<uint64_t>();
  }
  if (id.type.empty()) return makeError(where + ": a filesystem identity needs a type");
  return id;
}

bool fsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

std::string FsIdentity::describe() const {
  std::string out = type;
  if (!uuid.empty()) out += " UUID " + uuid;
  std::string since;
  if (!firstSeen.empty()) since = "first seen " + firstSeen;
  if (!node.empty()) since += (since.empty() ? "" : " ") + std::string("on node ") + node;
  if (!since.empty()) out += " (" + since + ")";
  return out;
}

bool LedgerEntry::record(const FsIdentity& id) {
  if (const FsIdentity* cur = current(); cur && cur->sameAs(id)) return false;
  identities.push_back(id);
  return true;
}

json toJson(const FsIdentity& id) {
  return json{{"type", id.type},
              {"uuid", id.uuid},
              {"sizeBytes", id.sizeBytes},
              {"firstSeen", id.firstSeen},
              {"node", id.node}};
}

json toJson(const LedgerEntry& entry) {
  json ids = json::array();
  for (const FsIdentity& id : entry.identities) ids.push_back(toJson(id));
  json j{{"volumeId", entry.volumeId}, {"pvName", entry.pvName},   {"driver", entry.driver},
         {"device", entry.device},     {"updated", entry.updated}, {"identities", ids}};
  if (entry.quarantine) {
    const Quarantine& q = *entry.quarantine;
    json jq{{"since", q.since}, {"node", q.node}, {"reason", q.reason}};
    // An identity without a type (a hand-written quarantine) is left out, so it reads back.
    if (!q.expected.type.empty()) jq["expected"] = toJson(q.expected);
    if (!q.seen.type.empty()) jq["seen"] = toJson(q.seen);
    j["quarantine"] = jq;
  }
  return j;
}

Result<LedgerEntry> ledgerEntryFromJson(const json& j, const std::string& where) {
  if (!j.is_object()) return makeError(where + ": a ledger entry must be a JSON object");
  LedgerEntry e;
  e.volumeId = getString(j, "volumeId");
  if (e.volumeId.empty()) return makeError(where + ": ledger entry without volumeId");
  e.pvName = getString(j, "pvName");
  e.driver = getString(j, "driver");
  e.device = getString(j, "device");
  e.updated = getString(j, "updated");
  if (auto it = j.find("identities"); it != j.end()) {
    if (!it->is_array()) return makeError(where + ": identities must be a list");
    for (size_t i = 0; i < it->size(); ++i) {
      auto id = identityFromJson((*it)[i], where + ": identities[" + std::to_string(i) + "]");
      if (!id) return makeError(id.error());
      e.identities.push_back(std::move(id).value());
    }
  }
  if (auto it = j.find("quarantine"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return makeError(where + ": quarantine must be an object");
    Quarantine q;
    q.since = getString(*it, "since");
    q.node = getString(*it, "node");
    q.reason = getString(*it, "reason");
    if (auto ex = it->find("expected"); ex != it->end()) {
      auto id = identityFromJson(*ex, where + ": quarantine.expected");
      if (!id) return makeError(id.error());
      q.expected = std::move(id).value();
    }
    if (auto seen = it->find("seen"); seen != it->end()) {
      auto id = identityFromJson(*seen, where + ": quarantine.seen");
      if (!id) return makeError(id.error());
      q.seen = std::move(id).value();
    }
    e.quarantine = std::move(q);
  }
  return e;
}

LedgerEntry mergeEntries(const LedgerEntry& a, const LedgerEntry& b) {
  LedgerEntry out = a;
  if (out.pvName.empty()) out.pvName = b.pvName;
  if (out.driver.empty()) out.driver = b.driver;
  if (out.device.empty()) out.device = b.device;
  if (b.updated > out.updated) out.updated = b.updated;
  for (const FsIdentity& id : b.identities) {
    bool known = std::any_of(out.identities.begin(), out.identities.end(),
                             [&](const FsIdentity& x) { return x.sameAs(id); });
    if (!known) out.identities.push_back(id);
  }
  // RFC 3339 UTC strings of one format sort as text; stable keeps equal stamps in order.
  std::stable_sort(
      out.identities.begin(), out.identities.end(),
      [](const FsIdentity& x, const FsIdentity& y) { return x.firstSeen < y.firstSeen; });
  if (!out.quarantine) out.quarantine = b.quarantine;
  return out;
}

std::string Ledger::legacyFileNameFor(const std::string& volumeId) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out = kPrefix;
  for (unsigned char c : volumeId) {
    if (std::isalnum(c) || c == '.' || c == '_' || c == '-') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out + kSuffix;
}

std::string Ledger::fileNameFor(const std::string& volumeId) {
  std::string name = legacyFileNameFor(volumeId);
  if (name.size() <= kMaxPlainName) return name;
  // Too long for a file name (255 bytes on every Linux filesystem): a readable head of the
  // escaped id, then the id's SHA-256. '~' never occurs in an escaped id, so the two forms
  // cannot collide; the entry inside still names the whole id, and load() checks it.
  size_t head = kDigestNameHead;
  while (head > 6 && (name[head - 1] == '%' || name[head - 2] == '%')) --head;
  return name.substr(0, head) + "~" + sha256Hex(volumeId) + kSuffix;
}

std::string Ledger::pathFor(const std::string& volumeId) const {
  return dir_ + "/" + fileNameFor(volumeId);
}

std::string Ledger::legacyPathFor(const std::string& volumeId) const {
  std::string name = legacyFileNameFor(volumeId);
  // A name longer than this could never have been created: nothing to read there.
  if (name == fileNameFor(volumeId) || name.size() > 255) return "";
  return dir_ + "/" + name;
}

Status Ledger::ensureDir() const {
  struct stat st {};
  if (::stat(dir_.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return makeError("ledger " + dir_ + " is not a directory");
    return Ok{};
  }
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    return makeError(errnoText("cannot create ledger directory", dir_));
  }
  return Ok{};
}

namespace {

Result<std::optional<LedgerEntry>> readEntryFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return std::optional<LedgerEntry>();
    return makeError(errnoText("cannot read ledger file", path));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) {
    return makeError("ledger file " + path +
                     " is not valid JSON; it records what this volume held, so it is not "
                     "ignored: inspect it, then repair or remove it");
  }
  auto entry = ledgerEntryFromJson(j, "ledger file " + path);
  if (!entry) return makeError(entry.error());
  return std::optional<LedgerEntry>(std::move(entry).value());
}

}  // namespace

Result<std::optional<LedgerEntry>> Ledger::load(const std::string& volumeId) const {
  std::string path = pathFor(volumeId);
  auto entry = readEntryFile(path);
  if (entry && !entry.value()) {
    // Written before long ids got digest names (stateguard before issue 14): still read.
    if (std::string legacy = legacyPathFor(volumeId); !legacy.empty()) {
      entry = readEntryFile(legacy);
      path = legacy;
    }
  }
  if (entry && entry.value() && entry.value()->volumeId != volumeId) {
    return makeError("ledger file " + path + " belongs to volume " +
                     shortenId(entry.value()->volumeId) + ", not " + shortenId(volumeId));
  }
  return entry;
}

Status Ledger::store(const LedgerEntry& entry) const {
  if (auto st = ensureDir(); !st) return st;
  const std::string path = pathFor(entry.volumeId);
  // Short whatever the id (the final name may already be near the 255-byte limit); not "vol-*",
  // so list() never reads a half-written one.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = dir_ + "/.tmp-" + std::to_string(::getpid()) + "-" +
                          std::to_string(counter.fetch_add(1)) + kSuffix;
  const std::string text = toJson(entry).dump(2) + "\n";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return makeError(errnoText("cannot write ledger file", tmp));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string err = errnoText("cannot write ledger file", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return makeError(err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    std::string err = errnoText("cannot fsync ledger file", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return makeError(err);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = errnoText("cannot rename ledger file into place:", path);
    ::unlink(tmp.c_str());
    return makeError(err);
  }
  // The entry now lives under its new name: the old one must not shadow it later.
  if (std::string legacy = legacyPathFor(entry.volumeId); !legacy.empty()) {
    ::unlink(legacy.c_str());
  }
  if (!fsyncDir(dir_)) return makeError(errnoText("cannot fsync ledger directory", dir_));
  return Ok{};
}

Result<bool> Ledger::remove(const std::string& volumeId) const {
  bool removed = false;
  for (const std::string& path : {pathFor(volumeId), legacyPathFor(volumeId)}) {
    if (path.empty()) continue;
    if (::unlink(path.c_str()) != 0) {
      if (errno == ENOENT) continue;
      return makeError(errnoText("cannot remove ledger file", path));
    }
    removed = true;
  }
  if (removed) fsyncDir(dir_);
  return removed;
}

Result<std::vector<LedgerEntry>> Ledger::list(std::vector<std::string>* unreadable) const {
  std::vector<LedgerEntry> out;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    return makeError(errnoText("cannot read ledger directory", dir_));
  }
  std::vector<std::string> names;
  while (dirent* de = ::readdir(d)) {
    std::string name = de->d_name;
    if (name.rfind(kPrefix, 0) == 0 && name.size() > sizeof(kSuffix) &&
        name.compare(name.size() - (sizeof(kSuffix) - 1), sizeof(kSuffix) - 1, kSuffix) == 0) {
      names.push_back(name);
    }
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    auto entry = readEntryFile(dir_ + "/" + name);
    if (!entry && unreadable) {
      unreadable->push_back(entry.error());
      continue;
    }
    if (!entry) return makeError(entry.error());
    if (entry.value()) out.push_back(std::move(*entry.value()));
  }
  return out;
}

Result<std::vector<LedgerEntry>> Ledger::findByDevice(const std::string& devicePath) const {
  auto all = list();
  if (!all) return makeError(all.error());
  char buf[PATH_MAX];
  std::string resolved = ::realpath(devicePath.c_str(), buf) ? std::string(buf) : devicePath;
  std::vector<LedgerEntry> out;
  for (LedgerEntry& e : all.value()) {
    if (e.device.empty()) continue;
    bool same = e.device == devicePath;
    if (!same) {
      std::string other = ::realpath(e.device.c_str(), buf) ? std::string(buf) : e.device;
      same = other == resolved;
    }
    if (same) out.push_back(std::move(e));
  }
  return out;
}

}  // namespace stateguard::csi
