"""The store's server-side code: one Redis function library (Redis 7 ``FUNCTION LOAD``).

Why functions and not ``EVALSHA``: the catalogue plan is a Lua table of a few hundred
entries; a script would rebuild it on every call, while a library builds it once, when
loaded, and its functions keep it.

The library is ``begin.lua``, ``commit.lua``, ``feedback.lua``, ``list_change.lua`` and
``drain.lua`` behind the shared locals and the plan's prelude, then ``cluster.lua``, their
one-slot forms for a Redis Cluster (``cluster.py``). Its name and function names
carry a hash of its source, so services built from different catalogues can share one
Redis. ``call`` runs a function with ``FCALL`` and, when Redis does not know it (a restart
without persistence, a flush, a new version), loads the library and calls again: the
``NOSCRIPT`` fallback of scripts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Mapping, Sequence
from importlib.resources import files
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from service.stores.list_names import LOOKUP_ATTRIBUTES
from service.stores.plan import Plan

# Globals (redis.call, string, math, ...) exist only while a function runs, not while the
# library loads, so the shared locals are bound at the start of every call.
_SHARED = "local call, byte, sub, floor\n"
_BIND = "  call, byte, sub, floor = redis.call, string.byte, string.sub, math.floor\n"
_FUNCTIONS = {
    "begin": "begin.lua",
    "commit": "commit.lua",
    "feedback": "feedback.lua",
    "list_change": "list_change.lua",
    "drain": "drain.lua",
}
# The Redis Cluster forms (``cluster.py``), one hash slot each, all in ``cluster.lua``.
CLUSTER_FUNCTIONS = (
    "cluster_claim",
    "cluster_count",
    "cluster_lists",
    "cluster_log",
    "cluster_decline",
    "cluster_fraud",
    "cluster_label",
    "cluster_drain_tx",
    "cluster_commit_tx",
)


def _source(name: str) -> str:
    return files("service.stores").joinpath(name).read_text(encoding="utf-8")


class Commands(Protocol):
    """redis-py's client or the hot path's ``PipelinedConnection``."""

    def execute_command(self, *args: Any) -> Awaitable[Any]:
        """Send one command and await its reply."""

    async def aclose(self) -> None:
        """Close the client's connections."""


def _lists_prelude() -> str:
    """``LISTS`` and ``LIST_FIELDS``: the lists ``begin`` looks up (see ``begin.lua``)."""
    entries, fields = [], ["'version'"]
    for entity, attributes in LOOKUP_ATTRIBUTES.items():
        names = [f"'{kind}_{entity}'" for kind in ("block", "allow")]
        quoted = ",".join(f"'{a}'" for a in attributes)
        entries.append(f"  {{{{{quoted}}},{','.join(names)}}},")
        fields += names
    return (
        "local LISTS = {\n"
        + "\n".join(entries)
        + f"\n}}\nlocal LIST_FIELDS = {{{','.join(fields)}}}\n"
    )


class Library:
    """The Redis function library for one plan: its source, name and function names."""

    def __init__(self, plan: Plan, sources: Mapping[str, str] | None = None) -> None:
        """The library for ``plan``, with any function's source replaced by ``sources``.

        ``sources``: function name → Lua text used instead of its file, so a benchmark
        can time a variant of one function against the same plan and shared code.
        """
        texts = {f: _source(file) for f, file in _FUNCTIONS.items()} | dict(sources or {})
        body = (
            _SHARED
            + plan.lua_prelude()
            + _lists_prelude()
            + "".join(texts[f] for f in _FUNCTIONS)
            + _source("cluster.lua")
        )
        version = hashlib.sha1(body.encode()).hexdigest()[:12]
        self.name = f"riskscore_{version}"
        self.functions = {f: f"riskscore_{f}_{version}" for f in (*_FUNCTIONS, *CLUSTER_FUNCTIONS)}
        registrations = "".join(
            f"redis.register_function('{name}', function(keys, args)\n"
            f"{_BIND}  return {local}(keys, args)\nend)\n"
            for local, name in self.functions.items()
        )
        self.source = f"#!lua name={self.name}\n{body}{registrations}"

    async def load(self, client: Commands) -> None:
        """Load (or replace) the library in Redis: on every primary of a Redis Cluster.

        (A replica receives it from its primary, so a promoted replica has it; one that
        lacks it, a node added later say, gets it with the next ``call`` it fails.)
        """
        if isinstance(client, RedisCluster):
            await client.execute_command(
                "FUNCTION", "LOAD", "REPLACE", self.source, target_nodes=RedisCluster.PRIMARIES
            )
            return
        await client.execute_command("FUNCTION", "LOAD", "REPLACE", self.source)

    async def call_many(
        self,
        client: aioredis.Redis,
        function: str,
        calls: Sequence[tuple[Sequence[str], Sequence[Any]]],
    ) -> list[Any]:
        """``call`` for many (keys, args) in one pipelined round trip, run in order.

        An error of one call is returned in its place. Calls refused because the library
        is not loaded (none of them ran) are sent again once it is.
        """
        name = self.functions[function]

        async def send(indices: Sequence[int]) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for i in indices:
                    keys, args = calls[i]
                    pipe.execute_command("FCALL", name, len(keys), *keys, *args)
                return await pipe.execute(raise_on_error=False)

        results = await send(range(len(calls)))
        missing = [
            i
            for i, result in enumerate(results)
            if isinstance(result, ResponseError) and "function not found" in str(result).lower()
        ]
        if missing:
            await self.load(client)
            for i, result in zip(missing, await send(missing), strict=True):
                results[i] = result
        return results

    async def call(
        self, client: Commands, function: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Call one of the library's functions, loading the library when Redis lacks it."""
        name = self.functions[function]
        try:
            return await client.execute_command("FCALL", name, len(keys), *keys, *args)
        except ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
        await self.load(client)
        return await client.execute_command("FCALL", name, len(keys), *keys, *args)
