#!/usr/bin/env bash
# stateguard-csi against real upstream CSI drivers, in one run (issue 14):
#  1. forwarded calls (Identity Probe, NodeGetCapabilities) to the CSI hostpath driver v1.15.0
#     made directly, through a no-op byte relay (bench/noop_relay.cc: the floor for any proxy
#     process) and through stateguard-csi, by sgtool (a Go gRPC client, one connection per
#     target, interleaved rounds); reported: added latency at p50 and p99 of the relay and of
#     the proxy, their ratio (target: proxy within 1.5x of the relay), the sidecar's CPU per
#     forwarded call (/proc utime+stime over the calls it forwarded);
#  2. guarded ext4 stages: mountutils-driver (upstream k8s.io/mount-utils FormatAndMount: blkid,
#     mount) on an ext4 loop device, NodeStageVolume + NodeUnstageVolume directly and through
#     stateguard-csi, alternating; reported: the driver's own stage time and the time the guard
#     adds (probe before and after, ledger write with fsync, audit lines).
#
#   bash bench/csi-real-bench.sh [BUILD_DIR]     (default: build; needs root for mounts/loop)
#
# Environment (defaults in brackets):
#   STATEGUARD_CSI_TOOLS [../shared/tools/csi]  where the tools' .xz files are
#   CSI_REAL_CALLS [5000]     calls per method, target and round
#   CSI_REAL_ROUNDS [3]       rounds (each: relay vs direct, then proxy vs direct)
#   CSI_REAL_STAGES [30]      stage+unstage pairs per target
#   CSI_REAL_STRICT=1         exit 1 when the 1.5x target is missed
#   CSI_REAL_KEEP=1           keep the temp dir
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" 2>/dev/null && pwd)" || { echo "csi-real-bench: no build dir ${1:-$ROOT/build}" >&2; exit 1; }
BIN="$BUILD/bin"
TOOLS="${STATEGUARD_CSI_TOOLS:-$ROOT/../shared/tools/csi}"
CALLS="${CSI_REAL_CALLS:-5000}"
ROUNDS="${CSI_REAL_ROUNDS:-3}"
STAGES="${CSI_REAL_STAGES:-30}"

