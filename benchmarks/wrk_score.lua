-- wrk script: POST /v1/score with distinct transaction ids and many merchants, cards,
-- customers, devices, IPs, currencies and verticals, so the counters see a realistic
-- key spread. Every answer is read: a 200 degraded by Redis (velocity, lists or decision
-- log over budget) is counted apart, as it skipped work a normal decision does; a missing
-- model (rules-only runs) is not. A replayed answer (a transaction id sent twice) counts as
-- unexpected: every request of the benchmark must be a new payment.
-- Ends with one line "BENCH {json}" that benchmarks/run.py reads.
-- usage: wrk -t1 -c16 -d20s -s benchmarks/wrk_score.lua http://127.0.0.1:8000 -- <api-key> [run-tag]

local counter = 0
local thread_id = 0
local threads = {}
degraded = 0  -- globals: done() reads them per thread with thread:get
unexpected = 0
shed = 0
local key = "dev"
local tag = "bench"
local verticals = {"forex", "gaming", "adult", "ecommerce", "services"}
local currencies = {"INR", "BDT", "IDR", "VND", "BRL", "USD"}
local countries = {"IN", "BD", "ID", "VN", "BR", "US"}
local methods = {"upi", "wallet", "card", "card", "bank_transfer", "card"}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  key = args[1] or key
  tag = args[2] or tostring(os.time())
  math.randomseed(os.time() + thread_id * 7919)
end

local function payment_method(i, card)
  if methods[i] == "card" then
    return string.format(
      '{"type":"card","card":{"bin":"4%05d","last4":"%04d","fingerprint":"tok_%d",' ..
      '"issuer_country":"%s","funding":"debit"}}',
      card % 99999, card % 10000, card, countries[i])
  end
  return string.format('{"type":"%s","account":"acct%d@bank"}', methods[i], card)
end

function request()
  counter = counter + 1
  local i = math.random(1, 6)
  local card = math.random(1, 50000)
  local customer = math.random(1, 20000)
  local body = string.format(
    '{"transaction_id":"%s-t%d-n%d","merchant_id":"m-%d","vertical":"%s",' ..
    '"amount":"%d.%02d","currency":"%s","payment_method":%s,' ..
    '"customer":{"id":"c-%d","email":"user%d@example.com",' ..
    '"created_at":"2025-03-01T10:00:00Z","kyc_level":2,"age_verified":true,"country":"%s"},' ..
    '"device":{"id":"d-%d","ip":"198.51.%d.%d","ip_country":"%s"},' ..
    '"context":{"three_ds":"authenticated","first_deposit":false}}',
    tag, thread_id, counter, math.random(1, 200), verticals[math.random(1, 5)],
    math.random(1, 5000), math.random(0, 99), currencies[i], payment_method(i, card),
    customer, customer, countries[i], customer % 30000,
    customer % 250, card % 250, countries[i])
  return wrk.format("POST", "/v1/score",
    {["Content-Type"] = "application/json", ["X-API-Key"] = key}, body)
end

function response(status, headers, body)
  if status == 503 then
    shed = shed + 1
  end
  if status ~= 200 or string.find(body, '"replayed":true', 1, true) then
    unexpected = unexpected + 1
  else
    local list = string.match(body, '"degraded":%[([^%]]*)%]')
    if list ~= "" and list ~= '"model"' then
      degraded = degraded + 1
    end
  end
end

function done(summary, latency, requests)
  local bad, slow, refused = 0, 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("unexpected") or 0)
    slow = slow + (thread:get("degraded") or 0)
    refused = refused + (thread:get("shed") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"socket_errors":%d,"status_errors":%d,' ..
    '"unexpected_status":%d,"shed_503":%d,"degraded":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status, bad, refused, slow,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
