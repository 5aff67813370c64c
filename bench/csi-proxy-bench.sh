#!/usr/bin/env bash
# CSI proxy overhead benchmark: the same CSI calls made to stateguard-test-csi-driver directly and
# through stateguard-csi in front of it, side by side in one run (BUILD/bin/csi-proxy-bench does
# the calls and the timing; this script sets up and tears down).
#
#   bash bench/csi-proxy-bench.sh [BUILD_DIR]      (default: build)
#
# Needs the targets stateguard-csi, stateguard-test-csi-driver and csi-proxy-bench built in
# BUILD_DIR, and mkfs.ext4 (e2fsprogs) for the guarded mount-volume case.
#
# Target (from the issue): the proxy adds under 100 us at p99 to a forwarded call.
#
# Environment (defaults in brackets):
#   CSI_BENCH_CALLS [20000]       sequential calls per target and method
#   CSI_BENCH_ROUNDS [10]         interleaved rounds they are split into
#   CSI_BENCH_WARMUP [2000]       warm-up calls per target and method (not recorded)
#   CSI_BENCH_CONCURRENCY [8]     callers in the load phase
#   CSI_BENCH_SECONDS [3]         seconds per target and load round
#   CSI_BENCH_LOAD_ROUNDS [2]     load rounds (each runs both targets)
#   CSI_BENCH_STAGE_CALLS [100]   guarded NodeStageVolume calls per target on the ext4 volume
#   CSI_BENCH_SIDECAR_ARGS []     more stateguard-csi flags (e.g. "--forwarding grpc")
#                                 (5x as many on the block volume)
#   CSI_BENCH_STRICT=1            exit 1 when the target is missed
#   CSI_BENCH_KEEP=1              keep the temp dir (logs, audit log, ledger)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" 2>/dev/null && pwd)" || { echo "csi-proxy-bench: no build dir ${1:-$ROOT/build}" >&2; exit 1; }
BIN="$BUILD/bin"

die() { echo "csi-proxy-bench: $*" >&2; exit 1; }
for b in stateguard-csi stateguard-test-csi-driver csi-proxy-bench; do
  [ -x "$BIN/$b" ] || die "$BIN/$b not built (cmake --build $BUILD --target $b)"
done
MKFS="$(command -v mkfs.ext4 || echo /usr/sbin/mkfs.ext4)"
[ -x "$MKFS" ] || die "mkfs.ext4 not installed (e2fsprogs)"

T="$(mktemp -d "${TMPDIR:-/tmp}/csi-proxy-bench.XXXXXX")"
DRIVER_PID=""
PROXY_PID=""
BENCH_PID=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  for pid in $BENCH_PID $PROXY_PID $DRIVER_PID; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $BENCH_PID $PROXY_PID $DRIVER_PID; do
    # The sidecar drains for up to 5 s on SIGTERM; do not wait longer than that.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${CSI_BENCH_KEEP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$T/dev" "$T/ledger" "$T/stage"
# The mount volume's device: a small ext4 image (the guard probes it with libblkid before and
# after the driver's stage; the driver's own `blkid -p` finds ext4 too, so nothing is formatted).
truncate -s 64M "$T/dev/bench-ext4"
"$MKFS" -q -F "$T/dev/bench-ext4"
# The block volume's device (the guard does not probe raw block volumes; the driver ignores it).
truncate -s 64M "$T/dev/bench-block"

# wait_for FILE TEXT PID: until FILE contains TEXT (10 s), or PID has died.
wait_for() {
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { cat "$1" >&2; die "process $3 exited before printing '$2'"; }
    sleep 0.1
  done
  cat "$1" >&2
  die "no '$2' in $1 after 10 s"
}

"$BIN/stateguard-test-csi-driver" --endpoint "unix://$T/driver.sock" --device-dir "$T/dev" \
  >"$T/driver.log" 2>&1 &
DRIVER_PID=$!
wait_for "$T/driver.log" "listening on" "$DRIVER_PID"