die() { echo "csi-real-bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (the stage phase mounts a loop device)"
for b in stateguard-csi noop-relay; do
  [ -x "$BIN/$b" ] || die "$BIN/$b not built (cmake --build $BUILD --target $b)"
done
# The upstream programs, unpacked into the build folder (never into the source tree).
mkdir -p "$BIN/csi-tools"
for t in hostpathplugin mountutils-driver sgtool; do
  [ -r "$TOOLS/$t.xz" ] || die "$TOOLS/$t.xz not found (set STATEGUARD_CSI_TOOLS)"
  if [ ! -x "$BIN/csi-tools/$t" ] || [ "$TOOLS/$t.xz" -nt "$BIN/csi-tools/$t" ]; then
    xz -dc "$TOOLS/$t.xz" > "$BIN/csi-tools/$t.tmp.$$" && chmod 755 "$BIN/csi-tools/$t.tmp.$$"
    mv "$BIN/csi-tools/$t.tmp.$$" "$BIN/csi-tools/$t"
  fi
done
SGTOOL="$BIN/csi-tools/sgtool"

T="$(mktemp -d "${TMPDIR:-/tmp}/csi-real-bench.XXXXXX")"
PIDS=()
LOOP=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  grep " $T/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" || true; done || true

  [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null || true
  if [ "${CSI_REAL_KEEP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_sock() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done; die "no socket $1"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "csi-real-bench: $(date -u '+%Y-%m-%d %H:%M:%S') UTC, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"

# ---- 1. forwarded calls against the hostpath driver --------------------------------------------
mkdir -p "$T/hp-state" "$T/ledger"
"$BIN/csi-tools/hostpathplugin" --endpoint "unix://$T/hp.sock" --nodeid bench --statedir "$T/hp-state" > "$T/hp.log" 2>&1 &
PIDS+=($!)
wait_sock "$T/hp.sock"
"$BIN/noop-relay" "$T/relay.sock" "$T/hp.sock" 2> "$T/relay.log" &
PIDS+=($!)
"$BIN/stateguard-csi" --csi-address "unix://$T/sg.sock" --driver-address "unix://$T/hp.sock" \
  --ledger-dir "$T/ledger" --device-path-template "{volume_context.device}" \
  --http-endpoint 127.0.0.1:0 --audit-log "$T/audit.log" --node-name bench 2> "$T/sg.log" &
SG=$!
PIDS+=("$SG")
wait_sock "$T/relay.sock"
wait_sock "$T/sg.sock"
HZ="$(getconf CLK_TCK)"

: > "$T/relay.txt"
: > "$T/proxy.txt"
PROXY_CALLS=0
PROXY_TICKS=0
for r in $(seq "$ROUNDS"); do
  "$SGTOOL" bench -direct "unix://$T/hp.sock" -proxy "unix://$T/relay.sock" -methods probe,caps \
    -n "$CALLS" -rounds 1 >> "$T/relay.txt"
  before="$(cpu_ticks "$SG")"
  "$SGTOOL" bench -direct "unix://$T/hp.sock" -proxy "unix://$T/sg.sock" -methods probe,caps \
    -n "$CALLS" -rounds 1 >> "$T/proxy.txt"
  after="$(cpu_ticks "$SG")"
  PROXY_TICKS=$((PROXY_TICKS + after - before))
  PROXY_CALLS=$((PROXY_CALLS + 2 * (CALLS + 500)))  # sgtool warms up with 500 calls per method
  echo "  round $r/$ROUNDS done"
done

# "method=probe ... direct: p50=..us p99=..us ... | proxy: p50=.. p99=.. | p50 +A (x..) p99 +B (x..)"
added() {  # FILE METHOD FIELD(p50|p99) -> median added microseconds
  grep "method=$2 " "$1" | sed -E "s/.* $3 \+([-0-9.]+)us .*/\1/" | median
}
direct_pct() {  # FILE METHOD FIELD -> median direct latency
  grep "method=$2 " "$1" | sed -E "s/.*direct: p50=([0-9.]+)us p99=([0-9.]+)us.*/\1 \2/" |
    awk -v f="$3" '{print (f == "p50") ? $1 : $2}' | median
}
echo
echo "Forwarded calls, hostpath driver v1.15.0 (sgtool, $CALLS calls x $ROUNDS rounds per method and target; medians of the rounds, µs):"
printf '  %-6s %-4s %10s %12s %12s %8s\n' method pct direct "+relay" "+proxy" ratio
FAIL=0
for m in probe caps; do
  for p in p50 p99; do
    d="$(direct_pct "$T/proxy.txt" "$m" "$p")"
    rl="$(added "$T/relay.txt" "$m" "$p")"
    px="$(added "$T/proxy.txt" "$m" "$p")"
    ratio="$(awk -v a="$px" -v b="$rl" 'BEGIN { if (b <= 0) print "n/a"; else printf "%.2f", a / b }')"
    printf '  %-6s %-4s %10s %12s %12s %8s\n' "$m" "$p" "$d" "$rl" "$px" "$ratio"
    if [ "$ratio" = "n/a" ] || awk -v r="$ratio" 'BEGIN { exit !(r > 1.5) }'; then FAIL=1; fi
  done
done
CPU_US="$(awk -v t="$PROXY_TICKS" -v hz="$HZ" -v n="$PROXY_CALLS" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')"
echo "  sidecar CPU per forwarded call: $CPU_US µs ($PROXY_TICKS ticks at $HZ Hz over $PROXY_CALLS calls)"
if [ "$FAIL" = 0 ]; then
  echo "  PASS: the proxy's added latency is within 1.5x of the no-op relay's at p50 and p99"
else
  echo "  FAIL: the proxy's added latency is above 1.5x of the no-op relay's somewhere above"
fi

# ---- 2. guarded ext4 stages through mount-utils -------------------------------------------------
truncate -s 128M "$T/vol.img"
mkfs.ext4 -q -F "$T/vol.img"
LOOP="$(losetup -f --show "$T/vol.img")"
mkdir -p "$T/md-ledger"
env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$BIN/csi-tools/mountutils-driver" --endpoint "unix://$T/md.sock" > "$T/md.log" 2>&1 &
PIDS+=($!)
wait_sock "$T/md.sock"
"$BIN/stateguard-csi" --csi-address "unix://$T/sgm.sock" --driver-address "unix://$T/md.sock" \
  --ledger-dir "$T/md-ledger" --device-path-template "{volume_context.device}" \
  --http-endpoint 127.0.0.1:0 --audit-log "$T/md-audit.log" --node-name bench 2> "$T/sgm.log" &
PIDS+=($!)
wait_sock "$T/sgm.sock"
now_us() { echo $(( $(date +%s%N) / 1000 )); }
one_stage() {  # SOCK -> wall µs of one sgtool stage (process start included), then unstage
  local t0 t1 out
  t0="$(now_us)"
  out="$("$SGTOOL" stage -addr "unix://$1" -vol vol-bench -target "$T/staging" -vctx "device=$LOOP")"
  t1="$(now_us)"
  case "$out" in *code=OK*) ;; *) die "stage through $1: $out" ;; esac
  "$SGTOOL" stage -addr "unix://$1" -vol vol-bench -target "$T/staging" -unstage > /dev/null
  echo $((t1 - t0))
}
one_probe() {  # SOCK -> wall µs of an sgtool call that does nothing (process start + connect)
  local t0 t1
  t0="$(now_us)"
  "$SGTOOL" raw -addr "unix://$1" -method /csi.v1.Identity/Probe -bytes "" > /dev/null
  t1="$(now_us)"
  echo $((t1 - t0))
}
: > "$T/stage-direct.txt"
: > "$T/stage-proxy.txt"
: > "$T/start.txt"
one_stage "$T/md.sock" > /dev/null   # warm-up, and the ledger's first record
one_stage "$T/sgm.sock" > /dev/null
for i in $(seq "$STAGES"); do
  if [ $((i % 2)) = 1 ]; then
    one_stage "$T/md.sock" >> "$T/stage-direct.txt"
    one_stage "$T/sgm.sock" >> "$T/stage-proxy.txt"
  else
    one_stage "$T/sgm.sock" >> "$T/stage-proxy.txt"
    one_stage "$T/md.sock" >> "$T/stage-direct.txt"
  fi
  one_probe "$T/md.sock" >> "$T/start.txt"
done
SD="$(median < "$T/stage-direct.txt")"
SP="$(median < "$T/stage-proxy.txt")"
ST="$(median < "$T/start.txt")"
echo
echo "Guarded ext4 NodeStageVolume, mountutils-driver (mount-utils v0.29.0) on a 128 MiB ext4 loop device, $STAGES stages per target (medians, µs):"
echo "  driver's own stage (blkid + mount):  $(awk -v a="$SD" -v b="$ST" 'BEGIN { printf "%.0f", a - b }')  (wall $SD minus $ST for client start and an empty call)"
echo "  added by stateguard-csi:             $(awk -v a="$SP" -v b="$SD" 'BEGIN { printf "%.0f", a - b }')  (wall through the proxy $SP)"
REFUSED="$(grep -c '"refused"' "$T/md-audit.log" || true)"
echo "  refusals in the audit log: $REFUSED (expected 0)"
[ "$REFUSED" = 0 ] || FAIL=1
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (2 CPUs shared with other work: figures vary run to run)"
if [ "$FAIL" != 0 ] && [ "${CSI_REAL_STRICT:-0}" = 1 ]; then exit 1; fi
exit 0
