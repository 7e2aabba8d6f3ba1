-- commit: store the decision, append it to the decision log and count a decline, at once.
--
-- KEYS: 1 tx, 2 decisions stream, then (declines only) the velocity keys of the entities
--       with decline series.
-- ARGV: 1 the transaction's decision value (read_claim has the layout), 2 tx ttl (s),
--       3 stream maxlen, 4 transaction id, 5 decision record JSON, 6 the claimed-at the
--       call's begin sent ('' for none), then (declines only) 7 the attempt's event second
--       and per velocity key the entity's position in PLAN.
-- A decline lands in the attempt's own buckets, also when later attempts opened newer ones.
-- Returns 1, or 0 having changed nothing when the key holds another answer (store_decision).
--
-- Every decision comes here, declines or not: only a function can check the key before
-- it writes, and without that check a commit that reaches Redis after the spool drain
-- stored its call's answer (held in flight past its budget) would replace that answer and
-- log the record a second time. (Non-declines were a MULTI of the SET and the XADD until
-- 2026-12-08: half the Redis instructions, but blind. benchmarks/README.md, "The commit
-- checks the claim", has what the check costs.) The SET replaces the claim (of either
-- layout) and gives the decision the full TTL from now; should the claim have vanished
-- since begin (evicted, lost in a failover) it is made anew, with the TTL too.

-- Whether a commit of the call claimed at ``claimed_at`` may store its decision under
-- ``tx``: the key holds that call's own claim, or nothing (the claim vanished: evicted,
-- lost in a failover). Anything else was stored first and stands: above all the spool
-- drain's answer when this commit reached Redis only after its call had given up on it
-- and spooled (the drain stored, logged and counted it: drain.lua), or a takeover's claim
-- or answer. '' (a caller naming no call): always. (store_decision's rule, read apart.)
local function committable(tx, claimed_at)
  if claimed_at == '' then return true end
  local held = redis.pcall('GET', tx)
  if not held then return true end
  local state, _, at = read_claim(tx, held)
  return state == 'pending' and at == claimed_at
end

-- Stores the decision ``value`` under ``tx`` for ``ttl`` s when committable (above) for
-- the call claimed at ``claimed_at`` (commit's rule, and cluster_commit_tx's); returns
-- whether it did. One SET ... GET stores and reads what the key held, which costs Redis
-- less than a GET before the SET (a nested command fewer); when that was not the call's
-- own claim it is put back, unchanged but for its TTL, which starts again at ``ttl``.
-- A claim of the hash layout (before the string value) refuses the GET, and nothing is
-- written: committable reads it.
local function store_decision(tx, value, ttl, claimed_at)
  local held = redis.pcall('SET', tx, value, 'EX', ttl, 'GET')
  if type(held) == 'table' then
    if not committable(tx, claimed_at) then return false end
    call('SET', tx, value, 'EX', ttl)
    return true
  end
  if not held or claimed_at == '' then return true end
  -- the call's own claim: 'p', newline, digest, newline, claimed-at (begin.lua's claim)
  local n = #claimed_at
  if byte(held, 1) == 112 and byte(held, -n - 1) == 10
      and string.find(held, claimed_at, -n, true) then
    return true
  end
  call('SET', tx, held, 'EX', ttl)
  return false
end

local function commit(KEYS, ARGV)
  if not store_decision(KEYS[1], ARGV[1], ARGV[2], ARGV[6]) then return 0 end
  call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'transaction_id', ARGV[4],
    'record', ARGV[5])
  if #KEYS > 2 then
    local t = tonumber(ARGV[7])
    for i = 3, #KEYS do
      recount(PLAN[tonumber(ARGV[5 + i])], KEYS[i], 6, t, 1)
    end
  end
  return 1
end
