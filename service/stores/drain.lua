-- drain: one spooled decision (written to the local spool while Redis was away) into
-- Redis, exactly once however often it is sent: the transaction's marks remember every
-- spool entry drained, in the same atomic call that stores and logs it.
--
-- KEYS: 1 tx, 2 the transaction's drained marks (hash: spool id -> outcome), 3 decisions
--       stream, then (a decline) the velocity keys of the entities with decline series.
-- ARGV: 1 spool id, 2 transaction id, 3 decision record JSON, 4 stream maxlen, 5 tx ttl
--       (s), 6 the decision value (read_claim has the layout; '' for an entry spooled
--       before this format, which is only logged), 7 payload digest, 8 the claimed-at its
--       begin was sent with, 9 the value its commit tried to store ('' when none was
--       tried), then (declines) 10 the attempt's event second and per velocity key the
--       entity's position in PLAN.
-- Returns the outcome, also kept in the marks and (but for 'duplicate' and 'committed')
-- as the stream entry's 'spooled' field:
--   'duplicate'  drained before: nothing done;
--   'committed'  the call's own commit reached Redis after all (it logged the record;
--                its stored answer is replaced by the answer sent, which says so); a
--                commit reaching Redis only after this drain finds the answer here and
--                does nothing (commit.lua's store_decision);
--   'stored'     no decision was there, or only the claim of the call's own begin: the
--                spooled decision is now the transaction's stored answer (a decline is
--                counted when its begin had counted the attempt) and it is logged;
--   'superseded' another call of the same payload decided first, or holds the claim and
--                will: that answer stands, this record is logged as not stored;
--   'conflict'   the id holds another payload: logged as not stored;
--   'logged'     an entry of the old format (a bare record): logged.

-- The decision for a spooled line on the transaction key ``tx`` (cluster_drain_tx's too):
-- ``value`` the decision value ('' for an old-format line: 'logged'), ``digest`` and
-- ``claimed_at`` its begin's, ``committed`` the value its commit tried to store, ``ttl`` the
-- decision's. Stores the decision when it is to be the transaction's answer; returns the
-- outcome and whether the line's own call counted the attempt ('committed', or 'stored'
-- over its own claim).
local function drain_decide(tx, value, digest, claimed_at, committed, ttl)
  if value == '' then return 'logged', false end
  local held = redis.pcall('GET', tx)
  if held and held == committed then
    -- the answer sent said its log failed: the replay says so too
    call('SET', tx, value, 'KEEPTTL')
    return 'committed', true
  end
  local own = false
  if held then
    local state, was, at, _, legacy = read_claim(tx, held)
    if was ~= digest then return 'conflict', false end
    if state ~= 'pending' or legacy or at ~= claimed_at then return 'superseded', false end
    own = true
  end
  call('SET', tx, value, 'EX', ttl)
  return 'stored', own
end

local function drain(KEYS, ARGV)
  local marks = KEYS[2]
  if call('HEXISTS', marks, ARGV[1]) == 1 then return 'duplicate' end
  local outcome, own = drain_decide(KEYS[1], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[5])
  if outcome == 'stored' and own and #KEYS > 3 then
    local t = tonumber(ARGV[10])
    for i = 4, #KEYS do
      recount(PLAN[tonumber(ARGV[7 + i])], KEYS[i], 6, t, 1)
    end
  end
  if outcome ~= 'committed' then
    call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'transaction_id', ARGV[2],
      'record', ARGV[3], 'spooled', outcome)
  end
  call('HSET', marks, ARGV[1], outcome)
  call('EXPIRE', marks, ARGV[5])
  return outcome
end
