-- begin: claim a transaction id, count the attempt, read every velocity feature and look up
-- the block/allow lists, atomically. Part of the function library that library.py builds
-- (after the shared locals and the catalogue's PLAN); the key layout is in keys.py. The
-- state helpers below serve commit.lua and feedback.lua too.
--
-- KEYS: 1 tx, 2 lists index, then per present entity (PLAN order, ARGV[5] mask) its
--       velocity key; then one key per list.
-- ARGV: 1 now (ms, the service clock), 2 digest, 3 pending timeout (ms), 4 tx ttl (s),
--       5 entity mask ('0' absent, '1' present), 6 USD cents, 7 event second, then per
--       distinct kind of each present entity its member digest ('' when missing), then per
--       list: name, n, n x (entity, item).
-- Returns {status, decision|false, lists version, {raw sums by slot}, {{list, entity, reason}}}.
--
-- Lean on purpose: a redis.call costs about a microsecond, a Lua table about a tenth of
-- one, and every number moved in Lua some tens of nanoseconds. So the entities' states
-- come with one MGET and each goes back with one SET (its whole state, TTL included), its state is one flat run of numbers (no
-- table per series, no strings), and one pass copies it forward while counting, pruning
-- and reading the windows.
--
-- An entity's state: little-endian doubles, per series of PLAN[e].s in order its pair
-- count n then n pairs (bucket id, value), buckets ascending; then per kind of PLAN[e].z
-- its member count n then n pairs (member digest, last-seen second).

local EMPTY, O, FORMATS = {}, {}, {}

local function format(n)
  local f = FORMATS[n]
  if not f then
    f = '<' .. string.rep('d', n)
    FORMATS[n] = f
  end
  return f
end

-- An entity's state as one array (struct.unpack's trailing position is ignored).
local function decode(blob)
  if not blob then return EMPTY, false end
  return {struct.unpack(format(#blob / 8), blob)}, true
end

-- Writes O[1..m] with its TTL, or deletes the state when nothing in it can count.
local function save(key, m, ttl, existed)
  if ttl > 0 then
    call('SET', key, struct.pack(format(m), unpack(O, 1, m)), 'EX', ttl)
  elseif existed then
    call('DEL', key)
  end
end

-- Copies the series at v[p] to O after m: buckets below ``low`` and values at or below 0
-- are dropped, ``add`` goes to bucket ``cur`` (a new bucket only for add > 0).
-- Returns the positions after the series in v and in O.
local function copy_series(v, p, m, cur, add, low)
  local last = p + 2 * (v[p] or 0)
  local h = m + 1
  m = h
  for k = p + 1, last, 2 do
    local b, x = v[k], v[k + 1]
    if add ~= 0 and b >= cur then
      if b == cur then
        x = x + add
      elseif add > 0 and cur >= low then
        O[m + 1], O[m + 2] = cur, add
        m = m + 2
      end
      add = 0
    end
    if b >= low and x > 0 then
      O[m + 1], O[m + 2] = b, x
      m = m + 2
    end
  end
  if add > 0 and cur >= low then
    O[m + 1], O[m + 2] = cur, add
    m = m + 2
  end
  O[h] = (m - h) / 2
  return last + 1, m
end

-- Copies the members at v[p] to O after m, dropping those last seen before ``low``, and
-- remembers ``member`` (a digest, or nil) at second ``t``: its last-seen second moves up,
-- or it joins, in the place of the member seen longest ago when CAP are kept already.
local function copy_members(v, p, m, member, t, low)
  local last = p + 2 * (v[p] or 0)
  local h = m + 1
  m = h
  local oldest, at = nil, 0
  for k = p + 1, last, 2 do
    local d, seen = v[k], v[k + 1]
    if d == member then
      if seen < t then seen = t end
      member = nil
    end
    if seen >= low then
      O[m + 1], O[m + 2] = d, seen
      m = m + 2
      if not oldest or seen < oldest then oldest, at = seen, m - 1 end
    end
  end
  if member and t >= low then
    if m - h < 2 * CAP then
      O[m + 1], O[m + 2] = member, t
      m = m + 2
    elseif t >= oldest then
      O[at], O[at + 1] = member, t
    end
  end
  O[h] = (m - h) / 2
  return last + 1, m
end

-- Window sums of the pairs X[lo..hi] (bucket, value) into ``out``: {{buckets, slot}}.
local function sums(X, lo, hi, cur, windows, out)
  for j = 1, #windows do
    local first = cur - windows[j][1] + 1
    local total = 0
    for k = hi - 1, lo, -2 do
      local b = X[k]
      if b < first then break end
      if b <= cur then total = total + X[k + 1] end
    end
    out[windows[j][2]] = total
  end
end

-- Members of X[lo..hi] (digest, last seen) per window into ``out``: {{width, buckets, slot}}.
local function distinct(X, lo, hi, t, windows, out)
  for j = 1, #windows do
    local w = windows[j][1]
    local low = (floor(t / w) - windows[j][2] + 1) * w
    local n = 0
    for k = lo + 1, hi, 2 do
      if X[k] >= low then n = n + 1 end
    end
    out[windows[j][3]] = n
  end
end

-- Counts the attempt (``write``) and reads the entity's windows into ``out``.
-- ``A[a]``.. are the member digests of its distinct kinds; returns the next ARGV position.
local function entity(P, key, blob, A, a, t, cents, write, out)
  local v, existed = decode(blob)
  local X = write and O or v
  local S, Z = P.s, P.z
  local p, m, ttl = 1, 0, 0
  for i = 1, #S do
    local s = S[i]
    local cur = floor(t / s[2])
    local lo, hi
    if write then
      local add = s[5]
      if add == 2 then add = cents end
      lo = m + 2
      p, m = copy_series(v, p, m, cur, add, cur - s[3])
      hi = m
      if hi > lo and s[4] > ttl then ttl = s[4] end
    else
      lo, hi = p + 1, p + 2 * (v[p] or 0)
      p = hi + 1
    end
    if hi > lo then sums(X, lo, hi, cur, s[6], out) end
  end
  for i = 1, #Z do
    local z = Z[i]
    local lo, hi
    if write then
      lo = m + 2
      p, m = copy_members(v, p, m, tonumber(A[a + i - 1]), t, (floor(t / z[2]) - z[3]) * z[2])
      hi = m
      if hi > lo and z[4] > ttl then ttl = z[4] end
    else
      lo, hi = p + 1, p + 2 * (v[p] or 0)
      p = hi + 1
    end
    if hi > lo then distinct(X, lo, hi, t, z[5], out) end
  end
  if write then save(key, m, ttl, existed) end
  return a + #Z
end

-- Adds ``delta`` to the bucket of second ``t`` of the series ``which`` (a set of positions
-- in PLAN[e].s): commit's declines, feedback's frauds. Nothing is pruned.
local function recount(P, key, which, t, delta)
  local v, existed = decode(call('GET', key))
  local S, Z = P.s, P.z
  local p, m, ttl = 1, 0, 0
  for i = 1, #S do
    local s = S[i]
    local h = m
    p, m = copy_series(v, p, m, floor(t / s[2]), which[i] and delta or 0, -1)
    if m > h + 1 and s[4] > ttl then ttl = s[4] end
  end
  for i = 1, #Z do
    local n = v[p] or 0
    O[m + 1] = n
    for k = 1, 2 * n do O[m + 1 + k] = v[p + k] end
    m = m + 1 + 2 * n
    p = p + 1 + 2 * n
    if n > 0 and Z[i][4] > ttl then ttl = Z[i][4] end
  end
  save(key, m, ttl, existed)
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
  local cents, t = tonumber(ARGV[6]), tonumber(ARGV[7])
  local out = {}
  for i = 1, SLOTS do out[i] = 0 end
  local k, a = 3, 8
  local present = 0
  for e = 1, #PLAN do
    if byte(mask, e) ~= 48 then present = present + 1 end
  end
  local blobs = present > 0 and call('MGET', unpack(KEYS, 3, 2 + present)) or EMPTY
  for e = 1, #PLAN do
    if byte(mask, e) ~= 48 then
      a = entity(PLAN[e], KEYS[k], blobs[k - 2], ARGV, a, t, cents, write, out)
      k = k + 1
    end
  end
  local version, hits = lists(KEYS, ARGV, k, a, tonumber(ARGV[1]))
  return {status, false, version, out, hits}
end
