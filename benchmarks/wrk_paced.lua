-- wrk_score.lua with a pause between a connection's requests, so that a run holds a
-- chosen rate below the maximum (wrk itself has no rate control; Debian has no wrk2).
-- usage: wrk -t1 -c16 -d20s -s benchmarks/wrk_paced.lua URL -- <api-key> <run-tag> <pause-ms>

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk_score.lua")

local pause_ms = 0
local score_init = init

function init(args)
  score_init(args)
  pause_ms = tonumber(args[3]) or 0
end

-- Exponential pauses with the chosen mean: with equal pauses the connections fall into
-- step and arrive in bursts of all of them at once, which measures the load generator's
-- convoy rather than the service; random pauses give Poisson-like arrivals.
function delay()
  return -pause_ms * math.log(1 - math.random())
end
