#!/usr/bin/env bash
# Admission latency as kube-apiserver sees it: dry-run DELETEs of claims sent to a real
# kube-apiserver, timed without the webhook and with it, side by side in one run, plus the
# apiserver's own apiserver_admission_webhook_admission_duration_seconds. Three cases with the
# webhook: a claim whose PV reclaims with Delete (denied from the cache: no API call), a claim
# whose PV is retained (allowed, so confirmed with one GET from the apiserver first), and a claim
# in a namespace nothing guards (allowed, nothing read). See bench/README.md.
#
#   bash bench/apiserver-bench.sh [BUILD_DIR]       (after `make build`)
#
# Environment: STATEGUARD_K8S_BIN [../shared/tools/k8s-1.34] holds kube-apiserver.xz;
# BENCH_REQUESTS [300] dry-run DELETEs per case and round; BENCH_ROUNDS [3]; BENCH_KEEP [0].
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$repo/$build" ;; esac
requests=${BENCH_REQUESTS:-300}
rounds=${BENCH_ROUNDS:-3}
k8s=${STATEGUARD_K8S_BIN:-$repo/../shared/tools/k8s-1.34}

die() { echo "apiserver-bench.sh: $*" >&2; exit 1; }
for tool in etcd curl openssl python3 xz; do
  command -v "$tool" >/dev/null || die "$tool is not installed (scripts/install-deps.sh)"
done
[ -x "$build/bin/stateguard-webhook" ] || die "$build/bin/stateguard-webhook not found: make build"
[ -s "$k8s/kube-apiserver.xz" ] || die "no kube-apiserver.xz in $k8s (set STATEGUARD_K8S_BIN)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stateguard-apibench.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The apiserver binary is unpacked into the build folder once.
apiserver="$build/k8s-bench/kube-apiserver"
if [ ! -x "$apiserver" ] || [ "$k8s/kube-apiserver.xz" -nt "$apiserver" ]; then
  mkdir -p "$build/k8s-bench"
  xz -dc "$k8s/kube-apiserver.xz" > "$apiserver.tmp" && chmod +x "$apiserver.tmp" && mv "$apiserver.tmp" "$apiserver"
fi

etcd_port=$(freeport); peer_port=$(freeport); api_port=$(freeport)
etcd --data-dir "$tmp/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
  > "$tmp/etcd.log" 2>&1 &
pids+=($!)
openssl genrsa -out "$tmp/sa.key" 2048 2>/dev/null
openssl rsa -in "$tmp/sa.key" -pubout -out "$tmp/sa.pub" 2>/dev/null
admin=$(openssl rand -hex 16); hook=$(openssl rand -hex 16)
{
  echo "$admin,admin,admin,system:masters"
  # The webhook's identity: the name the shipped ClusterRoleBinding's ServiceAccount subject matches.
  echo "$hook,system:serviceaccount:stateguard-system:stateguard-webhook,sg,system:serviceaccounts"
} > "$tmp/tokens.csv"
"$apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" --bind-address 127.0.0.1 \
  --secure-port "$api_port" --cert-dir "$tmp/api-certs" --token-auth-file "$tmp/tokens.csv" \
  --service-account-key-file "$tmp/sa.pub" --service-account-signing-key-file "$tmp/sa.key" \
  --service-account-issuer https://kubernetes.default.svc --authorization-mode Node,RBAC \
  --service-cluster-ip-range 10.96.0.0/12 --endpoint-reconciler-type=none > "$tmp/apiserver.log" 2>&1 &
pids+=($!)
api="https://127.0.0.1:$api_port"
call() { curl -sk -H "Authorization: Bearer $admin" "$@"; }
for _ in $(seq 120); do
  [ "$(call -o /dev/null -w '%{http_code}' "$api/readyz")" = 200 ] && break
  sleep 0.5
done
[ "$(call -o /dev/null -w '%{http_code}' "$api/readyz")" = 200 ] || die "kube-apiserver did not get ready: $tmp/apiserver.log"

apply() {  # apply FILE: create or replace, as the admin
  call -o /dev/null -X POST -H 'Content-Type: application/yaml' --data-binary "@$1" "$2"
}
# The shipped RBAC, the benchmark's objects.
KUBECONFIG="$tmp/admin.kubeconfig"
kubectl_ok=0
if command -v kubectl >/dev/null; then
  kubectl config --kubeconfig "$KUBECONFIG" set-cluster b --server "$api" --insecure-skip-tls-verify=true >/dev/null
  kubectl config --kubeconfig "$KUBECONFIG" set-credentials a --token "$admin" >/dev/null
  kubectl config --kubeconfig "$KUBECONFIG" set-context b --cluster b --user a >/dev/null
  kubectl config --kubeconfig "$KUBECONFIG" use-context b >/dev/null
  kubectl_ok=1
