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
--                its stored answer is replaced by the answer sent, which says so);
--   'stored'     no decision was there, or only the claim of the call's own begin: the
--                spooled decision is now the transaction's stored answer (a decline is
--                counted when its begin had counted the attempt) and it is logged;
--   'superseded' another call of the same payload decided first, or holds the claim and
--                will: that answer stands, this record is logged as not stored;
--   'conflict'   the id holds another payload: logged as not stored;
--   'logged'     an entry of the old format (a bare record): logged.

local function drain(KEYS, ARGV)
  local marks = KEYS[2]
  if call('HEXISTS', marks, ARGV[1]) == 1 then return 'duplicate' end
  local outcome = 'logged'
  if ARGV[6] ~= '' then
    local tx = KEYS[1]
    local value = redis.pcall('GET', tx)
    if value and value == ARGV[9] then
      outcome = 'committed'  -- the answer sent said its log failed: the replay says so too
      call('SET', tx, ARGV[6], 'KEEPTTL')
    else
      local own = false
      if value then
        local state, digest, at, _, legacy = read_claim(tx, value)
        if digest ~= ARGV[7] then
          outcome = 'conflict'
        elseif state == 'pending' and not legacy and at == ARGV[8] then
          own = true
        else
          outcome = 'superseded'
        end
      end
      if not value or own then
        call('SET', tx, ARGV[6], 'EX', ARGV[5])
        outcome = 'stored'
        if own and #KEYS > 3 then
          local t = tonumber(ARGV[10])
          for i = 4, #KEYS do
            recount(PLAN[tonumber(ARGV[7 + i])], KEYS[i], 6, t, 1)
          end
        end
      end
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
