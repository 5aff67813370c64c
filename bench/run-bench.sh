#!/usr/bin/env bash
# Load benchmark: stateguard-webhook vs nginx serving a fixed JSON answer, both over keep-alive
# HTTPS on 127.0.0.1, measured with wrk in the same run. See bench/README.md.
#
#   bash bench/run-bench.sh [BUILD_DIR]        (`make bench` runs it with BUILD_DIR=build)
#
# Environment knobs (defaults in brackets):
#   BENCH_DURATION [10]          seconds of each max-throughput run
#   BENCH_CONNECTIONS [16]       wrk connections for the max-throughput runs
#   BENCH_RATE [1000]            requests/s of the fixed-rate runs
#   BENCH_RATE_DURATION [15]     seconds of each fixed-rate run
#   BENCH_RATE_CONNECTIONS [10]  wrk connections for the fixed-rate runs
#   BENCH_WRK_THREADS [1]        wrk threads (-t)
#   BENCH_WARMUP [2]             seconds of unrecorded closed-loop load on each server first
#   WEBHOOK_THREADS [unset]      --threads for stateguard-webhook (unset: its default)
#   NGINX_WORKERS [nproc]        nginx worker_processes
#   BENCH_BODY [examples/reviews/delete-bound-pv.json]  AdmissionReview to POST (must be denied)
#   BENCH_KEEP [0]               1 = keep the temp dir (configs, logs, raw wrk output)
#   BENCH_STRICT [0]             1 = exit 1 when a target is missed (default: report only)
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$repo/$build" ;; esac
bin="$build/bin/stateguard-webhook"

duration=${BENCH_DURATION:-10}
conns=${BENCH_CONNECTIONS:-16}
rate=${BENCH_RATE:-1000}
rate_duration=${BENCH_RATE_DURATION:-15}
rate_conns=${BENCH_RATE_CONNECTIONS:-10}
wrk_threads=${BENCH_WRK_THREADS:-1}
warmup=${BENCH_WARMUP:-2}
nginx_workers=${NGINX_WORKERS:-$(nproc)}
body=${BENCH_BODY:-$repo/examples/reviews/delete-bound-pv.json}
script="$repo/bench/review.lua"

die() { echo "run-bench.sh: $*" >&2; exit 1; }
for tool in wrk nginx curl openssl python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed (Debian: apt-get install wrk nginx-light curl openssl python3)"
done
[ -x "$bin" ] || die "$bin not found; build it first (make build, or cmake --build $build --target stateguard-webhook)"
[ -s "$body" ] || die "review body $body not found"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stateguard-bench.XXXXXX")
webhook_pid=""
nginx_pid=""

