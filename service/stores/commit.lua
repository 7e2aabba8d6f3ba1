-- commit: store the decision, append it to the decision log and count a decline, at once.
--
-- KEYS: 1 tx, 2 decisions stream, then (declines only) the counter hashes with declines.
-- ARGV: 1 response JSON, 2 entity record (for feedback), 3 tx ttl (s), 4 stream maxlen,
--       5 transaction id, 6 decision record JSON, then per counter hash: the summary marker
--       of the attempt's event second, ttl (s), n, and the n decline fields.
-- A decline usually lands in the current buckets; if a later attempt has already opened
-- a new bucket, it lands in a completed one and that hash's summary no longer holds.

local function commit(KEYS, ARGV)
  call('HSET', KEYS[1], 'state', 'done', 'decision', ARGV[1], 'record', ARGV[2])
  call('EXPIRE', KEYS[1], ARGV[3])
  call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'transaction_id', ARGV[5],
    'record', ARGV[6])
  local at = 7
  for i = 3, #KEYS do
    local key, n = KEYS[i], tonumber(ARGV[at + 2])
    for j = at + 3, at + 2 + n do call('HINCRBY', key, ARGV[j], 1) end
    local marker = call('HGET', key, '~m')
    if marker and marker ~= ARGV[at] then call('HDEL', key, '~m') end
    if call('TTL', key) < 0 then call('EXPIRE', key, ARGV[at + 1]) end
    at = at + 3 + n
  end
  return 1
end
