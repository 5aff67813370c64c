#include "csi-sidecar/guard.h"

#include <fstream>
#include <sstream>

#include "core/log.h"
#include "core/timeutil.h"
#include "csi-sidecar/digest.h"

namespace stateguard::csi {

using nlohmann::json;

Guard::Guard(GuardConfig config, std::shared_ptr<PvLedger> pv, AuditLog* audit,
             SidecarMetrics* metrics)
    : config_(std::move(config)),
      ledger_(config_.ledgerDir),
      pv_(std::move(pv)),
      audit_(audit),
      metrics_(metrics) {}

std::string Guard::driverName() const {
  std::lock_guard lock(mu_);
  return driverName_;
}

void Guard::setDriverName(std::string name) {
  std::lock_guard lock(mu_);
  if (pv_) pv_->setDriverName(name);
  driverName_ = std::move(name);
}

bool Guard::tryAcquire(const std::string& volumeId) {
  std::lock_guard lock(mu_);
  return busy_.insert(volumeId).second;
}

void Guard::release(const std::string& volumeId) {
  std::lock_guard lock(mu_);
  busy_.erase(volumeId);
}

Result<Guard::History> Guard::loadHistory(VolumeRef& ref) {
  History h;
  auto local = ledger_.load(ref.volumeId);
  if (!local) return makeError(local.error());
  h.entry = std::move(local).value();
  if (h.entry) ref.pvName = h.entry->pvName;
  if (pv_) {
    auto found = pv_->find(ref.volumeId);
    if (!found) {
      h.pvError = found.error();
    } else if (found.value()) {
      ref.pvName = found.value()->pvName;
      if (found.value()->entry) {
        h.entry = h.entry ? mergeEntries(*h.entry, *found.value()->entry) : found.value()->entry;
      }
    }
  }
  return h;
}

Status Guard::storeHistory(const LedgerEntry& entry) {
  Status local = ledger_.store(entry);
  if (!local) return local;
  if (pv_ && !entry.pvName.empty()) return pv_->store(entry.pvName, entry);
  return Ok{};
}

namespace {

/// Every string in `j` longer than 1 KiB shortened (shortenId): whatever a request carries
/// (ids, paths, context values), an audit line stays a line.
void shortenStrings(json& j) {
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    if (s.size() > 1024) j = shortenId(s, 256);
  } else if (j.is_structured()) {
    for (auto& v : j) shortenStrings(v);
  }
}

}  // namespace

void Guard::audit(const std::string& phase, const GuardState& state, const std::string& verdict,
                  const std::string& reason, const std::string& message, const json& extra) {
  if (!audit_) return;
  json record{{"time", nowRfc3339()},
              {"component", "stateguard-csi"},
              {"phase", phase},
              {"method", state.ref.method},
              {"volumeId", shortenId(state.ref.volumeId)},
              {"pv", state.ref.pvName},
              {"node", state.ref.node},
              {"driver", driverName()},
              {"device", state.ref.device},
              {"verdict", verdict},
              {"reason", reason},
              {"message", message}};
  record["probe"] = state.probe ? toJson(*state.probe) : json(nullptr);
  record["ledger"] = state.entry ? toJson(*state.entry) : json(nullptr);
  if (!extra.is_null()) record.update(extra);
  shortenStrings(record);
  audit_->write(record);
}

GuardState Guard::before(const GuardCall& call) {
  GuardState st;
  st.ref = VolumeRef{call.method, call.inputs.volumeId, "", config_.node, ""};
  auto refuse = [&](std::string reason, std::string message, int code = 9) {
    st.decision = Decision{false, std::move(reason), std::move(message), code};
    if (metrics_) metrics_->countRefusal(st.decision.reason);
    audit("before", st, "refused", st.decision.reason, st.decision.message);
    return st;
  };
  if (call.inputs.volumeId.empty()) {
    return refuse("bad-request",
                  "stateguard refused " + call.method + ": the request has no volume_id", 3);
  }
  auto history = loadHistory(st.ref);
  if (!history) {
    return refuse("ledger-unreadable",
                  "stateguard refused " + call.method + " of " + describeVolume(st.ref) + ": " +
                      history.error() +
                      ". Without the volume's history a blank-looking device cannot be trusted.");
  }
  st.entry = history->entry;
  if (!call.fullCheck || !call.mount || call.sharedAccess) {
    st.decision = decideBeforePublish(st.ref, st.entry);
    if (!st.decision.allow) return refuse(st.decision.reason, st.decision.message);
    if (!call.mount) {
      st.decision = Decision{true, "block-volume", "raw block volume: never formatted"};
    } else if (call.sharedAccess && call.fullCheck) {
      st.decision = Decision{true, "multi-node-access",
                             "multi-node access mode: a shared filesystem, not formatted here"};
      audit("before", st, "allowed", st.decision.reason, st.decision.message);
    }
    return st;
  }
  auto device = config_.deviceTemplate.resolve(call.inputs);
  if (!device) {
    return refuse("bad-request",
                  "stateguard refused " + call.method + " of " + describeVolume(st.ref) + ": " +
                      device.error(),
                  3);
  }
  if (device.value()) {
    st.ref.device = *device.value();
    st.probe = probeDevice(st.ref.device, config_.probe);
  }
  st.decision = decideBeforeStage(st.ref, st.probe, st.entry);
  if (st.decision.allow && st.decision.reason == "blank-first-format" &&
      !history->pvError.empty()) {
    return refuse("ledger-unavailable",
                  "stateguard refused " + call.method + " of " + describeVolume(st.ref) +
                      ": the device " + st.ref.device +
                      " reads as blank and this node has no history of the volume, but its "
                      "cluster-wide history could not be read (" +
                      history->pvError +
                      "). A first format waits until the PersistentVolume's ledger can be "
                      "checked; kubelet retries.");
  }
  if (!st.decision.allow) return refuse(st.decision.reason, st.decision.message);

  // Tell the format gate which volume this device belongs to, before the driver can run mkfs.
  if (!st.ref.device.empty()) {
    LedgerEntry e = st.entry.value_or(LedgerEntry{});
    e.volumeId = st.ref.volumeId;
    if (e.pvName.empty()) e.pvName = st.ref.pvName;
    if (e.driver.empty()) e.driver = driverName();
    if (e.device != st.ref.device) {
      e.device = st.ref.device;
      e.updated = nowRfc3339();
      if (auto others = ledger_.findByDevice(st.ref.device); others) {
        for (LedgerEntry& other : others.value()) {
          if (other.volumeId == e.volumeId) continue;
          other.device.clear();  // the path now names this volume's device
          if (Status s = ledger_.store(other); !s) log::warn(s.error());
        }
      }
      if (Status s = ledger_.store(e); !s) {
        return refuse("ledger-unwritable",
                      "stateguard refused " + call.method + " of " + describeVolume(st.ref) + ": " +
                          s.error() +
                          ". The format gate could not tell which volume the device holds.");
      }
    }
    st.entry = e;
  }
  audit("before", st, "allowed", st.decision.reason, st.decision.message);
  return st;
}

