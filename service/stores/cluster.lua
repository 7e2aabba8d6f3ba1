-- The Redis Cluster form of begin, commit, drain and feedback: each function touches the
-- keys of one hash slot (cluster.py has the protocol that joins them). They are made of
-- the pieces the single-Redis functions are made of, each defined once: begin.lua's claim,
-- numbers, entity, recount, read_claim, lists_state and lookups, drain.lua's drain_decide;
-- the layouts are theirs.
--
-- Every write here can be sent again (a client retry, a takeover, a spool drain) and
-- counts once: the claim recognises its own claimed-at, an entity's count, decline and
-- fraud each leave a mark in the entity's slot, and the decision log's append leaves one in
-- the stream's slot.

-- claim: the transaction's slot. KEYS: 1 tx. ARGV: 1 claimed-at (ms, names the call),
-- 2 digest, 3 pending timeout (ms), 4 tx ttl (s).
-- Returns {status, decision|false}: 'new' (also for the call's own claim sent again),
-- 'replay', 'pending', 'conflict' or 'takeover' (begin.lua's rules).
local function cluster_claim(KEYS, ARGV)
  local status, decision = claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], true)
  return {status, decision or false}
end

-- count: one entity's slot. KEYS: 1 the entity's velocity key, 2 its count mark for the
-- transaction. ARGV: 1 the entity's position in PLAN, 2 the mark's TTL (s), 3 begin's packed
-- numbers (begin.lua, ARGV[6]).
-- Counts the attempt unless the mark says this transaction was counted here already, then
-- reads the entity's windows; returns the packed sums (SLOTS doubles, this entity's slots
-- filled, the others 0) and 1 when it counted, 0 when it only read.
local function cluster_count(KEYS, ARGV)
  local cents, t, units, units2 = numbers(ARGV[3])
  local write = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) ~= false
  local e = tonumber(ARGV[1])
  local sums = SUMS
  for i = 1, #PLAN do sums[i] = ZERO[i] or zero(i) end
  sums[e] = entity(e, KEYS[1], call('GET', KEYS[1]), MEMBER, t, CUR, START, cents, units,
    units2, write)
  return {table.concat(sums, '', 1, #PLAN), write and 1 or 0}
end

-- lists: the lists' slot. KEYS: 1 lists index, then the key of each list marked '1'.
-- ARGV: 1 now (ms), 2 the lists mask, 3 the version it is exact for, then the items
-- (begin.lua's lookups). Returns {'ok', lists version, hits, [mask of the lists that hold
-- items]} or {'lists', mask, version} when the client left out a list in use.
local function cluster_lists(KEYS, ARGV)
  local lists = ARGV[2]
  local version, index, held, unseen = lists_state(KEYS[1], lists, ARGV[3])
  if unseen then return {'lists', held, tonumber(version) or 0} end
  local hits = EMPTY
  if #KEYS > 1 then
    -- lookups reads the index key as KEYS[2]: shift by one (it sits first here)
    local shifted = {false, KEYS[1]}
    for i = 2, #KEYS do shifted[i + 1] = KEYS[i] end
    hits = lookups(shifted, ARGV, 3, 4, lists, index, tonumber(ARGV[1]) / 1000)
  end
  return {'ok', tonumber(version) or 0, hits, held}
end

-- log: the decision stream's slot. KEYS: 1 the stream, 2 the call's log mark (tagged with
-- the stream's name, so in its slot). ARGV: 1 mark TTL (s), 2 maxlen, then field/value
-- pairs. Appends the entry unless the mark says it was appended; returns 1 or 0.
local function cluster_log(KEYS, ARGV)
  if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) == false then return 0 end
  call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
  return 1
end

-- decline: one entity's slot. KEYS: 1 velocity key, 2 its decline mark for the
-- transaction. ARGV: 1 position in PLAN, 2 event second, 3 mark TTL (s).
-- Adds the decline to the attempt's buckets once; returns 1, or 0 when marked before.
local function cluster_decline(KEYS, ARGV)
  if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) == false then return 0 end
  recount(PLAN[tonumber(ARGV[1])], KEYS[1], 6, tonumber(ARGV[2]), 1)
  return 1
