#!/usr/bin/env bash
# Load an already running service with wrk and report throughput, latency and CPU per
# request (the server's processes and Redis's). `make bench` (benchmarks/run.py) is the
# reproducible benchmark: it starts its own Redis and service; this is for poking at a live one.
# usage: benchmarks/score_load.sh <api-key> [connections] [seconds] [url]
set -euo pipefail
key=$1; conns=${2:-16}; secs=${3:-20}; url=${4:-http://127.0.0.1:8000}
here=$(cd "$(dirname "$0")" && pwd)
port=${url##*:}
pids=$(pgrep -f "riskscore serve" || true)
[ -n "$pids" ] || { echo "no 'riskscore serve' process found" >&2; exit 2; }
all=$(for p in $pids; do echo "$p"; pgrep -P "$p" || true; done | sort -u)
cpu() { for p in $all; do awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0; done | awk '{s+=$1} END{print s}'; }
redis_cpu() { redis-cli info cpu | awk -F: '/used_cpu_(sys|user):/{s+=$2} END{printf "%.6f", s}'; }
tick=$(getconf CLK_TCK)
c0=$(cpu); r0=$(redis_cpu)
out=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$here/wrk_score.lua" "$url" -- "$key")
c1=$(cpu); r1=$(redis_cpu)
line=$(echo "$out" | sed -n 's/^BENCH //p')
echo "$line"
requests=$(echo "$line" | sed -E 's/.*"requests":([0-9]+).*/\1/')
awk -v c="$((c1 - c0))" -v t="$tick" -v r0="$r0" -v r1="$r1" -v n="$requests" 'BEGIN {
  printf "server CPU per request %.0f us, Redis CPU per request %.0f us\n", c / t / n * 1e6, (r1 - r0) / n * 1e6 }'
