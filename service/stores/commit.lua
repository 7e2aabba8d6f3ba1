-- commit: store the decision, append it to the decision log and count a decline, at once.
--
-- KEYS: 1 tx, 2 decisions stream, then (declines only) the velocity keys of the entities
--       with decline series.
-- ARGV: 1 the transaction's decision value (read_claim has the layout), 2 tx ttl (s),
--       3 stream maxlen, 4 transaction id, 5 decision record JSON, 6 the claimed-at the
--       call's begin sent ('' for none), then (declines only) 7 the attempt's event second
--       and per velocity key the entity's position in PLAN.
-- A decline lands in the attempt's own buckets, also when later attempts opened newer ones.
-- Returns 1, or 0 having done nothing when the key holds another answer (committable).
--
-- Only declines come here from the pipelined hot path: every other decision is stored by
-- the same SET and XADD in one MULTI/EXEC (RiskStore.commit), which costs Redis less than
-- this function. Whatever changes here changes there too, but for the check below, which
-- a MULTI cannot make: a non-decline commit that reaches Redis after the spool drain
-- stored its call's answer replaces that answer and logs the record a second time (the
-- README, "What happens to a score call"; it counts nothing). The SET replaces the claim
-- (of either layout) and gives the decision the full TTL from now; should the claim have
-- vanished since begin (evicted, lost in a failover) it is made anew, with the TTL too.

-- Whether a commit of the call claimed at ``claimed_at`` may store its decision under
-- ``tx`` (cluster_commit_tx's rule too): the key holds that call's own claim, or nothing
-- (the claim vanished: evicted, lost in a failover). Anything else was stored first and
-- stands: above all the spool drain's answer when this commit reached Redis only after
-- its call had given up on it and spooled (the drain stored, logged and counted it:
-- drain.lua), or a takeover's claim or answer. '' (a caller naming no call): always.
local function committable(tx, claimed_at)
  if claimed_at == '' then return true end
  local held = redis.pcall('GET', tx)
  if not held then return true end
  local state, _, at = read_claim(tx, held)
  return state == 'pending' and at == claimed_at
end

local function commit(KEYS, ARGV)
  if not committable(KEYS[1], ARGV[6]) then return 0 end
  call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
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