stop_pid() {  # stop_pid PID: SIGTERM, wait up to 5 s, then SIGKILL (and, for nginx, its workers)
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  local children
  children=$(pgrep -P "$pid" 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    for c in $children; do kill -KILL "$c" 2>/dev/null || true; done
  fi
  wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$webhook_pid"
  stop_pid "$nginx_pid"
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "run-bench.sh: kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

echo "== setup (temp dir $tmp)"
bash "$repo/certs/gen-certs.sh" --out "$tmp/certs" >"$tmp/gen-certs.log" 2>&1 \
  || { cat "$tmp/gen-certs.log" >&2; die "certs/gen-certs.sh failed"; }
cacert="$tmp/certs/ca.crt"

# --- stateguard-webhook: --listen 127.0.0.1:0 lets the kernel pick a free port (no race); the
# port is read back from the "listening on https://HOST:PORT" log line.
webhook_args=(--listen 127.0.0.1:0 --tls-cert "$tmp/certs/tls.crt" --tls-key "$tmp/certs/tls.key"
              --cluster-state "$repo/examples/cluster-state.yaml" --audit-log "$tmp/audit.log")
[ -n "${WEBHOOK_THREADS:-}" ] && webhook_args+=(--threads "$WEBHOOK_THREADS")
: >"$tmp/webhook.err"  # exists before the background job opens it (no race with the sed below)
"$bin" "${webhook_args[@]}" 2>>"$tmp/webhook.err" &
webhook_pid=$!
webhook_port=""
for _ in $(seq 100); do
  webhook_port=$(sed -n 's#.*listening on https://127\.0\.0\.1:\([0-9][0-9]*\).*#\1#p' "$tmp/webhook.err" | head -n1 || true)
  [ -n "$webhook_port" ] && break
  kill -0 "$webhook_pid" 2>/dev/null || { cat "$tmp/webhook.err" >&2; die "stateguard-webhook exited during startup"; }
  sleep 0.1
done
[ -n "$webhook_port" ] || { cat "$tmp/webhook.err" >&2; die "stateguard-webhook did not report its port within 10 s"; }
webhook_url="https://127.0.0.1:$webhook_port/validate"

post() {  # post URL OUTFILE: one POST of the review body; prints the HTTP status
  curl -sS --max-time 5 --cacert "$cacert" -H 'Content-Type: application/json' \
    --data-binary "@$body" -o "$2" -w '%{http_code}' "$1"
}
keepalive_check() {  # two POSTs in one curl run must share one connection (new connects: 1 then 0)
  local connects
  connects=$(curl -sS --max-time 5 --cacert "$cacert" -H 'Content-Type: application/json' \
    --data-binary "@$body" -o /dev/null -o /dev/null -w '%{num_connects} ' "$1" "$1")
  [ "$connects" = "1 0 " ] || die "$2 did not keep the connection alive across two POSTs (new connects per request: $connects)"
}

# The bench must exercise the real decision path: the review has to be judged and denied.
status=$(post "$webhook_url" "$tmp/response.json") || die "curl to stateguard-webhook failed"
[ "$status" = 200 ] || die "stateguard-webhook answered HTTP $status: $(cat "$tmp/response.json")"
grep -q '"allowed":false' "$tmp/response.json" \
  || die "stateguard-webhook did not deny the review (bench would not measure the decision path): $(cat "$tmp/response.json")"
keepalive_check "$webhook_url" stateguard-webhook
tree=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo "not a git checkout")
echo "stateguard-webhook $bin (built $(date -u -r "$bin" +%FT%TZ); checkout now: $tree)"
echo "  on 127.0.0.1:$webhook_port (threads: ${WEBHOOK_THREADS:-default}); denies the review: $(wc -c <"$tmp/response.json") byte response"

# --- nginx: answers POST /validate with the very response bytes the webhook just gave (same
# size class), via `return 200 '...'` (the rewrite module's return discards the request body and
# keeps the connection alive).
mkdir -p "$tmp/nginx"
nginx_body=$(python3 - "$tmp/response.json" <<'PY'
import sys
s = open(sys.argv[1], encoding="utf-8").read()
if "$" in s:
    sys.exit("response contains '$', which nginx would treat as a variable in `return`")
# nginx single-quoted strings: \\ -> \ and \' -> '
print(s.replace("\\", "\\\\").replace("'", "\\'"), end="")
PY
)
start_nginx() {  # start_nginx PORT
  cat >"$tmp/nginx/nginx.conf" <<CONF
# generated by bench/run-bench.sh
daemon off;
master_process on;
worker_processes $nginx_workers;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:$1 ssl reuseport;
    ssl_certificate $tmp/certs/tls.crt;
    ssl_certificate_key $tmp/certs/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /validate {
      default_type application/json;
      return 200 '$nginx_body';
    }
  }
}
CONF
  : >>"$tmp/nginx/stderr"
  nginx -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" 2>>"$tmp/nginx/stderr" &
  nginx_pid=$!
}
nginx_port=""
for _ in 1 2 3; do  # up to 3 ports, in case another process takes the one picked
  port=$(free_port)
  start_nginx "$port"
  for _ in $(seq 100); do
    kill -0 "$nginx_pid" 2>/dev/null || break
    if [ "$(post "https://127.0.0.1:$port/validate" "$tmp/nginx-response.json" 2>/dev/null)" = 200 ]; then
      nginx_port=$port
      break
    fi
    sleep 0.1
  done
  [ -n "$nginx_port" ] && break
  stop_pid "$nginx_pid"
  nginx_pid=""
  cat "$tmp/nginx/error.log" "$tmp/nginx/stderr" 2>/dev/null | grep -q 'Address already in use' || break  # not a port race: give up
done
[ -n "$nginx_port" ] || { cat "$tmp/nginx/error.log" "$tmp/nginx/stderr" >&2 2>/dev/null; die "nginx did not start"; }
nginx_url="https://127.0.0.1:$nginx_port/validate"
cmp -s "$tmp/response.json" "$tmp/nginx-response.json" || die "nginx's fixed answer differs from the webhook's response"
keepalive_check "$nginx_url" nginx
echo "nginx $(nginx -v 2>&1 | sed 's#.*/##') on 127.0.0.1:$nginx_port (worker_processes $nginx_workers); returns the same bytes"

# --- measurements
hz=$(getconf CLK_TCK)
read -ra nginx_pids <<<"$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ' || true)"  # master + workers
ticks_of() {  # ticks_of PID...: CPU time (utime+stime, all threads) of live processes, in clock ticks
  local t=0 p f
  for p in "$@"; do
    f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
    t=$((t + ${f% *} + ${f#* }))
  done
  echo "$t"
}
children_ticks() {  # children_ticks PID: CPU time of the finished, waited-for children of PID
  local f
  f=$(cut -d' ' -f16,17 "/proc/$1/stat")
  echo $((${f% *} + ${f#* }))
}
# Busy (user+nice+system+steal) and total CPU ticks of the machine. irq/softirq time is left out
# of "busy": on loopback it is mostly the benchmark's own network processing, which the kernel
# does not charge to any process.
machine_ticks() { awk '/^cpu / { print $2+$3+$4+$9, $2+$3+$4+$5+$6+$7+$8+$9; exit }' /proc/stat; }
run_wrk() {  # run_wrk LABEL URL CONNS SECONDS RATE SERVER_PID... -> prints the BENCH line
  local label=$1 url=$2 c=$3 d=$4 r=$5 out="$tmp/wrk-$1-$5.txt"
  shift 5
  local s0 w0 m0 s1 w1 m1 me=$BASHPID  # (run_wrk runs in a $(...) subshell; wrk is its child)
  s0=$(ticks_of "$@"); w0=$(children_ticks "$me"); m0=$(machine_ticks)
  BENCH_BODY="$body" BENCH_LABEL="$label" BENCH_RATE="$r" BENCH_WRK_THREADS="$wrk_threads" \
    wrk -t"$wrk_threads" -c"$c" -d"${d}s" --latency -s "$script" "$url" >"$out" 2>&1 \
    || { cat "$out" >&2; die "wrk against $label failed"; }
  s1=$(ticks_of "$@"); w1=$(children_ticks "$me"); m1=$(machine_ticks)
  local line
  line=$(grep '^BENCH ' "$out") || { cat "$out" >&2; die "no result line from wrk against $label"; }
  # Server CPU per request, and how much of the machine other processes used during the run
  # (busy time minus the server's and wrk's, as a share of all CPU time).
  awk -v line="$line" -v s=$((s1 - s0)) -v w=$((w1 - w0)) -v m0="$m0" -v m1="$m1" -v hz="$hz" 'BEGIN {
    split(m0, a, " "); split(m1, b, " "); busy = b[1] - a[1]; total = b[2] - a[2]
    match(line, / requests=[0-9]+/); req = substr(line, RSTART + 10, RLENGTH - 10)
    other = total > 0 ? 100 * (busy - s - w) / total : 0; if (other < 0) other = 0
    printf "%s server_cpu_us_per_req=%.1f wrk_cpu_s=%.2f other_cpu_pct=%.0f\n", line,
      (req > 0 ? s / hz * 1e6 / req : 0), w / hz, other }'
}
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
errors() { local s=0 k; for k in connect read write status timeout; do s=$((s + $(field "$1" errors_$k))); done; echo $s; }

if [ "$warmup" -gt 0 ]; then
  echo "== warm-up: ${warmup}s closed-loop on each server (not recorded)"
  run_wrk nginx "$nginx_url" "$conns" "$warmup" 0 "${nginx_pids[@]}" >/dev/null
  run_wrk webhook "$webhook_url" "$conns" "$warmup" 0 "$webhook_pid" >/dev/null
fi
audit_before=$(wc -l <"$tmp/audit.log")

echo "== max throughput: wrk -t$wrk_threads -c$conns -d${duration}s --latency (closed loop)"
nginx_max=$(run_wrk nginx "$nginx_url" "$conns" "$duration" 0 "${nginx_pids[@]}"); echo "$nginx_max"
webhook_max=$(run_wrk webhook "$webhook_url" "$conns" "$duration" 0 "$webhook_pid"); echo "$webhook_max"

echo "== fixed rate: $rate req/s, wrk -t$wrk_threads -c$rate_conns -d${rate_duration}s --latency, paced by delay() in bench/review.lua"
nginx_rate=$(run_wrk nginx "$nginx_url" "$rate_conns" "$rate_duration" "$rate" "${nginx_pids[@]}"); echo "$nginx_rate"
webhook_rate=$(run_wrk webhook "$webhook_url" "$rate_conns" "$rate_duration" "$rate" "$webhook_pid"); echo "$webhook_rate"

audit_lines=$(( $(wc -l <"$tmp/audit.log") - audit_before ))
webhook_requests=$(( $(field "$webhook_max" requests) + $(field "$webhook_rate" requests) ))
denied=$(tail -n "$audit_lines" "$tmp/audit.log" | grep -c '"verdict":"deny"' || true)

# --- report
ms() { awk -v us="$1" 'BEGIN { printf "%.3f", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
row() {  # row NAME BENCH_LINE
  printf '  %-22s %12s %8s %8s %8s %7s %11s %7s\n' "$1" "$(field "$2" rps)" "$(ms "$(field "$2" p50_us)")" \
    "$(ms "$(field "$2" p99_us)")" "$(ms "$(field "$2" max_us)")" "$(errors "$2")" \
    "$(field "$2" server_cpu_us_per_req)" "$(field "$2" other_cpu_pct)%"
}
ratio_row() {
  printf '  %-22s %12s %8s %8s %8s %7s %11s\n' "webhook / nginx" "$(ratio "$(field "$2" rps)" "$(field "$1" rps)")" \
    "$(ratio "$(field "$2" p50_us)" "$(field "$1" p50_us)")" "$(ratio "$(field "$2" p99_us)" "$(field "$1" p99_us)")" \
    "" "" "$(ratio "$(field "$2" server_cpu_us_per_req)" "$(field "$1" server_cpu_us_per_req)")"
}

echo
echo "== results ($(nproc) CPUs shared by wrk and the servers; latencies in ms; cpu/req = server CPU"
echo "   time per request in microseconds; other = CPU used by unrelated processes during the run)"
printf '  %-22s %12s %8s %8s %8s %7s %11s %7s\n' server "requests/s" p50 p99 max errors "cpu/req us" other
echo "max throughput (-c$conns, ${duration}s)"
row nginx "$nginx_max"
row stateguard-webhook "$webhook_max"
ratio_row "$nginx_max" "$webhook_max"
echo "fixed rate $rate req/s (-c$rate_conns, ${rate_duration}s; requests/s = achieved rate)"
row nginx "$nginx_rate"
row stateguard-webhook "$webhook_rate"
ratio_row "$nginx_rate" "$webhook_rate"
echo "webhook audit log: $audit_lines decisions written during the measured runs ($denied denials); wrk counted $webhook_requests responses"

echo
fails=0
tput_ratio=$(ratio "$(field "$webhook_max" rps)" "$(field "$nginx_max" rps)")
if awk -v r="$tput_ratio" 'BEGIN { exit !(r >= 0.5) }'; then
  echo "PASS  throughput >= 0.5x nginx: ${tput_ratio}x"
else
  echo "FAIL  throughput >= 0.5x nginx: ${tput_ratio}x"; fails=$((fails + 1))
fi
p99=$(field "$webhook_rate" p99_us)
achieved=$(field "$webhook_rate" rps)
if awk -v a="$achieved" -v r="$rate" 'BEGIN { exit !(a < 0.95 * r) }'; then
  echo "FAIL  p99 < 2 ms at $rate req/s: the webhook run only reached $achieved req/s (p99 $(ms "$p99") ms)"; fails=$((fails + 1))
elif [ "$p99" -lt 2000 ]; then
  echo "PASS  p99 < 2 ms at $rate req/s: $(ms "$p99") ms (achieved $achieved req/s)"
else
  echo "FAIL  p99 < 2 ms at $rate req/s: $(ms "$p99") ms (achieved $achieved req/s)"; fails=$((fails + 1))
fi
for line in "$nginx_max" "$webhook_max" "$nginx_rate" "$webhook_rate"; do
  [ "$(errors "$line")" = 0 ] || echo "WARN  $(field "$line" label): wrk reported $(errors "$line") errors (see errors_* above)"
done
for line in "$nginx_max" "$webhook_max" "$nginx_rate" "$webhook_rate"; do
  if [ "$(field "$line" other_cpu_pct)" -gt 10 ]; then
    echo "WARN  other processes used $(field "$line" other_cpu_pct)% of the CPUs during a $(field "$line" label) run: figures are unreliable, re-run on an idle machine"
  fi
done
if [ "$fails" -gt 0 ] && [ "${BENCH_STRICT:-0}" = 1 ]; then exit 1; fi
exit 0
