#!/usr/bin/env bash
# stateguardctl lint on 10,000 objects (YAML and JSON), side by side with the same run with every
# rule off (the cost of reading the documents alone), on one core. Target: under 1 s for 10,000.
#   bash bench/lint-bench.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
ctl="$build/bin/stateguardctl"
[ -x "$ctl" ] || { echo "lint-bench: $ctl is not built (make build)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$tmp" <<'PY'
import json, sys
out = sys.argv[1]
objs = []
for i in range(10000):
    k = i % 4
    if k == 0:
        objs.append({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"pv-{i}", "labels": {"app": f"a{i%50}"}},
                     "spec": {"capacity": {"storage": "10Gi"}, "persistentVolumeReclaimPolicy": "Retain",
                              "csi": {"driver": "driver.longhorn.io", "volumeHandle": f"pv-{i}"}}})
    elif k == 1:
        objs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"data-{i}", "namespace": f"ns-{i%20}"},
                     "spec": {"storageClassName": "longhorn", "resources": {"requests": {"storage": "10Gi"}}}})
    elif k == 2:
        objs.append({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": f"db-{i}", "namespace": f"ns-{i%20}"},
                     "spec": {"replicas": 3, "selector": {"matchLabels": {"app": f"db-{i}"}},
                              "template": {"metadata": {"labels": {"app": f"db-{i}"}}, "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
                              "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "5Gi"}}}}]}})
    else:
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cfg-{i}", "namespace": f"ns-{i%20}"},
                     "data": {"key": "value " * 8}})
with open(f"{out}/objects.json", "w") as f:
    json.dump({"apiVersion": "v1", "kind": "List", "items": objs}, f)
def y(v, ind=0):
    p = "  " * ind
    if isinstance(v, dict):
        return "".join(f"{p}{k}:\n{y(x, ind+1)}" if isinstance(x, (dict, list)) and x else f"{p}{k}: {json.dumps(x)}\n" for k, x in v.items())
    return "".join(f"{p}-\n{y(x, ind+1)}" if isinstance(x, (dict, list)) else f"{p}- {json.dumps(x)}\n" for x in v)
with open(f"{out}/objects.yaml", "w") as f:
    f.write("---\n".join(y(o) for o in objs))
PY
printf 'rules:\n' > "$tmp/off.yaml"
"$ctl" rules -o json | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print("  %s: \"off\"" % r["id"])' >> "$tmp/off.yaml"

run() {  # label, file, extra args...: best of 5 wall-clock runs on one core, in ms
  local label=$1 file=$2; shift 2
  local best=999999
  for _ in 1 2 3 4 5; do
    local s e
    s=$(date +%s%N)
    local rc=0
    taskset -c 0 "$ctl" lint "$@" "$file" >/dev/null 2>"$tmp/err" || rc=$?
    e=$(date +%s%N)
    if [ "$rc" -gt 1 ]; then echo "lint-bench: lint failed: $(cat "$tmp/err")" >&2; exit 2; fi
    local ms=$(( (e - s) / 1000000 ))
    if [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  printf '%-34s %8d ms\n' "$label" "$best"
  echo "$best" > "$tmp/$label.ms"
}

echo "stateguardctl lint, 10,000 objects, best of 5, pinned to one core ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
run yaml-all-rules "$tmp/objects.yaml"
run yaml-rules-off "$tmp/objects.yaml" --policy "$tmp/off.yaml"
run json-all-rules "$tmp/objects.json"
run json-rules-off "$tmp/objects.json" --policy "$tmp/off.yaml"
for f in yaml json; do
  all=$(cat "$tmp/$f-all-rules.ms"); off=$(cat "$tmp/$f-rules-off.ms")
  verdict=PASS; [ "$all" -lt 1000 ] || verdict=FAIL
  echo "$f: rules add $((all - off)) ms over reading alone; target 10,000 objects under 1 s: $verdict"
done
