-- feedback: apply one label to the fraud counters of a scored transaction's entities, once.
--
-- KEYS: 1 tx, 2 labels stream, then the velocity keys of the entities with fraud series.
-- ARGV: 1 label, 2 transaction id, 3 reported_at, 4 stream maxlen, 5 event second,
--       6 reason, 7 merchant id, 8 arrival (seconds: the later of the event second and
--       reported_at, plan.arrival_time), then per velocity key the entity's position in PLAN.
-- A fraud or chargeback label adds 1 to the transaction's buckets (frauds) and to the
-- buckets of its arrival second (reported frauds) unless the transaction already counts as
-- fraud; legit takes a counted fraud back from both (a bucket at 0 is dropped).
-- The mark is kept in the transaction's decision (read_claim has the layout; a decision
-- stored before it is a hash, with a 'fraud' field): '1' fraud followed by ':' and the
-- arrival it was counted at ('1' alone: counted before reported frauds were kept,
-- so a withdrawal takes back the frauds only), '0' legit, '' no label.
-- A label that changes nothing (fraud or chargeback on a fraud, legit on a legit) is a
-- duplicate: it counts once, at its first arrival. Every label goes to the stream. Returns
-- the delta applied, 'duplicate', or false when the transaction was never scored.

-- The decision's fraud mark ('1…' counted, else not) and a function that stores another.
local function fraud_mark(tx)
  local value = redis.pcall('GET', tx)
  if hash_layout(value) then
    if call('HEXISTS', tx, 'record') == 0 then return nil end
    return call('HGET', tx, 'fraud'), function(mark) call('HSET', tx, 'fraud', mark) end
  end
  if not value or byte(value, 1) ~= 100 then return nil end  -- none, or not decided ('d')
  local a, b = tx_fields(value)
  return sub(value, a + 1, b - 1), function(mark)
    call('SET', tx, sub(value, 1, a) .. mark .. sub(value, b), 'KEEPTTL')
  end
end

local function feedback(KEYS, ARGV)
  local tx = KEYS[1]
  local mark, store = fraud_mark(tx)
  if not store then return false end
  local label = ARGV[1]
  local was = type(mark) == 'string' and byte(mark, 1) == 49  -- '1'
  local fraud = label == 'fraud' or label == 'chargeback'
  local duplicate = (fraud and was) or (not fraud and mark == '0')
  local delta = 0
  local arrival = nil  -- the second the reported fraud is counted at (or withdrawn from)
  if fraud and not duplicate then
    delta = 1
    arrival = ARGV[8]
    store('1:' .. arrival)
  elseif not duplicate then
    if was then
      delta = -1
      if #mark > 2 then arrival = sub(mark, 3) end
    end
    store('0')
  end
  if delta ~= 0 then
    local t = tonumber(ARGV[5])
    for i = 3, #KEYS do
      local P = PLAN[tonumber(ARGV[6 + i])]
      recount(P, KEYS[i], 7, t, delta)
      if arrival then recount(P, KEYS[i], 8, tonumber(arrival), delta) end
    end
  end
  call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'transaction_id', ARGV[2],
    'label', label, 'reported_at', ARGV[3], 'event_time', ARGV[5], 'reason', ARGV[6],
    'merchant_id', ARGV[7], 'arrival', ARGV[8])
  if duplicate then return 'duplicate' end
  return delta
end
