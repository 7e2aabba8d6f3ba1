-- list_change: add or remove items of one list and keep the lists index exact, atomically;
-- every change gives the lists a new version (bump_lists_version, in begin.lua).
--
-- KEYS: 1 the list's hash, 2 its ranges hash, 3 the lists index.
-- ARGV: 1 'add' or 'remove', 2 list name, 3 entry JSON (add), 4 n exact items,
--       then the n exact items, then the ranges.
-- Returns how many items were stored (add) or found and deleted (remove).

local function list_change(KEYS, ARGV)
  local add = ARGV[1] == 'add'
  local name, entry, n = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local changed = 0
  for i = 5, #ARGV do
    local key = (i < 5 + n) and KEYS[1] or KEYS[2]
    if add then
      call('HSET', key, ARGV[i], entry)
      changed = changed + 1
    else
      changed = changed + call('HDEL', key, ARGV[i])
    end
  end
  call('HSET', KEYS[3], name, call('HLEN', KEYS[1]), name .. ':ranges', call('HLEN', KEYS[2]))
  bump_lists_version(KEYS[3])
  return changed
end
