#include "csi-sidecar/format_gate.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "core/timeutil.h"
#include "csi-sidecar/digest.h"

namespace stateguard::csi {

namespace {

constexpr char kGateName[] = "stateguard-format-gate";
constexpr char kDefaultLedgerDir[] = "/var/lib/stateguard/ledger";

struct OptionSpec {
  std::string shortWithValue;           ///< one-letter options that take a value
  std::set<std::string> longWithValue;  ///< long options that take a value (without "--")
};

const OptionSpec& specFor(const std::string& tool) {
  // mke2fs (e2fsprogs misc/mke2fs.c getopt string), mkfs.xfs, mkfs.btrfs, cryptsetup.
  static const OptionSpec kExt{"bdegilmorstCEGIJLMNORTUz", {}};
  static const OptionSpec kXfs{"bcdilLmnprs", {}};
  static const OptionSpec kBtrfs{
      "AblnsmdLROrU",
      {"alloc-start", "byte-count", "leafsize", "nodesize", "sectorsize", "metadata", "data",
       "label", "runtime-features", "features", "rootdir", "uuid", "checksum", "csum",
       "device-uuid", "compress", "subvol"}};
  static const OptionSpec kCryptsetup{"chsloSbdiTtMpIe",
                                      {"cipher",
                                       "hash",
                                       "key-size",
                                       "keyfile-size",
                                       "keyfile-offset",
                                       "new-keyfile-size",
                                       "new-keyfile-offset",
                                       "key-slot",
                                       "key-file",
                                       "master-key-file",
                                       "volume-key-file",
                                       "iter-time",
                                       "timeout",
                                       "tries",
                                       "type",
                                       "label",
                                       "subsystem",
                                       "sector-size",
                                       "uuid",
                                       "header",
                                       "header-backup-file",
                                       "offset",
                                       "skip",
                                       "size",
                                       "align-payload",
                                       "pbkdf",
                                       "pbkdf-memory",
                                       "pbkdf-parallel",
                                       "pbkdf-force-iterations",
                                       "integrity",
                                       "luks2-metadata-size",
                                       "luks2-keyslots-size",
                                       "keyslot-cipher",
                                       "keyslot-key-size",
                                       "priority",
                                       "token-id",
                                       "token-type",
                                       "key-description",
                                       "label",
                                       "debug-json",
                                       "resilience",
                                       "hotzone-size",
                                       "reduce-device-size",
                                       "device-size",
                                       "json-file"}};
  if (tool == "mkfs.xfs") return kXfs;
  if (tool == "mkfs.btrfs") return kBtrfs;
  if (tool == "cryptsetup") return kCryptsetup;
  return kExt;
}

/// Operands of a getopt-style command line.
Result<std::vector<std::string>> operands(const std::string& tool,
                                          const std::vector<std::string>& args) {
  const OptionSpec& spec = specFor(tool);
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      out.insert(out.end(), args.begin() + static_cast<long>(i) + 1, args.end());
      break;
    }
    if (a.rfind("--", 0) == 0) {
      std::string name = a.substr(2);
      if (name.find('=') != std::string::npos) continue;
      if (spec.longWithValue.count(name)) {
        if (i + 1 >= args.size()) return makeError(tool + ": option " + a + " needs a value");
        ++i;
      }
      continue;
    }
    if (a.size() > 1 && a[0] == '-') {
      for (size_t j = 1; j < a.size(); ++j) {
        if (spec.shortWithValue.find(a[j]) != std::string::npos) {
          if (j + 1 == a.size()) {
            if (i + 1 >= args.size()) {
              return makeError(tool + ": option -" + std::string(1, a[j]) + " needs a value");
            }
            ++i;
          }
          break;  // the rest of this word is the value
        }
      }
      continue;
    }
    out.push_back(a);
  }
  return out;
}

void auditLine(const std::string& ledgerDir, const std::string& tool, const std::string& device,
               const GateVerdict& v, const ProbeResult* probe) {
  nlohmann::json record{{"time", nowRfc3339()},
                        {"component", kGateName},
                        {"tool", tool},
                        {"device", device},
                        {"verdict", v.allow ? "allowed" : "refused"},
                        {"reason", v.reason},
                        {"message", v.message}};
  if (probe) record["probe"] = toJson(*probe);
  std::string line = record.dump() + "\n";
  int fd = ::open((ledgerDir + "/format-gate-audit.log").c_str(),
                  O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;  // best effort: stderr has the verdict too
  ssize_t n = ::write(fd, line.data(), line.size());
  (void)n;
  ::close(fd);
}

std::string selfExe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  return std::string(buf, static_cast<size_t>(n));
}

