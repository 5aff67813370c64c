#!/usr/bin/env bash
# Device probe benchmark: the in-process probe of stateguard-csi and the format gate
# (stateguard::csi::probeDevice: libblkid + backup superblock / non-zero data search) against
# `blkid -p -s TYPE -s PTTYPE -o export IMAGE` run as a child process, which is what kubernetes
# mount-utils' SafeFormatAndMount does before deciding to run mkfs. Same run, same images,
# alternating calls (build/bin/probe-bench does the timing).
#
#   bash bench/probe-bench.sh [BUILD_DIR]
#
# Images (sparse files in a temp dir, 100 GiB each unless PROBE_BENCH_SIZE says otherwise):
#   ext4-primary-zeroed  mkfs.ext4, then the first 4 KiB (boot block + primary superblock) zeroed
#   xfs-primary-zeroed   mkfs.xfs, then the first 512-byte sector zeroed
#   ext4                 mkfs.ext4, intact
#   xfs                  mkfs.xfs, intact
#   blank                nothing written (the probe's worst case: every search runs to the end)
# Environment: PROBE_BENCH_RUNS (default 20), PROBE_BENCH_SIZE (truncate size, default 100G),
# PROBE_BENCH_KEEP=1 (keep the temp dir).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
RUNS="${PROBE_BENCH_RUNS:-20}"
SIZE="${PROBE_BENCH_SIZE:-100G}"
DRIVER="$BUILD/bin/probe-bench"

die() { echo "probe-bench: $*" >&2; exit 1; }
[ -x "$DRIVER" ] || die "$DRIVER not built (cmake --build $BUILD --target probe-bench)"
for tool in /usr/sbin/mkfs.ext4 /usr/sbin/mkfs.xfs /usr/sbin/blkid; do
  [ -x "$tool" ] || die "$tool not installed (e2fsprogs, xfsprogs, util-linux)"
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/probe-bench.XXXXXX")"
cleanup() { if [ "${PROBE_BENCH_KEEP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi; }
trap cleanup EXIT

img() { truncate -s "$SIZE" "$TMP/$1.img"; echo "$TMP/$1.img"; }
zero() { dd if=/dev/zero of="$1" bs="$2" count=1 conv=notrunc status=none; }
# Lazy init: the superblocks and their backups are the same, the image stays a few MiB on disk.
EXT4_OPTS=(-q -F -E lazy_itable_init=1,lazy_journal_init=1)

echo "== making $SIZE sparse images in $TMP"
e0=$(img ext4-primary-zeroed); mkfs.ext4 "${EXT4_OPTS[@]}" "$e0"; zero "$e0" 4096
x0=$(img xfs-primary-zeroed); mkfs.xfs -q -f "$x0"; zero "$x0" 512
e=$(img ext4); mkfs.ext4 "${EXT4_OPTS[@]}" "$e"
x=$(img xfs); mkfs.xfs -q -f "$x"
b=$(img blank)
du -sh "$TMP" | awk '{print "   on disk: " $1}'
echo "   $(/usr/sbin/blkid --version)"
echo

OUT="$TMP/driver.out"
"$DRIVER" --runs "$RUNS" "$e0" "$x0" "$e" "$x" "$b" | tee "$OUT"
echo

echo "== results ($RUNS runs each, alternating; times in microseconds; $(nproc) CPUs)"
printf '  %-20s %10s %10s %-14s %10s %10s %-28s %7s\n' image probe-best probe-med probe-says \
  blkid-best blkid-med "blkid -p says" "blkid/probe"
grep '^BENCH ' "$OUT" | while read -r _ rest; do
  declare -A f=()
  for kv in $rest; do f[${kv%%=*}]=${kv#*=}; done
  name=$(basename "${f[image]}" .img)
  case "${f[blkid_exit]}" in
    0) verdict="signature (mount)" ;;
    2) verdict="exit 2: unformatted -> mkfs" ;;
    8) verdict="exit 8: ambivalent" ;;
    *) verdict="exit ${f[blkid_exit]}: error" ;;
  esac
  ratio=$(awk -v b="${f[blkid_median_us]}" -v p="${f[probe_median_us]}" 'BEGIN{printf "%.1fx", b/p}')
  printf '  %-20s %10s %10s %-14s %10s %10s %-28s %7s\n' "$name" "${f[probe_best_us]}" \
    "${f[probe_median_us]}" "${f[probe_state]}" "${f[blkid_best_us]}" "${f[blkid_median_us]}" \
    "$verdict" "$ratio"
done
echo

# The targets from the issue, on the image whose primary superblock is gone.
line=$(grep "^BENCH image=$e0 " "$OUT")
state=$(sed -n 's/.* probe_state=\([^ ]*\).*/\1/p' <<<"$line")
pmed=$(sed -n 's/.* probe_median_us=\([^ ]*\).*/\1/p' <<<"$line")
bmed=$(sed -n 's/.* blkid_median_us=\([^ ]*\).*/\1/p' <<<"$line")
bexit=$(sed -n 's/.* blkid_exit=\([^ ]*\).*/\1/p' <<<"$line")
if [ "$state" = data-evidence ] && [ "$bexit" = 2 ]; then
  echo "PASS  ext4 with primary zeroed: probe finds the backup superblock, blkid -p says unformatted"
else
  echo "FAIL  ext4 with primary zeroed: probe $state, blkid -p exit $bexit"
fi
if awk -v p="$pmed" -v b="$bmed" 'BEGIN{exit !(p < b)}'; then
  echo "PASS  probe median ${pmed} us < blkid -p median ${bmed} us on the $SIZE image"
else
  echo "FAIL  probe median ${pmed} us >= blkid -p median ${bmed} us on the $SIZE image"
fi
