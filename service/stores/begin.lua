-- begin: claim a transaction id, count the attempt, read every velocity feature and look up
-- the block/allow lists, atomically. Part of the function library that library.py builds
-- (after the shared locals and the catalogue's PLAN); the key layout is in keys.py.
--
-- KEYS: 1 tx, 2 lists index, then per present entity (PLAN order, ARGV[5] mask) its
--       counter hash and, when it has distinct kinds, its member set; then one key per list.
-- ARGV: 1 now (ms, the service clock), 2 digest, 3 pending timeout (ms), 4 tx ttl (s),
--       5 entity mask ('0' absent, else present: '1' scan its counters, '2' try its summary
--       first, '3' scan and keep a summary),
--       6 USD cents, then the clock strings of
--       plan.py (field names and score bounds for the event second), then per distinct
--       kind of each present entity its member ('' when missing), then per list: name, n,
--       n x (entity, item).
-- Returns {status, decision|false, lists version, {raw sums by slot}, {{list, entity, reason}},
--          busy mask ('1' where the entity's counter hash is big enough for a summary)}.
--
-- Lean on purpose: each redis.call costs about a microsecond, and so does turning a number
-- into a string in Lua. So writes are batched, TTLs and pruning are touched only when a
-- bucket opens or a member joins, and every time-dependent string arrives ready in ARGV.
-- Fields of one measure and width differ only in their bucket digits, so comparing length
-- first, then bytes, orders them as numbers. Busy entities are read through a summary.

-- Lua hands numbers to Redis as %.14g: exact below 1e14, so larger sums go as integers.
local function int(v)
  if v < 1e14 then return v end
  return string.format('%d', v)
end

-- The summary of a busy entity: fields '~m' (the finest bucket id when it was taken),
-- '~f' (fraud fields exist) and '~1'..'~k', each window's sum over its buckets before the
-- current ones. While '~m' is the current finest bucket id no bucket has opened since, so
-- a window is its summary plus its current bucket: one HMGET instead of reading every
-- bucket. Writes outside the current buckets (a late decline, feedback) delete '~m'.
local function summarised(P, key, A, out, current)
  local names = {}
  local hn, cf = P.hn, P.cf
  for i = 1, #hn do names[i] = hn[i] end
  for j = 1, #cf do names[#hn + j] = A[cf[j][1]] end
  local got = call('HMGET', key, unpack(names))
  if got[1] ~= A[P.mk] then return nil end
  local has_f = got[2] == '1'
  local sl = P.sl
  for i = 1, #sl do
    local v = got[2 + i]
    if v and v ~= '0' then out[sl[i]] = out[sl[i]] + tonumber(v) end
  end
  for j = 1, #cf do
    local v = got[#hn + j]
    if v then
      local c = cf[j]
      current[names[#hn + j]] = v
      local n = tonumber(v)
      local slots = c[2]
      for s = 1, #slots do out[slots[s]] = out[slots[s]] + n end
      if c[3] then has_f = true end
    end
  end
  return has_f
end

-- Every field, once: window sums, stale fields to delete, and the summary to keep.
local function scanned(P, key, A, out, current, write, keep_summary)
  local flat = call('HGETALL', key)
  local F = P.f
  local stale, has_f, tilde = nil, false, false
  for i = 1, #flat, 2 do
    local field = flat[i]
    local m, wc = byte(field, 1, 2)
    if m == 126 then
      if tilde then tilde[#tilde + 1] = field else tilde = {field} end
    else
      local spec = F[m * 256 + wc]
      local low = spec and A[spec[1]]
      local n = #field
      if not spec or n < #low or (n == #low and field < low) then
        if stale then stale[#stale + 1] = field else stale = {field} end
      else
        if m == 102 then has_f = true end
        local cur = A[spec[2]]
        local nc = #cur
        if field == cur then current[field] = flat[i + 1] end
        local windows = spec[3]
        if #windows > 0 and (n < nc or (n == nc and field <= cur)) then
          local v = tonumber(flat[i + 1])
          for j = 1, #windows do
            local r = windows[j]
            local first = A[r[1]]
            local nf = #first
            if n > nf or (n == nf and field >= first) then out[r[2]] = out[r[2]] + v end
          end
        end
      end
    end
  end
  local summary = nil
  local big = #flat >= 2 * BIG
  if write and big and keep_summary then
    summary = {'~m', A[P.mk], '~f', has_f and '1' or '0'}
    local sl, sc, hn = P.sl, P.sc, P.hn
    for i = 1, #sl do
      summary[#summary + 1] = hn[2 + i]
      summary[#summary + 1] = int(out[sl[i]] - (tonumber(current[A[sc[i]]]) or 0))
    end
  elseif tilde and write then
    -- an older summary, or a newer one this (late) write would leave wrong: drop it
    stale = stale or {}
    for i = 1, #tilde do stale[#stale + 1] = tilde[i] end
  end
  if stale then call('HDEL', key, unpack(stale)) end
  return has_f, #flat == 0, big, summary
end

-- Counts the attempt and adds the entity's counter windows to ``out``.
-- Returns: hash was empty, a TTL-refreshing bucket opened, hash is busy.
-- ``flag``: 49 scan, 50 try the summary first, 51 scan and keep a summary (see velocity.py).
local function counters(P, key, A, write, out, flag)
  local current = {}
  local has_f, fresh, big, summary = nil, false, true, nil
  if flag == 50 then has_f = summarised(P, key, A, out, current) end
  if has_f == nil then
    has_f, fresh, big, summary = scanned(P, key, A, out, current, write, flag ~= 49)
  end
  local newstar = P.nostar
  if write and #P.wr > 0 then
    local cents_text = A[6]
    local cents = tonumber(cents_text)
    local args = summary or {}
    local n = #args
    for i = 1, #P.wr do
      local w = P.wr[i]
      local field = A[w[1]]
      local old = current[field]
      if not old and w[5] then newstar = true end
      args[n + 1] = field
      args[n + 2] = old and tonumber(old) + 1 or '1'
      n = n + 2
      local slots = w[3]
      for j = 1, #slots do out[slots[j]] = out[slots[j]] + 1 end
      if w[2] and cents ~= 0 then
        field = A[w[2]]
        old = current[field]
        args[n + 1] = field
        args[n + 2] = old and int(tonumber(old) + cents) or cents_text
        n = n + 2
        slots = w[4]
        for j = 1, #slots do out[slots[j]] = out[slots[j]] + cents end
      end
    end
    call('HSET', key, unpack(args))
    if newstar then call('EXPIRE', key, has_f and P.ttlf or P.ttl) end
  end
  return fresh, newstar, big
end

local function members(P, key, A, a, write, fresh, newstar, out)
  local kinds = P.z
  if write then
    local args = {'GT'}
    local with = {}
    for i = 1, #kinds do
      local member = A[a + i - 1]
      if member ~= '' then
        with[i] = true
        args[#args + 1] = A[kinds[i][1]]
        args[#args + 1] = member
      end
    end
    local given = (#args - 1) / 2
    if given > 0 then
      local added = call('ZADD', key, unpack(args))
      -- prune once per TTL-refreshing bucket: the set holds at most its largest window
      -- plus one such bucket of members (a new entity has nothing to prune, unless its
      -- set can outlive its counters: zold)
      if added > 0 and newstar and (P.zold or not fresh) then
        for i = 1, #kinds do
          if with[i] then call('ZREMRANGEBYSCORE', key, kinds[i][3], A[kinds[i][2]]) end
        end
      end
      -- a set that had one of these members had a TTL, refreshed when the bucket opened;
      -- only a set made of new members alone may be new
      if newstar or added == given then call('EXPIRE', key, P.zttl) end
    end
  end
  for i = 1, #kinds do
    local z = kinds[i]
    local windows = z[5]
    for j = 1, #windows do
      local w = windows[j]
      out[w[2]] = call('ZCOUNT', key, A[w[1]], z[4])
    end
  end
  return a + #kinds
end

local function lists(KEYS, A, k, a, now_ms)
  local index = call('HGETALL', KEYS[2])
  local version = 0
  local live = {}
  for i = 1, #index, 2 do
    if index[i] == 'version' then
      version = tonumber(index[i + 1])
    elseif index[i + 1] ~= '0' then
      live[index[i]] = true
    end
  end
  local hits = {}
  local now_s = now_ms / 1000
  while a <= #A do
    local key = KEYS[k]
    k = k + 1
    local name = A[a]
    local n = tonumber(A[a + 1])
    if live[name] then
      local items = {}
      for i = 1, n do items[i] = A[a + 2 * i + 1] end
      local found = call('HMGET', key, unpack(items))
      for i = 1, n do
        if found[i] then
          local entry = cjson.decode(found[i])
          local expires = entry.expires_at
          if type(expires) == 'number' and expires <= now_s then
            if call('HDEL', key, items[i]) == 1 then call('HINCRBY', KEYS[2], name, -1) end
          else
            local reason = entry.reason
            if type(reason) ~= 'string' then reason = false end
            hits[#hits + 1] = {name, A[a + 2 * i], reason}
          end
        end
      end
    end
    a = a + 2 + 2 * n
  end
  return version, hits
end

local function begin(KEYS, ARGV)
  local tx = KEYS[1]
  local claim = call('HMGET', tx, 'state', 'digest', 'decision', 'claimed_at')
  local status = 'new'
  if claim[1] then
    if claim[2] and claim[2] ~= ARGV[2] then return {'conflict'} end
    if claim[1] == 'done' then return {'replay', claim[3]} end
    if tonumber(ARGV[1]) - tonumber(claim[4] or 0) < tonumber(ARGV[3]) then
      return {'pending'}
    end
    status = 'takeover'
    call('HSET', tx, 'claimed_at', ARGV[1])
  else
    call('HSET', tx, 'state', 'pending', 'digest', ARGV[2], 'claimed_at', ARGV[1])
    call('EXPIRE', tx, ARGV[4])
  end
  local write = status == 'new'

  local mask = ARGV[5]
  local out = {}
  for i = 1, SLOTS do out[i] = 0 end
  local busy = {}
  local k, a = 3, 7 + CLOCK
  for e = 1, #PLAN do
    local flag = byte(mask, e)
    busy[e] = '0'
    if flag ~= 48 then
      local P = PLAN[e]
      local fresh, newstar, big = false, P.nostar, false
      if P.c then
        fresh, newstar, big = counters(P, KEYS[k], ARGV, write, out, flag)
        if big then busy[e] = '1' end
        k = k + 1
      end
      if #P.z > 0 then
        a = members(P, KEYS[k], ARGV, a, write, fresh, newstar, out)
        k = k + 1
      end
    end
  end
  local version, hits = lists(KEYS, ARGV, k, a, tonumber(ARGV[1]))
  return {status, false, version, out, hits, table.concat(busy)}
end