std::string resolved(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : "";
}

}  // namespace

const std::vector<std::string>& gatedTools() {
  static const std::vector<std::string> kTools = {"mkfs.ext4", "mkfs.ext3",  "mkfs.ext2",
                                                  "mkfs.xfs",  "mkfs.btrfs", "cryptsetup"};
  return kTools;
}

Result<std::vector<std::string>> targetDevices(const std::string& tool,
                                               const std::vector<std::string>& args) {
  auto ops = operands(tool, args);
  if (!ops) return ops;
  std::vector<std::string> out;
  if (tool == "cryptsetup") {
    // The action is the first operand, but an option value this list does not know would come
    // first: look for luksFormat among all operands (only luksFormat writes a header).
    auto action = std::find(ops->begin(), ops->end(), "luksFormat");
    if (action == ops->end()) return out;
    if (action + 1 == ops->end()) return makeError("cryptsetup luksFormat: no device given");
    out.push_back(*(action + 1));
  } else if (tool == "mkfs.btrfs") {
    out = ops.value();
  } else if (!ops->empty()) {
    out.push_back(ops->front());  // mke2fs DEVICE [FS-SIZE]; mkfs.xfs DEVICE
  }
  return out;
}

GateVerdict judgeFormat(const std::string& tool, const std::string& device,
                        const ProbeResult& probe, const Result<std::vector<LedgerEntry>>& entries) {
  const std::string head = "stateguard-format-gate refused `" + tool + "` on " + device + ": ";
  const std::string tail =
      " Nothing was formatted; the driver reports the failure and kubelet retries.";
  if (!entries) {
    return {false, "ledger-unreadable",
            head + entries.error() +
                ". Without the ledger the gate cannot know whether this "
                "device held a filesystem." +
                tail};
  }
  for (const LedgerEntry& e : entries.value()) {
    if (e.quarantine) {
      return {false, "quarantined",
              head + "volume " + shortenId(e.volumeId) + " is quarantined since " +
                  e.quarantine->since + " (" + e.quarantine->reason + ")." + tail};
    }
    if (const FsIdentity* held = e.current()) {
      return {false, "ledger-held",
              head + "the ledger says volume " + shortenId(e.volumeId) + " on this device held " +
                  held->describe() + "; the device now shows " + probe.summary() +
                  ". A volume that held a filesystem is never formatted again automatically: "
                  "check the storage backend; to start the volume empty on purpose, run "
                  "`stateguardctl csi ledger forget --volume " +
                  shortenId(e.volumeId) + " --reason ...` first." + tail};
    }
  }
  switch (probe.state) {
    case ProbeState::kBlank:
      return {true, "blank-never-formatted", "blank device, no filesystem in its history"};
    case ProbeState::kFilesystem:
      return {false, "not-blank",
              head + "the device holds " + probe.summary() +
                  ". The driver's own probe must have failed for a moment (device missing, I/O "
                  "error, udev not done); formatting would destroy that filesystem." +
                  tail};
    case ProbeState::kDataEvidence: {
      std::string what =
          probe.evidence.empty() ? probe.summary() : describeEvidence(probe.evidence.front());
      return {false, "data-evidence",
              head + "no filesystem signature, but the device holds data (" + what +
                  "). Formatting would destroy it." + tail};
    }
    case ProbeState::kUnknown:
      return {false, probe.ambivalent ? "ambivalent" : "device-unknown",
              head + "the device cannot be verified as blank (" + probe.summary() + ")." + tail};
  }
  return {false, "device-unknown", head + "internal error" + tail};
}

std::string findRealTool(const std::string& tool, const std::string& searchPath,
                         const std::string& selfPath) {
  const std::string self = resolved(selfPath);
  std::stringstream ss(searchPath);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + tool;
    if (::access(candidate.c_str(), X_OK) != 0) continue;
    std::string real = resolved(candidate);
    if (real.empty() || real == self) continue;
    if (real.size() >= sizeof(kGateName) - 1 &&
        real.compare(real.size() - (sizeof(kGateName) - 1), std::string::npos, kGateName) == 0) {
      continue;  // another copy of the gate
    }
    return candidate;
  }
  return "";
}

