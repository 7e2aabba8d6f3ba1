-- commit: store the decision, append it to the decision log and count a decline, at once.
--
-- KEYS: 1 tx, 2 decisions stream, then (declines only) the velocity keys of the entities
--       with decline series.
-- ARGV: 1 response JSON, 2 entity record (for feedback), 3 tx ttl (s), only used when the
--       claim vanished (below), 4 stream maxlen, 5 transaction id, 6 decision record JSON,
--       then (declines only) 7 the attempt's event second and per velocity key the
--       entity's position in PLAN.
-- A decline lands in the attempt's own buckets, also when later attempts opened newer ones.
--
-- Only declines come here from the pipelined hot path: every other decision is stored by
-- the same HSET, an EXPIRE NX and the same XADD in one MULTI/EXEC (RiskStore.commit),
-- which costs Redis less than this function. Whatever changes here changes there too.
--
-- TTL: begin gave the transaction key the decision TTL when it claimed the id (a takeover
-- keeps it), milliseconds before this, so commit does not set it again (an EXPIRE per call,
-- and one more command in the AOF). Only if the claim vanished in between (evicted under a
-- volatile-* policy, lost in a failover) does HSET create the key, then with all three
-- fields new (a claim always holds 'state'), and only then is the TTL set here: no
-- transaction key lives without one. (EXPIRE NX, in the transaction, is the same rule: a
-- claim always has a TTL.)

local function commit(KEYS, ARGV)
  if call('HSET', KEYS[1], 'state', 'done', 'decision', ARGV[1], 'record', ARGV[2]) == 3 then
    call('EXPIRE', KEYS[1], ARGV[3])
  end
  call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'transaction_id', ARGV[5],
    'record', ARGV[6])
  if #KEYS > 2 then
    local t = tonumber(ARGV[7])
    for i = 3, #KEYS do
      recount(PLAN[tonumber(ARGV[5 + i])], KEYS[i], 6, t, 1)
    end
  end
  return 1
end
