"""``FRESH[e]`` (a new entity's attempt written straight) against ``COUNT[e]`` on no state.

``begin`` takes ``FRESH`` for an entity with no state; it must leave the state, its TTL and
the window sums ``COUNT`` would, bit for bit. Both run here in Redis' own Lua, on the same
inputs: bucket edges, a window second before the event's (across an edge), no amount, a
negative log unit, members present and missing.
"""

from __future__ import annotations

import itertools
import struct

import pytest
import redis.asyncio as aioredis

from service.stores.plan import PLAN

_HARNESS = """
local FORMATS = {}
local function format(n)
  local f = FORMATS[n]
  if not f then
    f = '<' .. string.rep('d', n)
    FORMATS[n] = f
  end
  return f
end
local e = tonumber(ARGV[1])
local x = {struct.unpack('<' .. string.rep('d', 5 + MEMBERS), ARGV[2])}
local t, from, cents, units, units2 = x[1], x[2], x[3], x[4], x[5]
local M, cur, start = {}, {}, {}
for i = 1, MEMBERS do M[i] = x[5 + i] >= 0 and x[5 + i] end
for i = 1, #WIDTHS do
  cur[i] = floor(t / WIDTHS[i])
  start[i] = floor(from / WIDTHS[i])
end
local O = {}
local m, ttl, _, _, sums = COUNT[e]({}, O, M, cur, start, t, cents, units, units2, true)
local state = struct.pack(format(m), unpack(O, 1, m))
local ttl2, sums2, state2 = FRESH[e]({}, format, M, cur, start, t, cents, units, units2)
return {state, sums, ttl, state2, sums2, ttl2}
"""

_SCRIPT = "local call, byte, sub, floor = redis.call, string.byte, string.sub, math.floor\n"

_CASES = list(
    itertools.product(
        (1795800000.0, 1795800059.0, 1795831199.0),  # a day's, a minute's and an hour's edges
        (0.0, 7.0, 3600.0),  # how much earlier the window second is
        ((0.0, 0.0), (12345.0, 17.0), (99.0, -3.0)),  # cents, log units
        ((-1.0, -1.0, -1.0, -1.0), (11.0, 2.0**55 + 8, 33.0, 44.0), (-1.0, 22.0, -1.0, 44.0)),
    )
)


@pytest.mark.parametrize("entity", PLAN.entities, ids=lambda e: str(e.entity))
async def test_fresh_writes_what_count_writes_on_no_state(
    redis_client: aioredis.Redis, entity
) -> None:
    """Same state bytes, TTL and packed sums, for every entity and input."""
    prelude = PLAN.lua_prelude()
    assert f"FRESH[{entity.index}] = function" in prelude  # every entity of this catalogue
    script = _SCRIPT + prelude + _HARNESS
    for t, earlier, (cents, units), members in _CASES:
        packed = struct.pack(
            f"<{5 + PLAN.member_slots}d", t, t - earlier, cents, units, units * units, *members
        )
        state, sums, ttl, state2, sums2, ttl2 = await redis_client.eval(
            script, 0, entity.index, packed
        )
        case = (t, earlier, cents, units, members)
        assert state2 == state, case
        assert sums2 == sums, case
        assert ttl2 == ttl, case
        assert len(sums) == 8 * len(entity.slots)
