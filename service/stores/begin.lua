-- begin: claim a transaction id, count the attempt, read every velocity feature and look up
-- the block/allow lists, atomically. Part of the function library that library.py builds
-- (after the shared locals and the catalogue's PLAN); the key layout is in keys.py. The
-- state helpers below serve commit.lua and feedback.lua too.
--
-- KEYS: 1 tx, 2 lists index, then per present entity (PLAN order, ARGV[5] mask) its
--       velocity key; then per looked-up entity its block_ and allow_ list keys.
-- ARGV: 1 now (ms, the service clock), 2 digest, 3 pending timeout (ms), 4 tx ttl (s),
--       5 entity mask ('0' absent, '1' present), 6 USD cents, 7 event second, then per
--       distinct kind of each present entity its member digest ('' when missing), then per
--       looked-up entity: its name, n, n x (attribute, item), for both of its lists.
-- Returns {status, decision|false, lists version, {raw sums by slot}, {{list, entity, reason}}}.
--
-- Lean on purpose: a redis.call costs one to three microseconds (a SET that sets a TTL
-- about 1.5 more than one that keeps it), a Lua table a tenth of one, and every number
-- moved in Lua some tens of nanoseconds. So the entities' states come with one MGET and
-- each goes back with one SET; a state is one flat run of numbers (no table per series, no
-- strings), and one pass copies it forward while counting, pruning and reading windows.
--
-- TTL: a state's TTL is the longest horizon of its non-empty groups and kinds plus the
-- width of its refreshing group (PLAN[e].star: the group begin writes with the longest
-- horizon). It is set when the entity is new, when that group opens a bucket, or when the
-- state needs a longer horizon than before; other writes keep it: a bucket opens at most
-- one refreshing width after the last one, so the TTL set then still covers them.
--
-- An entity's state: little-endian doubles, per group of PLAN[e].g in order its record
-- count n then n records (bucket id, then a value per measure), buckets ascending; then
-- per kind of PLAN[e].z its member count n then n pairs (member digest, last seen).

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

-- Writes O[1..m]: with the TTL ``ttl`` when ``expire`` (setting a TTL costs about a
-- microsecond more than keeping one), else keeping the key's TTL; deletes the state when
-- nothing in it can count (``ttl`` 0).
local function save(key, m, ttl, existed, expire)
  if ttl == 0 then
    if existed then call('DEL', key) end
  elseif expire or not existed then
    call('SET', key, struct.pack(format(m), unpack(O, 1, m)), 'EX', ttl)
  else
    call('SET', key, struct.pack(format(m), unpack(O, 1, m)), 'KEEPTTL')
  end
end

-- Copies the group at v[p] (its record count, then records of ``k`` values: bucket id and
-- one value per measure) to O after m. Records of buckets below ``low``, or with no value
-- above 0, are dropped. With ``codes`` (per record position: 1 add ``one``, 2 add
-- ``cents``) the record of bucket ``cur`` gets the additions, and is made when missing.
-- Returns the positions after the group in v and in O, and whether it made a record.
local function copy_group(v, p, m, k, cur, low, codes, one, cents)
  local last = p + k * (v[p] or 0)
  local h = m + 1
  m = h
  local q = p + 1
  local made = false
  while q <= last or codes do
    local b = q <= last and v[q] or nil
    local src, add = q, nil
    if codes and (not b or b >= cur) then
      add, codes = codes, nil
      if b ~= cur then src = nil end
      b = cur
    end
    if src then q = q + k end
    if b >= low then
      O[m + 1] = b
      local any = false
      for j = 2, k do
        local x = src and v[src + j - 1] or 0
        if add then
          local c = add[j]
          if c == 1 then
            x = x + one
          elseif c == 2 then
            x = x + cents
          end
        end
        O[m + j] = x
        if x > 0 then any = true end
      end
      if any then
        m = m + k
        if add and not src then made = true end
      end
    end
  end
  O[h] = (m - h) / k
  return last + 1, m, made
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

-- Window sums of the records X[lo..hi] (``k`` values each) into ``out``:
-- {{record position of the measure, buckets, slot}}.
local function sums(X, lo, hi, k, cur, windows, out)
  for j = 1, #windows do
    local r = windows[j]
    local at, first = r[1] - 1, cur - r[2] + 1
    local total = 0
    for q = hi - k + 1, lo, -k do
      local b = X[q]
      if b < first then break end
      if b <= cur then total = total + X[q + at] end
    end
    out[r[3]] = total
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
  local G, Z, star = P.g, P.z, P.star
  local p, m, ttl, old, opened = 1, 0, 0, 0, star == 0
  for i = 1, #G do
    local g = G[i]
    local k = g[2]
    local cur = floor(t / g[1])
    local lo, hi
    if write then
      local made
      if (v[p] or 0) > 0 and g[4] > old then old = g[4] end
      lo = m + 2
      p, m, made = copy_group(v, p, m, k, cur, cur - g[3], g[5], 1, cents)
      hi = m
      if hi > lo and g[4] > ttl then ttl = g[4] end
      if made and i == star then opened = true end
    else
      lo, hi = p + 1, p + k * (v[p] or 0)
      p = hi + 1
    end
    if hi > lo then sums(X, lo, hi, k, cur, g[8], out) end
  end
  for i = 1, #Z do
    local z = Z[i]
    local lo, hi
    if write then
      if (v[p] or 0) > 0 and z[3] > old then old = z[3] end
      lo = m + 2
      p, m = copy_members(v, p, m, tonumber(A[a + i - 1]), t, (floor(t / z[1]) - z[2]) * z[1])
      hi = m
      if hi > lo and z[3] > ttl then ttl = z[3] end
    else
      lo, hi = p + 1, p + 2 * (v[p] or 0)
      p = hi + 1
    end
    if hi > lo then distinct(X, lo, hi, t, z[4], out) end
  end
  if write then save(key, m, ttl + P.refresh, existed, opened or ttl > old) end
  return a + #Z
end

-- Adds ``delta`` to the bucket of second ``t`` of the measures that ``which`` (6 declines,
-- 7 frauds: a position in PLAN's group entries) marks: commit's declines, feedback's
-- frauds. Nothing is pruned. The TTL grows when the touched groups need more.
local function recount(P, key, which, t, delta)
  local v, existed = decode(call('GET', key))
  local G, Z = P.g, P.z
  local p, m, ttl, need = 1, 0, 0, 0
  for i = 1, #G do
    local g = G[i]
    local h = m
    p, m = copy_group(v, p, m, g[2], floor(t / g[1]), -1, g[which], delta, 0)
    if m > h + 1 and g[4] > ttl then ttl = g[4] end
    if m > h + 1 and g[which] and g[4] > need then need = g[4] end
  end
  for i = 1, #Z do
    local n = v[p] or 0
    O[m + 1] = n
    for j = 1, 2 * n do O[m + 1 + j] = v[p + j] end
    m = m + 1 + 2 * n
    p = p + 1 + 2 * n
    if n > 0 and Z[i][3] > ttl then ttl = Z[i][3] end
  end
  if ttl > 0 then ttl = ttl + P.refresh end
  save(key, m, ttl, existed, existed and ttl > 0 and call('TTL', key) < need + P.refresh)
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
    local entity = A[a]
    local n = tonumber(A[a + 1])
    for side = 0, 1 do
      local name = (side == 0 and 'block_' or 'allow_') .. entity
      if live[name] then
        local key = KEYS[k + side]
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
    end
    k = k + 2
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