read -r -a SIDECAR_ARGS <<< "${CSI_BENCH_SIDECAR_ARGS:-}"
"$BIN/stateguard-csi" --csi-address "unix://$T/sg.sock" --driver-address "unix://$T/driver.sock" \
  --ledger-dir "$T/ledger" --device-path-template "$T/dev/{volume_id}" --device-root "$T/dev" \
  --http-endpoint 127.0.0.1:0 --audit-log "$T/audit.log" --node-name bench \
  "${SIDECAR_ARGS[@]}" >"$T/sidecar.log" 2>&1 &
PROXY_PID=$!
wait_for "$T/sidecar.log" "driver is" "$PROXY_PID"

echo "== stateguard-csi (pid $PROXY_PID) in front of stateguard-test-csi-driver (pid $DRIVER_PID)"
echo "   $(nproc) CPUs; temp dir $T ($(df -T "$T" | awk 'NR==2{print $2}'))"
echo

OUT="$T/bench.out"
echo "running csi-proxy-bench (about 40 s with the defaults)"
# In the background, so that a signal reaches the traps at once (bash runs a trap only after the
# foreground command ends).
"$BIN/csi-proxy-bench" --direct "unix://$T/driver.sock" --proxy "unix://$T/sg.sock" \
  --calls "${CSI_BENCH_CALLS:-20000}" --rounds "${CSI_BENCH_ROUNDS:-10}" \
  --warmup "${CSI_BENCH_WARMUP:-2000}" --concurrency "${CSI_BENCH_CONCURRENCY:-8}" \
  --seconds "${CSI_BENCH_SECONDS:-3}" --load-rounds "${CSI_BENCH_LOAD_ROUNDS:-2}" \
  --driver-pid "$DRIVER_PID" --proxy-pid "$PROXY_PID" \
  --stage-dir "$T/stage" --block-volume bench-block --mount-volume bench-ext4 \
  --stage-calls "${CSI_BENCH_STAGE_CALLS:-100}" >"$OUT" 2>&1 &
BENCH_PID=$!
if ! wait "$BENCH_PID"; then
  BENCH_PID=""
  cat "$OUT" >&2
  die "csi-proxy-bench failed"
fi
BENCH_PID=""
cat "$OUT"
echo

# The guarded calls must have gone through the guard: audit lines for the ext4 volume (before +
# after per call) and its identity in the ledger.
audit_before=$(grep -c '"phase":"before"' "$T/audit.log" || true)
audit_after=$(grep -c '"phase":"after"' "$T/audit.log" || true)
refused=$(grep -c '"verdict":"refused"' "$T/audit.log" || true)
echo "audit log: $audit_before before + $audit_after after lines, $refused refusals;" \
  "ledger: $(find "$T/ledger" -mindepth 1 -printf '%f ')"
[ "$refused" = 0 ] || echo "WARN  the guard refused calls: the guarded figures are not the allowed path"

# Target: added p99 of the forwarded calls.
status=0
while read -r method added; do
  if awk -v a="$added" 'BEGIN{exit !(a < 100)}'; then
    echo "PASS  $method: proxy adds ${added} us at p99 (target < 100 us)"
  else
    echo "FAIL  $method: proxy adds ${added} us at p99 (target < 100 us)"
    status=1
  fi
done < <(sed -n 's/^BENCH phase=sequential method=\([^ ]*\) target=added .* added_p99_us=\([^ ]*\).*/\1 \2/p' "$OUT")
other=$(sed -n 's/^BENCH .* other\(_max\)\{0,1\}=\([0-9]*\)%.*/\2/p' "$OUT" | sort -n | tail -1)
if [ -n "$other" ] && [ "$other" -gt 10 ]; then
  echo "WARN  other processes used up to $other% of the CPUs during a phase: re-run on an idle machine"
fi
if [ "${CSI_BENCH_STRICT:-0}" = 1 ]; then exit "$status"; fi
exit 0
