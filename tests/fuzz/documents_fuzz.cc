// libFuzzer target: cluster-state / manifest text (JSON or multi-document YAML) through
// parseObjects, then into an ObjectStore as --cluster-state and stateguardctl load it; the backup
// lookups of `stateguardctl backups` on that store, and lint's readers of raw S3 lifecycle
// configurations and kops Cluster specs on every document.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/backups.h"
#include "core/cluster_state.h"
#include "core/json_yaml.h"
#include "core/log.h"
#include "webhook/rules/backup-lifecycle/lifecycle.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stateguard::log::setQuiet(true);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stateguard;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto objects = parseObjects(text, "fuzz");
  if (objects.ok()) {
    for (const auto& o : objects.value()) {
      // What the CLI prints for an object; replace keeps invalid UTF-8 from YAML printable.
      (void)o.object.dump(-1, ' ', false, json::error_handler_t::replace);
      const json& doc = o.object;
      (void)rules::lifecycle::kopsControlPaths(doc);
      if (doc.is_object() && doc.contains("Rules")) {
        (void)rules::lifecycle::judge(rules::lifecycle::fromAwsJson(doc["Rules"]), json(),
                                      {"fuzz", "Rules", "fuzz"},
                                      rules::lifecycle::protectedPaths(json::object()), "");
      }
    }
  }
  std::vector<ResourceKind> kinds = watchedKinds();
  for (const auto& k : backupScheduleKinds()) kinds.push_back(k);
  auto store = loadClusterStateText(text, "fuzz", kinds);
  if (store.ok()) {
    for (const auto& kind : kinds) (void)store.value()->list(kind.storeKey());
    for (const auto& pvc : store.value()->list("PersistentVolumeClaim")) {
      (void)backups::forClaim(*store.value(), *pvc);
      (void)backups::retentionFor(*store.value(), *pvc);
    }
    (void)backups::etcdSnapshots(*store.value());
  }
  return 0;
}
