#include "core/quarantine.h"

#include "core/k8s.h"

namespace stateguard::quarantine {
namespace {

std::string field(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

std::string State::describe() const {
  std::string out = since.empty() ? "" : "since " + since;
  if (!node.empty()) out += (out.empty() ? "on node " : " on node ") + node;
  if (!reason.empty()) out += (out.empty() ? "" : ": ") + reason;
  return out.empty() ? "(the ledger entry gives no time, node or reason)" : out;
}

std::string State::clearCommand() const {
  return "stateguardctl csi ledger clear-quarantine --volume " +
         (volumeId.empty() ? "<volume handle>" : volumeId) +
         " --reason \"<what was recovered>\" --kubeconfig <file>" +
         (node.empty() ? "" : " (on node " + node + ", where the ledger directory is)");
}

std::optional<State> of(const json& pv) {
  auto text = k8s::annotation(pv, kLedgerAnnotation);
  if (!text) return std::nullopt;
  State s;
  s.pv = k8s::name(pv);
  s.volumeId = k8s::str(pv, "/spec/csi/volumeHandle");
  const json entry = json::parse(*text, nullptr, false);
  if (!entry.is_object()) {
    s.unreadable = std::string("annotation ") + kLedgerAnnotation + " of PersistentVolume " + s.pv +
                   " is not a JSON object";
    return s;
  }
  auto q = entry.find("quarantine");
  if (q == entry.end() || q->is_null()) return std::nullopt;
  if (!q->is_object()) {
    s.unreadable = std::string("annotation ") + kLedgerAnnotation + " of PersistentVolume " + s.pv +
                   ": quarantine is not an object";
    return s;
  }
  if (s.volumeId.empty()) s.volumeId = field(entry, "volumeId");
  s.since = field(*q, "since");
  s.node = field(*q, "node");
  s.reason = field(*q, "reason");
  return s;
}

ObjectPtr pvForLonghornVolume(const ClusterState& state, const std::string& volume) {
  if (volume.empty()) return nullptr;
  for (const ObjectPtr& pv : state.list("PersistentVolume")) {
    if (k8s::str(*pv, "/spec/csi/volumeHandle") == volume) return pv;
  }
  return state.get("PersistentVolume", "", volume);
}

}  // namespace stateguard::quarantine