end

-- fraud: one entity's slot. KEYS: 1 velocity key, 2 its fraud mark for the transaction.
-- ARGV: 1 position in PLAN, 2 event second, 3 the transaction's fraud mark ('0' not fraud,
-- '1:<arrival>' fraud reported at that second, '1' fraud before arrivals were kept),
-- 4 mark TTL (s). Brings the entity's counts for the transaction to that mark: what the
-- entity's own mark counted is taken back, what the new one counts is added (frauds at
-- the event second, reported frauds at the arrival), nothing when they are the same.
local function cluster_fraud(KEYS, ARGV)
  local had = call('GET', KEYS[2]) or '0'
  local wanted = ARGV[3]
  if had == wanted then return 0 end
  local P, t = PLAN[tonumber(ARGV[1])], tonumber(ARGV[2])
  for _, change in ipairs({{had, -1}, {wanted, 1}}) do
    local mark, delta = change[1], change[2]
    if byte(mark, 1) == 49 then
      recount(P, KEYS[1], 7, t, delta)
      if #mark > 2 then recount(P, KEYS[1], 8, tonumber(sub(mark, 3)), delta) end
    end
  end
  if wanted == '0' then call('DEL', KEYS[2]) else call('SET', KEYS[2], wanted, 'EX', ARGV[4]) end
  return 1
end

-- label: the transaction's slot. KEYS: 1 tx. ARGV: 1 label, 2 arrival (feedback.lua's).
-- feedback.lua's decision on the transaction's fraud mark, without the stream and the
-- entities (cluster.py sends those). Returns {outcome, mark}: outcome 'unknown' (never
-- decided), 'duplicate' or 'recorded'; mark the transaction's fraud mark now ('0' when not
-- fraud).
local function cluster_label(KEYS, ARGV)
  local mark, store = fraud_mark(KEYS[1])
  if not store then return {'unknown', '0'} end
  local fraud = ARGV[1] == 'fraud' or ARGV[1] == 'chargeback'
  local was = type(mark) == 'string' and byte(mark, 1) == 49  -- '1' or '1:<arrival>'
  if (fraud and was) or (not fraud and mark == '0') then
    return {'duplicate', was and mark or '0'}
  end
  local now = fraud and ('1:' .. ARGV[2]) or '0'
  store(now)
  return {'recorded', now}
end

-- drain_tx: the transaction's slot: drain.lua's decision for one spooled line. KEYS: 1 tx,
-- 2 its drained marks. ARGV: 1 spool id, 2 tx ttl (s), 3 the decision value ('' for an
-- old-format line), 4 digest, 5 claimed-at, 6 the value its commit tried to store.
-- Returns {outcome, first}: drain.lua's outcomes ('committed', 'stored', 'superseded',
-- 'conflict', 'logged') and, for a line drained before, the outcome it had then with
-- first = 0 (the client completes the log and the declines again, which are marked).
-- A third element is 1 when the line's own call counted the attempt ('committed', or
-- 'stored' over its own claim): its declines count.
local function cluster_drain_tx(KEYS, ARGV)
  local marks = KEYS[2]
  local before = call('HGET', marks, ARGV[1])
  if before then
    local outcome, own = string.match(before, '^(%a+):?(%d?)$')
    return {outcome, 0, own == '1' and 1 or 0}
  end
  local outcome, own = drain_decide(KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[2])
  call('HSET', marks, ARGV[1], outcome .. ':' .. (own and '1' or '0'))
  call('EXPIRE', marks, ARGV[2])
  return {outcome, 1, own and 1 or 0}
end

-- commit_tx: the transaction's slot: the commit's decision. KEYS: 1 tx. ARGV: 1 the
-- decision value, 2 tx ttl (s), 3 the claimed-at the call's begin sent. Stores it only
-- over the call's own claim or over nothing (commit.lua's store_decision, as on one
-- Redis): a commit that reaches Redis after the spool drain stored the call's spooled
-- answer leaves that answer (its log entry and declines, under the marks the drain used,
-- count nothing either). Returns 1 when stored, else 0.
local function cluster_commit_tx(KEYS, ARGV)
  return store_decision(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) and 1 or 0
end
