#!/usr/bin/env bash
# Cache memory per object (issue 15): a realistic cluster state (Pods, claims and PVs as a real
# apiserver returns them, managedFields and last-applied annotations included, about 4 KiB of
# JSON each) loaded by `stateguard-webhook --cluster-state`; prints the raw JSON size per object
# beside the webhook's RSS per object and the time until it listens. Run the same sizes against
# another build with BASELINE_BIN=path/to/stateguard-webhook to compare side by side;
# BASELINE_ARGS adds flags to the baseline's command (BASELINE_BIN=<this build's binary>
# BASELINE_ARGS=--no-scan measures what the background scan costs). The last column is how
# long the first background scan took (from the webhook's log).
#
#   bench/cache-memory-bench.sh [BUILD_DIR] [PODS...]     (default build, 2000 10000)
set -euo pipefail
build=${1:-build}
shift || true
sizes=("${@:-2000 10000}")
read -r -a sizes <<<"${sizes[*]}"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash "$root/certs/gen-certs.sh" --out "$work/certs" >/dev/null

generate() {  # PODS -> $work/state-PODS.json (claims and PVs: one per 5 Pods)
  python3 - "$1" "$work/state-$1.json" <<'PY'
import json, sys
pods, out = int(sys.argv[1]), sys.argv[2]
managed = [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
            "time": "2026-11-01T10:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                         "f:ownerReferences": {".": {}, "k:{\"uid\":\"x\"}": {}}},
                         "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {},
                         "f:env": {}, "f:resources": {}, "f:ports": {}}}}}},
           {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
            "time": "2026-11-01T10:00:05Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:podIP": {}}}}]
items = []
for i in range(pods):
    ns = "team-%d" % (i % 50)
    items.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "app-%d-7c9f8d6b5-%05d" % (i % 500, i), "namespace": ns, "uid": "pod-uid-%08d" % i,
        "resourceVersion": str(100000 + i), "creationTimestamp": "2026-11-01T10:00:00Z",
        "generateName": "app-%d-7c9f8d6b5-" % (i % 500),
        "labels": {"app": "app-%d" % (i % 500), "pod-template-hash": "7c9f8d6b5"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-%d-7c9f8d6b5" % (i % 500),
                             "uid": "rs-uid", "controller": True, "blockOwnerDeletion": True}],
        "managedFields": managed},
      "spec": {"nodeName": "node-%d" % (i % 100), "serviceAccountName": "default", "restartPolicy": "Always",
        "volumes": ([{"name": "data", "persistentVolumeClaim": {"claimName": "data-%d" % (i // 5)}}] if i % 5 == 0 else []) +
                   [{"name": "kube-api-access-%05d" % i, "projected": {"defaultMode": 420, "sources": [
                     {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                     {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
        "containers": [{"name": "app", "image": "registry.example.com/team/app:1.%d.0" % (i % 30),
          "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
          "ports": [{"containerPort": 8080, "protocol": "TCP"}],
          "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
          "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 10},
          "volumeMounts": [{"name": "kube-api-access-%05d" % i, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}]}]},
      "status": {"phase": "Running", "hostIP": "10.0.%d.%d" % (i % 100 // 250, i % 250), "podIP": "10.244.%d.%d" % (i // 250 % 250, i % 250),
        "startTime": "2026-11-01T10:00:01Z", "qosClass": "Burstable",
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": "2026-11-01T10:00:05Z"} for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
        "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0, "image": "registry.example.com/team/app:1.%d.0" % (i % 30),
          "imageID": "registry.example.com/team/app@sha256:" + "ab" * 32, "containerID": "containerd://" + "cd" * 32,
          "started": True, "state": {"running": {"startedAt": "2026-11-01T10:00:04Z"}}}]}})
for c in range(pods // 5):
    ns = "team-%d" % ((c * 5) % 50)
    items.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
        "name": "data-%d" % c, "namespace": ns, "uid": "pvc-uid-%08d" % c, "resourceVersion": str(200000 + c),
        "annotations": {"pv.kubernetes.io/bind-completed": "yes", "volume.kubernetes.io/storage-provisioner": "driver.longhorn.io"},
        "finalizers": ["kubernetes.io/pvc-protection"], "managedFields": managed},
      "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}},
               "storageClassName": "longhorn", "volumeMode": "Filesystem", "volumeName": "pvc-%08d" % c},
      "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"}}})
    items.append({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {
        "name": "pvc-%08d" % c, "uid": "pv-uid-%08d" % c, "resourceVersion": str(300000 + c),
        "annotations": {"pv.kubernetes.io/provisioned-by": "driver.longhorn.io"},
        "finalizers": ["kubernetes.io/pv-protection", "external-attacher/driver-longhorn-io"], "managedFields": managed},
      "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"},
               "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": "data-%d" % c, "namespace": ns, "uid": "pvc-uid-%08d" % c},
               "csi": {"driver": "driver.longhorn.io", "fsType": "ext4", "volumeHandle": "pvc-%08d" % c,
                       "volumeAttributes": {"numberOfReplicas": "3", "staleReplicaTimeout": "30"}},
               "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "longhorn", "volumeMode": "Filesystem"},
      "status": {"phase": "Bound"}})
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(out, "w"))
print(len(items), end="")
PY
}

