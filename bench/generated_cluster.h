#pragma once
// The generated cluster of the cache benchmarks (cache-start-bench, watch-churn-bench): Pods and
// claims that look like a real apiserver's (managedFields, status, env, probes, a projected token
// volume); claim c is mounted by Pod c * stride and lives in its namespace.

#include <algorithm>
#include <string>

#include "core/json_yaml.h"

namespace stateguard::bench {

inline json managedFields() {
  return json::array(
      {{{"manager", "kube-controller-manager"},
        {"operation", "Update"},
        {"apiVersion", "v1"},
        {"time", "2026-11-01T10:00:00Z"},
        {"fieldsType", "FieldsV1"},
        {"fieldsV1",
         {{"f:metadata", {{"f:labels", {{".", json::object()}, {"f:app", json::object()}}}}},
          {"f:spec",
           {{"f:containers", {{"k:{\"name\":\"app\"}", {{"f:image", json::object()}}}}}}}}}},
       {{"manager", "kubelet"},
        {"operation", "Update"},
        {"subresource", "status"},
        {"fieldsV1",
         {{"f:status", {{"f:conditions", json::object()}, {"f:podIP", json::object()}}}}}}});
}

/// Claim c is mounted by Pod c * stride (and lives in its namespace).
inline int stride(int pods, int claims) { return claims > 0 ? std::max(1, pods / claims) : 1; }

inline json pod(int i, int claims, int pods) {
  const std::string ns = "team-" + std::to_string(i % 50);
  const std::string app = "app-" + std::to_string(i % 500);
  json volumes = json::array();
  const int s = stride(pods, claims);
  if (i % s == 0 && i / s < claims)
    volumes.push_back(
        {{"name", "data"},
         {"persistentVolumeClaim", {{"claimName", "data-" + std::to_string(i / s)}}}});
  json token = {{"serviceAccountToken", {{"path", "token"}}}};
  volumes.push_back({{"name", "kube-api-access"},
                     {"projected", {{"defaultMode", 420}, {"sources", json::array({token})}}}});
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata",
           {{"name", app + "-7c9f8d6b5-" + std::to_string(i)},
            {"namespace", ns},
            {"uid", "pod-uid-" + std::to_string(i)},
            {"creationTimestamp", "2026-11-01T10:00:00Z"},
            {"labels", {{"app", app}, {"pod-template-hash", "7c9f8d6b5"}}},
            {"ownerReferences",
             {{{"apiVersion", "apps/v1"},
               {"kind", "ReplicaSet"},
               {"name", app + "-7c9f8d6b5"},
               {"uid", "rs-uid"},
               {"controller", true},
               {"blockOwnerDeletion", true}}}},
            {"managedFields", managedFields()}}},
          {"spec",
           {{"nodeName", "node-" + std::to_string(i % 100)},
            {"volumes", volumes},
            {"containers",
             {{{"name", "app"},
               {"image", "registry.example.com/team/app:1." + std::to_string(i % 30) + ".0"},
               {"env", {{{"name", "LOG_LEVEL"}, {"value", "info"}}}},
               {"resources", {{"requests", {{"cpu", "100m"}, {"memory", "128Mi"}}}}},
               {"readinessProbe", {{"httpGet", {{"path", "/ready"}, {"port", 8080}}}}}}}}}},
          {"status",
           {{"phase", "Running"},
            {"podIP", "10.244.0." + std::to_string(i % 250)},
            {"conditions", {{{"type", "Ready"}, {"status", "True"}}}},
            {"containerStatuses",
             {{{"name", "app"}, {"ready", true}, {"restartCount", 0}, {"started", true}}}}}}};
}

}  // namespace stateguard::bench
