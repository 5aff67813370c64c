-- wrk script for bench/run-bench.sh: POSTs a real AdmissionReview over wrk's keep-alive
-- connections and prints one machine-readable result line from done().
--
-- Environment:
--   BENCH_BODY   path of the AdmissionReview JSON to send (required)
--   BENCH_RATE   if set (> 0), pace requests to this many per second in total (fixed-rate
--                mode, see delay() below); unset or 0 = as fast as possible (closed loop)
--   BENCH_LABEL  label printed in the result line (e.g. "nginx" or "webhook")
--
-- Result line (printed once, by the main Lua state):
--   BENCH label=L requests=N duration_us=D rps=R p50_us=X p90_us=Y p99_us=Z p999_us=W max_us=M
--         errors_connect=.. errors_read=.. errors_write=.. errors_status=.. errors_timeout=..
-- Latencies are wrk's per-request latencies in microseconds (request write start to end of
-- response on the same keep-alive connection).

local path = os.getenv("BENCH_BODY")
if not path or path == "" then
  error("review.lua: set BENCH_BODY to the AdmissionReview JSON file to POST")
end
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"

local label = os.getenv("BENCH_LABEL") or "server"
local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0

if rate > 0 then
  -- Fixed-rate mode. wrk calls delay() before every request of a connection (including the
  -- first) and waits that many milliseconds. Each wrk thread has its own Lua state; with
  -- `wrk -t T` every thread paces rate/T requests per second. Instead of a fixed per-connection
  -- sleep (which lets the connections fire in synchronized bursts and drifts below the target
  -- by the response time), each call reserves the next free slot on a per-thread schedule with
  -- slots 1/rate apart, so requests are spread evenly at the target rate as long as some
  -- connection is idle when its slot comes. wrk's timers have 1 ms granularity, so a request
  -- fires within about +-0.5 ms of its slot. Like plain wrk (not wrk2), latency is measured from
  -- the actual send, not from the slot (no coordinated-omission correction); the achieved rate
  -- in the result line shows whether the schedule was kept.
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk, bench_timespec *ts);
  ]]
  local ts = ffi.new("bench_timespec")
  local CLOCK_MONOTONIC = 1
  local function now_us()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
  end

  local per_thread_rate = rate
  local interval_us = 1e6 / rate
  local next_slot = nil

  function init(args)
    -- Runs in each thread's Lua state. `wrk.thread` is not exposed in wrk 4.1, so the thread
    -- count comes from BENCH_WRK_THREADS (run-bench.sh sets it to its -t value).
    local threads = tonumber(os.getenv("BENCH_WRK_THREADS") or "1") or 1
    per_thread_rate = rate / threads
    interval_us = 1e6 / per_thread_rate
  end

  function delay()
    local now = now_us()
    if next_slot == nil or next_slot < now then next_slot = now end
    local wait_ms = (next_slot - now) / 1000
    next_slot = next_slot + interval_us
    return math.floor(wait_ms + 0.5)
  end
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "BENCH label=%s requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d " ..
    "errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d\n",
    label, summary.requests, summary.duration, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
