#pragma once
// stateguard-format-gate: installed into the CSI driver's container, first on its PATH, as
// mkfs.ext4, mkfs.ext3, mkfs.xfs, mkfs.btrfs and cryptsetup. mount-utils runs `mkfs.<fs>` through
// PATH, so the gate sees the very moment of formatting: it re-probes the device, consults the
// ledger, and runs the real tool only for a verifiably blank device that never held a
// filesystem. Every argument reaches the real tool unchanged.

#include <string>
#include <vector>

#include "core/result.h"
#include "csi-sidecar/ledger.h"
#include "csi-sidecar/probe.h"

namespace stateguard::csi {

/// The names the gate answers to (links created by `stateguard-format-gate install DIR`).
const std::vector<std::string>& gatedTools();

/// The devices a formatting command would write to, from its arguments (argv without argv[0]):
/// mke2fs and mkfs.xfs take one device (the first operand), mkfs.btrfs every operand,
/// `cryptsetup luksFormat` the operand after the action. An empty list means the command formats
/// nothing (`mkfs.ext4 -V`, `cryptsetup status x`): it runs unchecked. An error when the options
/// cannot be read (an option missing its value).
Result<std::vector<std::string>> targetDevices(const std::string& tool,
                                               const std::vector<std::string>& args);

struct GateVerdict {
  bool allow = false;
  std::string reason;   ///< blank-never-formatted, not-blank, device-unknown, ledger-held, ...
  std::string message;  ///< printed on stderr for the driver's log (and kubelet's event)
};

/// The gate's judgement of one device: blank by the probe, and no ledger entry for the device
/// that ever held a filesystem or is quarantined.
GateVerdict judgeFormat(const std::string& tool, const std::string& device,
                        const ProbeResult& probe, const Result<std::vector<LedgerEntry>>& entries);

/// The real program for `tool`: the first match on `searchPath` (colon-separated) that is not
/// this gate (compared after resolving links); "" when there is none.
std::string findRealTool(const std::string& tool, const std::string& searchPath,
                         const std::string& selfPath);

/// `stateguard-format-gate install DIR`: copies the running binary into DIR and links each
/// gated tool name to it.
Status installGate(const std::string& dir);

/// main(): dispatch on argv[0]'s base name.
int formatGateMain(int argc, char** argv);

}  // namespace stateguard::csi
