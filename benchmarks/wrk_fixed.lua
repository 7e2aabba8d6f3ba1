-- wrk script for the framework floor: one fixed request, every answer checked against
-- the expected status (an empty POST to /v1/feedback is refused with 400 by design).
-- usage: wrk ... -s benchmarks/wrk_fixed.lua URL -- <method> <path> <expected-status> [api-key] [body]

local threads = {}
local unexpected = 0
local expected = 200

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = args[1] or "GET"
  wrk.path = args[2] or "/healthz"
  expected = tonumber(args[3]) or 200
  if args[4] and args[4] ~= "" then
    wrk.headers["X-API-Key"] = args[4]
  end
  if args[5] then
    wrk.body = args[5]
    wrk.headers["Content-Type"] = "application/json"
  end
end

function response(status, headers, body)
  if status ~= expected then
    unexpected = unexpected + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("unexpected") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"socket_errors":%d,"status_errors":%d,' ..
    '"unexpected_status":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status, bad,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
