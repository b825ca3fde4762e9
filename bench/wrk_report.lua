-- Shared wrk script: optional request rotation (bench/run_all.py writes requests.lua beside it) and a JSON summary.
-- Environment: WRK_DELAY_MS paces each connection for the "half of max rate" runs: before each request (its first
-- included) a connection waits an exponentially distributed time of that mean, so that requests arrive spread out
-- (about as a Poisson stream) instead of the 16 connections firing together in rounds.

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0")
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = id or 0
  math.randomseed(os.time() * 1000 + thread_id)
  if load_requests then load_requests() end
end

function request()
  counter = counter + 1
  if next_request then return next_request(thread_id, counter) end
  return wrk.format(nil)
end

if delay_ms > 0 then
  function delay() return math.floor(-delay_ms * math.log(1 - math.random())) end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
