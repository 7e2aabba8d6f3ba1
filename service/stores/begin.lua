-- begin: claim a transaction id, count the attempt, read every velocity feature and look up
-- the block/allow lists, atomically. Part of the function library that library.py builds
-- (after the shared locals, the catalogue's PLAN and COUNT functions, and LISTS); the key
-- layout is in keys.py. The state helpers below serve commit.lua and feedback.lua too.
--
-- KEYS: 1 tx, 2 lists index, then per present entity (PLAN order, ARGV[5] mask) its
--       velocity key; then the key of each list marked '1' in the lists mask.
-- ARGV: 1 now (ms, the service clock), 2 digest, 3 pending timeout (ms), 4 tx ttl (s),
--       5 entity mask ('0' absent, '1' present), 6 little-endian doubles: USD cents, event
--       second, window second (plan.py: the event second, or the server's when earlier),
--       the amount's log units (catalog.amount_log_units) and their square,
--       then MEMBERS member digests, one per distinct code (keys.py) at the code's
--       place (-1 when missing or unused), 7 the lists mask, 8 the lists version the mask
--       is exact for ('' when it is not), then the items of each list entity with a list
--       marked '1' (see lookups below). (The numbers come packed: as
--       text, tonumber of a 16-digit digest is some 1,500 instructions of strtod, and each
--       argument about a thousand more.)
-- Returns {status, decision|false, lists version, raw sums by slot (SLOTS little-endian
-- doubles), {{list, entity, reason}}, [the mask of the lists that hold items, when the
-- client's marks one that does not]}; or {'lists', mask of the lists that hold items, lists
-- version}, having done nothing, when the client's left out one of them (it sends again).
--
-- Lean on purpose: Redis runs this for every score call, on one thread. What it costs,
-- counted with benchmarks/redis_begin.py --callgrind (x86 instructions per begin on the
-- benchmark's traffic): a redis.call some 10 to 20 thousand (arguments, the command, its
-- reply as Lua values, the AOF), an argument of FCALL about a thousand (parsed, then made a
-- Lua string), tonumber of a long digit string about 1,300 (strtod), a double packed or
-- unpacked by struct a hundred or two, every string Lua makes (a state read, a state
-- packed) some 10 a byte (Redis' Lua hashes every byte to intern it), a table read or
-- write about a hundred, and every Lua instruction some 30. So the entities'
-- states come with one MGET and each goes back with one SET; a state is one flat run of
-- numbers (no table per series, no strings), and one pass copies it forward while
-- counting, pruning and reading windows: COUNT[e], which plan.py writes out per entity
-- with the plan's numbers as constants (the rules are in its _count_group and
-- _count_kind), rather than a loop reading them from PLAN, its window sums in Lua locals
-- (not a table), returned packed; a new entity's state, of fixed shape, is made straight
-- by FRESH[e] (plan.py's _fresh_entity) instead; what every entity needs (the bucket of
-- each width, the member digests) is computed once per call; the sums go back packed in
-- one string (a reply of 49 numbers costs Redis twice the packing); only the lists in use
-- are sent (lookups below).
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

-- Scratch tables kept across calls (filled afresh by each, so no call sees another's
-- values), rather than made per call: O the state being written, SUMS the packed sums of
-- each entity, CUR the bucket of the event second per width of WIDTHS, START that of the
-- window second (where the windows start), MEMBER the member digests by code. ZERO[e]:
-- entity e's sums when it is absent (its slots at 0), made at the first use.
local EMPTY, O, SUMS, CUR, START, MEMBER, FORMATS, ZERO = {}, {}, {}, {}, {}, {}, {}, {}

local function format(n)
  local f = FORMATS[n]
  if not f then
    f = '<' .. string.rep('d', n)
    FORMATS[n] = f
  end
  return f
end

-- Unpacks begin's numbers (ARGV[6] of begin; cluster_count's too): fills CUR and START
-- (the bucket of the event and of the window second per width of WIDTHS) and MEMBER (the
-- member digest per code, false when missing); returns the USD cents, the event second,
-- the amount's log units and their square.
local function numbers(packed)
  local n = {struct.unpack(format(5 + MEMBERS), packed)}
  local t, from = n[2], n[3]
  local cur, start, members, widths = CUR, START, MEMBER, WIDTHS
  for i = 1, #widths do
    local w = widths[i]
    cur[i] = floor(t / w)
    start[i] = floor(from / w)
  end
  for i = 1, MEMBERS do
    local digest = n[5 + i]
    members[i] = digest >= 0 and digest
  end
  return n[1], t, n[4], n[5]
end

-- An entity's state as one array (struct.unpack's trailing position is ignored).
local function decode(blob)
  if not blob then return EMPTY, false end
  return {struct.unpack(format(#blob / 8), blob)}, true
end

-- The decimal text of each TTL, made once: Redis 7.0 turns a number argument of
-- redis.call into text with snprintf('%.17g'), some 2,400 instructions each time.
local TTLS = {}

-- Writes O[1..m]: with the TTL ``ttl`` when ``expire`` (setting a TTL costs about a
-- microsecond more than keeping one), else keeping the key's TTL; deletes the state when
-- nothing in it can count (``ttl`` 0).
local function ttl_text(ttl)
  local text = TTLS[ttl]
  if not text then
    text = tostring(ttl)
    TTLS[ttl] = text
  end
  return text
end

local function save(key, m, ttl, existed, expire)
  if ttl == 0 then
    if existed then call('DEL', key) end
  elseif expire or not existed then
    call('SET', key, struct.pack(FORMATS[m] or format(m), unpack(O, 1, m)), 'EX', ttl_text(ttl))
  else
    call('SET', key, struct.pack(FORMATS[m] or format(m), unpack(O, 1, m)), 'KEEPTTL')
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
          if x < 0 then x = 0 end  -- a withdrawal of a count the state no longer holds
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

-- Counts the attempt (``write``) and reads entity e's windows: COUNT[e] copies the state
-- forward to O, pruning it, and begin writes it back; ``cur`` holds the bucket of the event
-- second per width of WIDTHS, M the member digest per distinct code. (A takeover only reads:
-- the same pass, without the attempt, and nothing written.) Returns the entity's sums, its
-- run of the output slots (plan.py numbers them entity by entity), packed.
local function entity(e, key, blob, M, t, cur, start, cents, units, units2, write)
  local fresh = not blob and write and FRESH[e]
  if fresh then  -- a new entity's attempt: COUNT[e]'s state and sums, made straight
    local ttl, sums, state = fresh(O, format, M, cur, start, t, cents, units, units2)
    ttl = ttl + PLAN[e].refresh
    if ttl > 0 then call('SET', key, state, 'EX', ttl_text(ttl)) end
    return sums
  end
  local v, existed = EMPTY, false
  if blob then
    local n = #blob / 8
    v, existed = {struct.unpack(FORMATS[n] or format(n), blob)}, true
  end
  local m, ttl, old, opened, sums = COUNT[e](v, O, M, cur, start, t, cents, units, units2, write)
  if write then save(key, m, ttl + PLAN[e].refresh, existed, opened or ttl > old) end
  return sums
end

-- Entity e's sums when it is absent: its slots at 0.
local function zero(e)
  local z = ZERO[e]
  if not z then
    z = string.rep('\0', 8 * PLAN[e].slots)
    ZERO[e] = z
  end
  return z
end

-- Adds ``delta`` to the bucket of second ``t`` of the measures that ``which`` (6 declines,
-- 7 frauds, 8 reported frauds: a position in PLAN's group entries) marks: commit's
-- declines, feedback's frauds (at the payment's second and at the label's arrival). Nothing is pruned. The TTL grows when the touched groups need more.
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

-- The lists begin looks up: LISTS (library.py) names per list entity the attributes its
-- items come from and its block_ and allow_ lists; LIST_FIELDS is 'version' then every
-- list's item count, as the lists index holds them. The client sends a mask of two marks
-- per list entity (block, allow): '0' it believes the list empty, '1' it sends the list's
-- key (and, once per entity, its items), '2' it believes the list holds items but the
-- payment has nothing to look up there. It learns which lists hold items from the answers
-- (check_lists), so a payment carries the keys and items of the lists in use only (none,
-- mostly, instead of some 40 arguments for the 16 lists every call).
--
-- With the mask comes the lists version it is exact for. Only a list change (list_change,
-- which gives the lists a new version) can make a list gain items, so while the version
-- is the client's, its mask is right and begin reads the version alone: the index's 17
-- fields, as arguments and as Lua strings, cost Redis about 4 % of a begin. A version
-- is unique over time (bump_lists_version), so a client that learned one before the data
-- was lost (a flush, a restore) cannot mistake a later index for the one it knew.

-- Gives the lists a new version: above the last one, and at least the server's clock in
-- µs, so that no version comes back after the index was lost and rebuilt (a change takes
-- longer than a µs; a double holds the number exactly).
local function bump_lists_version(index)
  local last = tonumber(call('HGET', index, 'version')) or 0
  local time = call('TIME')
  local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  call('HSET', index, 'version', string.format('%.0f', math.max(last + 1, now)))
end

local NO_LISTS  -- the mask of a client that believes no list in use (made at the first call)

-- The mask of the lists that hold items ('1', else '0').
local function held_lists(index)
  local held = {}
  for i = 2, #LIST_FIELDS do
    local n = index[i]
    held[i - 1] = (n and n ~= '0') and '1' or '0'
  end
  return table.concat(held)
end

-- Whether the client's mask leaves out a list that holds items (it must send again), and
-- the mask of those that do when it differs from the client's (nil when not): a list it
-- marks but that no longer holds items is reported too, so that it stops sending it.
local function check_lists(index, mask)
  NO_LISTS = NO_LISTS or string.rep('0', #LIST_FIELDS - 1)
  if mask == NO_LISTS then  -- (most calls: no list in use, none believed)
    for i = 2, #LIST_FIELDS do
      local n = index[i]
      if n and n ~= '0' then return true, held_lists(index) end
    end
    return false, nil
  end
  local differs = false
  for i = 2, #LIST_FIELDS do
    local n = index[i]
    local marked = byte(mask, i - 1) ~= 48
    if n and n ~= '0' then
      if not marked then return true, held_lists(index) end
    elseif marked then
      differs = true
    end
  end
  if differs then return false, held_lists(index) end
  return false, nil
end

-- The lists version and, when it is not ``known`` (the one the client's mask is exact for),
-- the index (LIST_FIELDS) and check_lists of ``mask`` against it: returns the version, the
-- index (nil when not read), the mask of the lists that hold items (nil unless it differs)
-- and whether the client left out a list in use (then it must send again).
local function lists_state(index_key, mask, known)
  local version = call('HGET', index_key, 'version') or '0'
  if version == known then return version, nil, nil, false end
  local index = call('HMGET', index_key, unpack(LIST_FIELDS))
  local unseen, held = check_lists(index, mask)
  return version, index, held, unseen
end

-- Looks up the items A[a].. (per list entity sent, one per attribute, '' when missing) in
-- the lists sent (KEYS[k].., in LISTS order, block before allow) that hold items (by
-- ``index``, when begin read it; else every list sent: the client's mask is exact); an
-- expired item counts as absent and is deleted (a list it empties gets a new version, so
-- that clients stop sending it). Returns {{list, attribute, reason|false}}.
local function lookups(KEYS, A, k, a, mask, index, now_s)
  local hits = {}
  for e = 1, #LISTS do
    local block, allow = byte(mask, 2 * e - 1) == 49, byte(mask, 2 * e) == 49
    if block or allow then
      local L = LISTS[e]
      local attributes = L[1]
      for side = 0, 1 do
        if (side == 0 and block) or (side == 1 and allow) then
          local key = KEYS[k]
          local count = index and index[2 * e + side]
          k = k + 1
          if not index or (count and count ~= '0') then
            local items, names = {}, {}
            for i = 1, #attributes do
              local item = A[a + i - 1]
              if item ~= '' then
                items[#items + 1] = item
                names[#names + 1] = attributes[i]
              end
            end
            if #items > 0 then
              local name = L[2 + side]
              local found = call('HMGET', key, unpack(items))
              for i = 1, #items do
                if found[i] then
                  local entry = cjson.decode(found[i])
                  local expires = entry.expires_at
                  if type(expires) == 'number' and expires <= now_s then
                    if call('HDEL', key, items[i]) == 1
                      and call('HINCRBY', KEYS[2], name, -1) <= 0 then
                      bump_lists_version(KEYS[2])
                    end
                  else
                    local reason = entry.reason
                    if type(reason) ~= 'string' then reason = false end
                    hits[#hits + 1] = {name, names[i], reason}
                  end
                end
              end
            end
          end
        end
      end
      a = a + #attributes
    end
  end
  return hits
end

-- A transaction's key (keys.py) is one string: a claim 'p', digest, claimed-at (ms); a
-- decision 'd', digest, fraud mark ('' | '0' | '1'), the entity record (JSON), the
-- response (JSON); the fields apart by '\n', which JSON text never holds. A claim made
-- before this layout is a hash (state, digest, claimed_at, decision, record, fraud) and
-- is still read, until its TTL ends; SET ... GET answers a hash with an error.
-- Returns the state ('pending' | 'done'), digest, claimed-at, response, and whether the
-- claim is such a hash.
-- Whether redis.pcall's ``reply`` of a string command says the key holds a hash (any
-- other error is raised).
local function hash_layout(reply)
  if type(reply) ~= 'table' then return false end
  if not string.find(reply.err or '', 'WRONGTYPE', 1, true) then error(reply) end
  return true
end

-- The positions of the first three field separators of a transaction's string value.
local function tx_fields(value)
  local a = string.find(value, '\n', 3, true)
  local b = a and string.find(value, '\n', a + 1, true)
  return a, b, b and string.find(value, '\n', b + 1, true)
end

local function read_claim(tx, value)
  if hash_layout(value) then
    local h = call('HMGET', tx, 'state', 'digest', 'claimed_at', 'decision')
    return h[1], h[2], h[3], h[4], true
  end
  local a, _, c = tx_fields(value)
  if byte(value, 1) == 112 then  -- 'p'
    return 'pending', sub(value, 3, a - 1), sub(value, a + 1), nil, false
  end
  return 'done', sub(value, 3, a - 1), nil, sub(value, c + 1), false
end

-- Claims the transaction key ``tx`` for the call claimed at ``at`` (ms, as text) with the
-- payload ``digest``, the claim living ``ttl`` s. One command claims a new id, with its
-- TTL, and hands back a claim already there. Returns 'new'; 'replay' and the stored answer;
-- 'conflict' (another digest); 'pending' (claimed less than ``pending`` ms before); or
-- 'takeover' (an older claim, which now carries ``at``). ``resent``: a claim that carries
-- ``at`` already is the call's own sent again (a cluster client's retry) and reads 'new'.
local function claim(tx, at, digest, pending, ttl, resent)
  local held = redis.pcall('SET', tx, 'p\n' .. digest .. '\n' .. at, 'NX', 'GET', 'EX', ttl)
  if not held then return 'new' end
  local state, was, claimed_at, decision, legacy = read_claim(tx, held)
  if was and was ~= digest then return 'conflict' end
  if state == 'done' then return 'replay', decision end
  if resent and claimed_at == at then return 'new' end
  if tonumber(at) - (tonumber(claimed_at) or 0) < tonumber(pending) then return 'pending' end
  if legacy then
    call('HSET', tx, 'claimed_at', at)
  else
    call('SET', tx, 'p\n' .. was .. '\n' .. at, 'KEEPTTL')
  end
  return 'takeover'
end

local function begin(KEYS, ARGV)
  local lists = ARGV[7]
  -- the lists changed since the client learned them: one it left out is in use?
  local version, index, held, unseen = lists_state(KEYS[2], lists, ARGV[8])
  if unseen then return {'lists', held, tonumber(version) or 0} end  -- nothing done yet
  local status, decision = claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], false)
  if status == 'replay' then return {status, decision} end
  if status ~= 'new' and status ~= 'takeover' then return {status} end
  local write = status == 'new'

  local mask = ARGV[5]
  local cents, t, units, units2 = numbers(ARGV[6])
  local sums, cur, start, members = SUMS, CUR, START, MEMBER
  local marks = {byte(mask, 1, #PLAN)}
  local present = 0
  for e = 1, #PLAN do
    if marks[e] ~= 48 then present = present + 1 end
  end
  local blobs = present > 0 and call('MGET', unpack(KEYS, 3, 2 + present))
  local k = 3
  for e = 1, #PLAN do
    if marks[e] ~= 48 then
      sums[e] = entity(e, KEYS[k], blobs[k - 2], members, t, cur, start, cents, units, units2,
        write)
      k = k + 1
    else
      sums[e] = ZERO[e] or zero(e)
    end
  end
  local hits = EMPTY
  if #KEYS > 2 + present then  -- a list was sent
    hits = lookups(KEYS, ARGV, 3 + present, 9, lists, index, tonumber(ARGV[1]) / 1000)
  end
  return {status, false, tonumber(version) or 0, table.concat(sums, '', 1, #PLAN), hits, held}
end