Status installGate(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return makeError("cannot create " + dir + ": " + std::strerror(errno));
  }
  const std::string self = selfExe();
  std::ifstream in(self, std::ios::binary);
  if (!in) return makeError("cannot read " + self);
  const std::string target = dir + "/" + kGateName;
  const std::string tmp = target + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << in.rdbuf();
    if (!out) return makeError("cannot write " + tmp + ": " + std::strerror(errno));
  }
  if (::chmod(tmp.c_str(), 0755) != 0 || ::rename(tmp.c_str(), target.c_str()) != 0) {
    return makeError("cannot install " + target + ": " + std::strerror(errno));
  }
  for (const std::string& tool : gatedTools()) {
    const std::string link = dir + "/" + tool;
    ::unlink(link.c_str());
    if (::symlink(kGateName, link.c_str()) != 0) {
      return makeError("cannot link " + link + ": " + std::strerror(errno));
    }
  }
  return Ok{};
}

int formatGateMain(int argc, char** argv) {
  std::string name = argc > 0 ? argv[0] : kGateName;
  if (size_t slash = name.rfind('/'); slash != std::string::npos) name = name.substr(slash + 1);
  std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);

  if (name == kGateName) {
    if (args.size() == 1 && args[0] == "--version") {
      std::cout << kGateName << " " << STATEGUARD_VERSION << "\n";
      return 0;
    }
    if (args.size() == 2 && args[0] == "install") {
      if (Status s = installGate(args[1]); !s) {
        std::cerr << kGateName << ": " << s.error() << "\n";
        return 2;
      }
      std::cout << kGateName << ": installed into " << args[1] << " as";
      for (const std::string& t : gatedTools()) std::cout << " " << t;
      std::cout << "\n";
      return 0;
    }
    std::cerr << "usage: " << kGateName << " install DIR | --version\n"
              << "  Copies the gate into DIR and links mkfs.ext4, mkfs.ext3, mkfs.ext2, mkfs.xfs,\n"
              << "  mkfs.btrfs and cryptsetup to it. Put DIR first on the CSI driver's PATH and\n"
              << "  set STATEGUARD_LEDGER_DIR to the ledger directory stateguard-csi uses.\n";
    return args.empty() || args[0] == "--help" ? 0 : 2;
  }

  bool known = false;
  for (const std::string& t : gatedTools()) known = known || t == name;
  if (!known) {
    std::cerr << kGateName << ": started as \"" << name << "\", which it does not gate\n";
    return 2;
  }
  const char* envPath = std::getenv("STATEGUARD_REAL_PATH");
  const char* path = std::getenv("PATH");
  std::string search =
      envPath && *envPath ? envPath : (path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  const std::string real = findRealTool(name, search, selfExe());
  if (real.empty()) {
    std::cerr << kGateName << ": cannot find the real " << name << " on " << search
              << " (only the gate itself)\n";
    return 127;
  }
  const char* envLedger = std::getenv("STATEGUARD_LEDGER_DIR");
  const std::string ledgerDir = envLedger && *envLedger ? envLedger : kDefaultLedgerDir;

  auto devices = targetDevices(name, args);
  if (!devices) {
    std::cerr << kGateName << ": refused " << name << ": " << devices.error() << "\n";
    return 1;
  }
  Ledger ledger(ledgerDir);
  for (const std::string& device : devices.value()) {
    ProbeResult probe = probeDevice(device);
    GateVerdict v = judgeFormat(name, device, probe, ledger.findByDevice(device));
    auditLine(ledgerDir, name, device, v, &probe);
    if (!v.allow) {
      std::cerr << v.message << "\n";
      return 1;
    }
  }
  std::vector<char*> realArgv(argv, argv + argc);
  realArgv.push_back(nullptr);
  ::execv(real.c_str(), realArgv.data());
  std::cerr << kGateName << ": cannot run " << real << ": " << std::strerror(errno) << "\n";
  return 126;
}

}  // namespace stateguard::csi