std::string Guard::findMountSource(const std::string& target) const {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  auto unescape = [](const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
        out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        out += s[i];
      }
    }
    return out;
  };
  std::string source;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string id, parent, devno, root, mountPoint;
    ss >> id >> parent >> devno >> root >> mountPoint;
    if (unescape(mountPoint) != target) continue;
    std::string field;
    while (ss >> field && field != "-") {
    }
    std::string fstype, src;
    ss >> fstype >> src;
    if (!src.empty() && src[0] == '/') source = unescape(src);  // the last mount wins
  }
  return source;
}

std::optional<std::string> Guard::after(const GuardCall& call, GuardState& st, const Undo& undo) {
  if (!call.fullCheck || !call.mount || call.sharedAccess) return std::nullopt;
  if (st.ref.device.empty()) st.ref.device = findMountSource(call.targetPath);
  if (st.ref.device.empty()) {
    audit("after", st, "allowed", "no-device",
          "no device path resolved and nothing mounted at " + call.targetPath +
              "; the identity could not be checked");
    return std::nullopt;
  }
  const std::optional<ProbeResult> before = std::move(st.probe);
  st.probe = probeDevice(st.ref.device, config_.probe);
  PostStage post =
      decideAfterStage(st.ref, *st.probe, st.entry, nowRfc3339(), before ? &*before : nullptr);
  if (post.action == PostStage::kSkip) {
    audit("after", st, "allowed", "unchecked", post.message);
    return std::nullopt;
  }
  LedgerEntry e = st.entry.value_or(LedgerEntry{});
  e.volumeId = st.ref.volumeId;
  if (e.pvName.empty()) e.pvName = st.ref.pvName;
  if (e.driver.empty()) e.driver = driverName();
  e.device = st.ref.device;
  e.updated = nowRfc3339();
  if (post.action == PostStage::kQuarantine) {
    e.quarantine = Quarantine{e.updated, st.ref.node, "identity changed during " + call.method,
                              post.was, post.seen};
    e.record(post.was);  // a first stage's only history is what the device held just before
    e.record(post.seen);
    st.entry = e;
    if (Status s = storeHistory(e); !s)
      log::error("quarantine of " + e.volumeId + ": " + s.error());
    if (metrics_) metrics_->countQuarantine("identity-changed");
    const bool staged = call.method == "NodeStageVolume";
    const std::string undoCall = staged ? "NodeUnstageVolume" : "NodeUnpublishVolume";
    std::string message = post.message;
    json undone{{"call", undoCall}, {"path", call.targetPath}};
    if (!undo) {
      undone["done"] = false;
      undone["error"] = "no undo configured";
    } else if (std::string failed = undo(call); failed.empty()) {
      undone["done"] = true;
      message += " The driver's " + call.method + " was undone (" + undoCall + "): nothing of " +
                 "the volume stays mounted at " + call.targetPath + ".";
    } else {
      undone["done"] = false;
      undone["error"] = failed;
      message += " Undoing the driver's " + call.method + " failed (" + undoCall + ": " + failed +
                 "): the new filesystem may still be mounted at " + call.targetPath +
                 "; unmount it by hand before anything writes to it.";
    }
    audit("after", st, "quarantined", "identity-changed", message, json{{"undo", undone}});
    return message;
  }
  const bool changed = e.record(post.seen);
  st.entry = e;
  // Stored even when unchanged: the PV annotation may lack what this node knows.
  if (Status s = storeHistory(e); !s) {
    log::warn("ledger of " + e.volumeId + ": " + s.error());
    audit("after", st, "allowed", "record-failed", s.error());
    return std::nullopt;
  }
  if (!post.note.empty()) {
    log::warn("stateguard-csi: " + post.note);
    audit("after", st, "allowed", "uuid-changed-first-stage", post.note);
    return std::nullopt;
  }
  audit("after", st, "allowed", changed ? "recorded" : "unchanged",
        "device holds " + post.seen.describe());
  return std::nullopt;
}

}  // namespace stateguard::csi
