-- commit: store the decision, append it to the decision log and count a decline, at once.
--
-- KEYS: 1 tx, 2 decisions stream, then (declines only) the velocity keys of the entities
--       with decline series.
-- ARGV: 1 the transaction's decision value (read_claim has the layout), 2 tx ttl (s),
--       3 stream maxlen, 4 transaction id, 5 decision record JSON, then (declines only)
--       6 the attempt's event second and per velocity key the entity's position in PLAN.
-- A decline lands in the attempt's own buckets, also when later attempts opened newer ones.
--
-- Only declines come here from the pipelined hot path: every other decision is stored by
-- the same SET and XADD in one MULTI/EXEC (RiskStore.commit), which costs Redis less than
-- this function. Whatever changes here changes there too. The SET replaces the claim (of
-- either layout) and gives the decision the full TTL from now; should the claim have
-- vanished since begin (evicted, lost in a failover) it is made anew, with the TTL too.

local function commit(KEYS, ARGV)
  call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'transaction_id', ARGV[4],
    'record', ARGV[5])
  if #KEYS > 2 then
    local t = tonumber(ARGV[6])
    for i = 3, #KEYS do
      recount(PLAN[tonumber(ARGV[4 + i])], KEYS[i], 6, t, 1)
    end
  end
  return 1
end
