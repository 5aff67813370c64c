#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and runs each one for
# SECONDS/N seconds (N targets) over a temporary copy of tests/fuzz/corpus/ (the source corpus is never
# written). Fails on any crash, leak, timeout, sanitizer report or out-of-memory.
#
#   tests/fuzz/run-fuzzers.sh [SECONDS]      (default 60; `make fuzz` passes FUZZ_SECONDS)
#
# Environment: BUILD_DIR (default build-fuzz), JOBS (default nproc), FUZZ_TARGETS (default
# every target: review_decoder_fuzz documents_fuzz policy_fuzz http_parser_fuzz csi_inputs_fuzz
# csi_front_fuzz csi_front_driver_fuzz registry_*_fuzz),
# FUZZ_KEEP_GOING=1 (fork mode: keep fuzzing
# after a finding to collect every distinct one; still fails at the end). Crash inputs are kept
# in $BUILD_DIR/artifacts/, full logs in $BUILD_DIR/logs/. Reproduce one with
# `$BUILD_DIR/bin/<target> $BUILD_DIR/artifacts/<file>`.
set -euo pipefail

seconds=${1:-60}
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [SECONDS]   (total fuzzing time, split over the targets)" >&2
  exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${BUILD_DIR:-$root/build-fuzz}
case "$build" in /*) ;; *) build=$root/$build ;; esac
jobs=${JOBS:-$(nproc)}
read -r -a targets <<<"${FUZZ_TARGETS:-review_decoder_fuzz documents_fuzz policy_fuzz http_parser_fuzz csi_inputs_fuzz csi_front_fuzz csi_front_driver_fuzz registry_talos_fuzz registry_hosts_toml_fuzz registry_k3s_fuzz registry_crio_fuzz registry_objects_fuzz}"

cc=${CC:-clang}
cxx=${CXX:-clang++}
for tool in "$cc" "$cxx"; do
  command -v "$tool" >/dev/null || {
    echo "run-fuzzers.sh: $tool not found (apt-get install clang libclang-rt-dev)" >&2
    exit 1
  }
done

echo "== configuring $build (clang, STATEGUARD_FUZZ=ON)"
mkdir -p "$build"
CC=$cc CXX=$cxx cmake -S "$root" -B "$build" -DSTATEGUARD_FUZZ=ON -DSTATEGUARD_BUILD_TESTS=OFF \
  >"$build/configure.log" 2>&1 || {
  cat "$build/configure.log" >&2
  exit 1
}
echo "== building (all targets, -j$jobs)"
cmake --build "$build" -j "$jobs" >"$build/build.log" 2>&1 || {
  grep -E -B2 -A12 'error:|Error [0-9]' "$build/build.log" | head -80 >&2
  echo "run-fuzzers.sh: build failed, see $build/build.log" >&2
  exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/stateguard-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$build/artifacts" "$build/logs"

per=$((seconds / ${#targets[@]}))
[ "$per" -ge 1 ] || per=1

# UBSan findings count as crashes; leaks are on by default with ASan.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

failed=()
summary=()
for target in "${targets[@]}"; do
  case "$target" in
    review_decoder_fuzz) corpus=review max_len=4194304 ;;  # over kMaxReviewBytes (3 MiB)
    documents_fuzz) corpus=documents max_len=262144 ;;
    policy_fuzz) corpus=policy max_len=65536 ;;
    csi_inputs_fuzz) corpus=csi max_len=65536 ;;
    registry_talos_fuzz) corpus=registry-talos max_len=65536 ;;
    registry_hosts_toml_fuzz) corpus=registry-hosts-toml max_len=65536 ;;
    registry_k3s_fuzz) corpus=registry-k3s max_len=65536 ;;
    registry_crio_fuzz) corpus=registry-crio max_len=65536 ;;
    registry_objects_fuzz) corpus=registry-objects max_len=262144 ;;
    *) echo "run-fuzzers.sh: unknown target $target" >&2; exit 2 ;;
  esac
  mkdir -p "$work/$corpus"
  cp -R "$root/tests/fuzz/corpus/$corpus/." "$work/$corpus/"
  log=$build/logs/$target.log
  echo "== $target: ${per}s over corpus/$corpus (max_len $max_len)"
  mode=()
  if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
    mode=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  fi
  before=$(find "$build/artifacts" -name "$target-*" | wc -l)
  rc=0
  "$build/bin/$target" "$work/$corpus" "${mode[@]}" \
    -max_total_time="$per" -timeout=10 -max_len="$max_len" -rss_limit_mb=4096 \
    -print_final_stats=1 -print_funcs=0 -artifact_prefix="$build/artifacts/$target-" >"$log" 2>&1 || rc=$?
  found=$(($(find "$build/artifacts" -name "$target-*" | wc -l) - before))
  last=$(grep -E '^#[0-9]+:?[[:space:]]' "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  [ -n "$rate" ] || rate=$(sed -n 's/.*exec\/s:\{0,1\} \([0-9]*\).*/\1/p' <<<"$last")
  cov=$(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, ft \2, corpus \3/p' <<<"$last")
  line="$target: ${execs:-?} execs (${rate:-?}/s), ${cov:-no coverage line}"
  [ "$found" -eq 0 ] || line="$line, $found new finding(s) in artifacts/"
  if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
    failed+=("$target")
    line="$line -- FAILED (exit $rc)"
    echo "---- $target failed (exit $rc); end of $log:" >&2
    grep -E -A40 '^==[0-9]+==|runtime error:|ERROR: libFuzzer|deadly signal|Test unit written' "$log" |
      head -80 >&2 || tail -60 "$log" >&2
  fi
  echo "   $line"
  summary+=("$line")
done

echo "== summary"
printf '   %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
  echo "run-fuzzers.sh: FAILED: ${failed[*]} (inputs in $build/artifacts/, logs in $build/logs/)" >&2
  exit 1
fi
echo "run-fuzzers.sh: no crashes, leaks or timeouts"
