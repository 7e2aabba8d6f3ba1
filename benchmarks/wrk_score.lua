-- wrk script: POST /v1/score with distinct transaction ids and many cards, devices,
-- customers and verticals, so the counters see realistic key spread.
-- usage: wrk -t1 -c16 -d20s -s benchmarks/wrk_score.lua http://127.0.0.1:8000 -- <api-key>

local counter = 0
local thread_id = 0
local key = "dev"
local verticals = {"forex", "gaming", "adult", "ecommerce", "services"}
local currencies = {"INR", "BDT", "IDR", "VND", "BRL", "USD"}
local countries = {"IN", "BD", "ID", "VN", "BR", "US"}

function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  key = args[1] or key
  math.randomseed(os.time() + thread_id * 7919)
end

function request()
  counter = counter + 1
  local i = math.random(1, 6)
  local card = math.random(1, 50000)
  local customer = math.random(1, 20000)
  local body = string.format(
    '{"transaction_id":"bench-%d-t%d-n%d","merchant_id":"m-%d","vertical":"%s",' ..
    '"amount":"%d.%02d","currency":"%s","payment_method":{"type":"card","card":' ..
    '{"bin":"4%05d","last4":"%04d","fingerprint":"tok_%d","issuer_country":"%s",' ..
    '"funding":"debit"}},"customer":{"id":"c-%d","email":"user%d@example.com",' ..
    '"created_at":"2025-03-01T10:00:00Z","kyc_level":2,"age_verified":true,"country":"%s"},' ..
    '"device":{"id":"d-%d","ip":"198.51.%d.%d","ip_country":"%s"},' ..
    '"context":{"three_ds":"authenticated","first_deposit":false}}',
    os.time(), thread_id, counter, math.random(1, 200), verticals[math.random(1, 5)],
    math.random(1, 5000), math.random(0, 99), currencies[i], card % 99999, card % 10000,
    card, countries[i], customer, customer, countries[i], customer % 30000,
    customer % 250, card % 250, countries[i])
  return wrk.format("POST", "/v1/score",
    {["Content-Type"] = "application/json", ["X-API-Key"] = key}, body)
end

function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout
  io.write(string.format("requests %d, errors %d, rps %.0f, p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms\n",
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