measure() {  # BINARY STATE [ARGS...] -> "rss_kib seconds scan_ms"
  local bin=$1 state=$2 log=$work/webhook.log
  shift 2
  local start=$(date +%s.%N)
  MALLOC_CONF=${MALLOC_CONF:-background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0} \
    "$bin" --listen 127.0.0.1:0 --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" \
    --cluster-state "$state" --audit-log /dev/null "$@" 2>"$log" &
  local pid=$!
  until grep -q "listening on" "$log" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { echo "webhook exited: $(cat "$log")" >&2; return 1; }
    sleep 0.05
  done
  local ready=$(date +%s.%N)
  sleep "${SETTLE_SECONDS:-3}"  # jemalloc gives freed pages back after its decay time
  local rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  local peak=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  kill $pid; wait $pid 2>/dev/null || true
  local scan=$(sed -n 's/.*background scan: .* object(s), \([0-9]*\) ms.*/\1/p' "$log" | head -1)
  echo "$rss $(echo "$ready - $start" | bc) ${scan:--} $peak"
}

empty=$work/empty.json
echo '{"apiVersion":"v1","kind":"List","items":[]}' >"$empty"
echo "| build | Pods | objects | JSON per object | RSS | RSS per object | peak RSS | until listening | first scan |"
echo "|---|---|---|---|---|---|---|---|---|"
runs=("this|$root/$build/bin/stateguard-webhook|")
[ -n "${BASELINE_BIN:-}" ] && runs+=("baseline${BASELINE_ARGS:+ $BASELINE_ARGS}|$BASELINE_BIN|${BASELINE_ARGS:-}")
for run in "${runs[@]}"; do
  IFS='|' read -r name bin argText <<<"$run"
  read -r -a args <<<"$argText"
  read -r base _ _ _ < <(measure "$bin" "$empty" "${args[@]}")
  for pods in "${sizes[@]}"; do
    [ -f "$work/state-$pods.json" ] || objects=$(generate "$pods")
    objects=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['items']))" "$work/state-$pods.json")
    bytes=$(stat -c %s "$work/state-$pods.json")
    read -r rss secs scan peak < <(measure "$bin" "$work/state-$pods.json" "${args[@]}")
    printf "| %s | %s | %s | %.1f KiB | %.0f MiB | %.2f KiB | %.0f MiB | %.1f s | %s |\n" "$name" \
      "$pods" "$objects" "$(echo "$bytes / $objects / 1024" | bc -l)" "$(echo "$rss / 1024" | bc -l)" \
      "$(echo "($rss - $base) / $objects" | bc -l)" "$(echo "$peak / 1024" | bc -l)" "$secs" \
      "$([ "$scan" = - ] && echo - || echo "$scan ms")"
  done
done