fi
[ "$kubectl_ok" = 1 ] || die "kubectl is needed to install the shipped manifests"
k() { kubectl --kubeconfig "$KUBECONFIG" "$@"; }
k create namespace stateguard-system >/dev/null
k apply -f manifests/base/rbac.yaml >/dev/null
cat > "$tmp/objects.yaml" <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: bench}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-delete}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], persistentVolumeReclaimPolicy: Delete, hostPath: {path: /tmp/none-d}, claimRef: {namespace: bench, name: c-delete}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-retain}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], persistentVolumeReclaimPolicy: Retain, hostPath: {path: /tmp/none-r}, claimRef: {namespace: bench, name: c-retain}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: c-delete, namespace: bench}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, volumeName: pv-delete, storageClassName: ""}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: c-retain, namespace: bench}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, volumeName: pv-retain, storageClassName: ""}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: c-unbound, namespace: bench}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, storageClassName: nothing}
EOF
k apply -f "$tmp/objects.yaml" >/dev/null

# The webhook, with the shipped policy and the webhook's own (shipped-RBAC) identity.
bash certs/gen-certs.sh --out "$tmp/certs" --san IP:127.0.0.1 >/dev/null
cat > "$tmp/webhook.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: b, cluster: {server: "$api", insecure-skip-tls-verify: true}}]
users: [{name: w, user: {token: "$hook"}}]
contexts: [{name: b, context: {cluster: b, user: w}}]
current-context: b
EOF
hook_port=$(freeport)
"$build/bin/stateguard-webhook" --listen "127.0.0.1:$hook_port" --tls-cert "$tmp/certs/tls.crt" \
  --tls-key "$tmp/certs/tls.key" --kubeconfig "$tmp/webhook.kubeconfig" --no-events \
  --policy manifests/base/policy.yaml --audit-log "$tmp/audit.log" > "$tmp/webhook.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [ "$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$hook_port/readyz")" = 200 ] && break
  sleep 0.2
done
[ "$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$hook_port/readyz")" = 200 ] || die "webhook not ready: $tmp/webhook.log"

# The shipped webhook configuration, only clientConfig pointed at the local webhook.
ca=$(base64 -w0 < "$tmp/certs/ca.crt")
python3 - "$repo/manifests/base/validatingwebhookconfiguration.yaml" "$tmp/vwc.yaml" "$hook_port" "$ca" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
client = "clientConfig:\n      url: https://127.0.0.1:%s/validate\n      caBundle: %s" % (sys.argv[3], sys.argv[4])
text, n = re.subn(r"clientConfig:\n      service:\n(        .*\n){4}", client + "\n", text)
assert n == 3, n
open(sys.argv[2], "w").write(text)
EOF

# N dry-run DELETEs of one claim over one keep-alive connection; prints each time in seconds.
deletes() {
  local url="$api/api/v1/namespaces/bench/persistentvolumeclaims/$1?dryRun=All"
  local args=()
  for _ in $(seq "$requests"); do args+=(-o /dev/null -w '%{time_total} %{http_code}\n' "$url"); done
  call -X DELETE "${args[@]}"
}
summary() {  # summary LABEL EXPECTED_CODE < "time code" lines
  python3 -c '
import sys
label, want = sys.argv[1], sys.argv[2]
rows = [l.split() for l in sys.stdin if l.strip()]
bad = [c for _, c in rows if c != want]
t = sorted(float(s) * 1000 for s, _ in rows)
q = lambda p: t[min(len(t) - 1, int(p * len(t)))]
print("%-44s n=%4d  p50 %6.2f ms  p90 %6.2f ms  p99 %6.2f ms  mean %6.2f ms%s" % (
    label, len(t), q(0.5), q(0.9), q(0.99), sum(t) / len(t),
    "  UNEXPECTED HTTP %s" % sorted(set(bad)) if bad else ""))' "$1" "$2"
}

echo "kube-apiserver $("$apiserver" --version 2>/dev/null | awk '{print $2}'), $requests dry-run DELETEs per case, $rounds rounds"
for round in $(seq "$rounds"); do
  echo "round $round"
  k delete validatingwebhookconfiguration stateguard --ignore-not-found >/dev/null
  sleep 1
  deletes c-retain | summary "  no webhook: claim on a Retain PV" 200
  deletes c-delete | summary "  no webhook: claim on a Delete PV" 200
  k apply -f "$tmp/vwc.yaml" >/dev/null
  sleep 1
  deletes c-unbound | summary "  webhook: unbound claim (allowed, no read)" 200
  deletes c-delete | summary "  webhook: Delete PV (denied from the cache)" 403
  deletes c-retain | summary "  webhook: Retain PV (allowed, confirmed live)" 200
done

metrics=$(call "$api/metrics")
echo "apiserver_admission_webhook_admission_duration_seconds (all rounds, the apiserver's own clock):"
printf '%s\n' "$metrics" | python3 -c '
import re, sys
sums, counts = {}, {}
for line in sys.stdin:
    m = re.match(r"apiserver_admission_webhook_admission_duration_seconds_(sum|count)\{(.*)\} (\S+)", line)
    if not m: continue
    labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", m.group(2)))
    key = (labels.get("name"), labels.get("operation"), labels.get("rejected"))
    (sums if m.group(1) == "sum" else counts)[key] = float(m.group(3))
for key in sorted(counts):
    if counts[key]:
        print("  %-28s %-7s rejected=%-5s n=%5d  mean %.2f ms" % (key + (int(counts[key]), 1000 * sums[key] / counts[key])))'
echo "webhook: $(curl -sk "https://127.0.0.1:$hook_port/metrics" | grep -E '^stateguard_live_(confirmations|reads)_total' | tr '\n' ' ')"
