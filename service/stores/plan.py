"""The feature catalogue compiled into what the Redis store reads and writes.

Window rule (``service.catalog``): at event second ``t`` a window of ``n`` buckets of
``w`` seconds covers the bucket ids ``[floor(t/w) - n + 1, floor(t/w)]``.

Layout (``keys.py``): each entity's whole state is one MessagePack map in one string key,
read with one ``GET`` and written with one ``SET ... EX`` (the TTL comes with the write).
It holds a counter series per measure and width the catalogue reads, a flat list of
(bucket id, value) pairs in bucket order, and per distinct kind at most
``catalog.DISTINCT_CAP`` (member digest, last-seen second) pairs: the members seen last,
an older one giving way to a newer when the list is full. A member counts in a window iff
``floor(last_seen/w) >= floor(t/w) - n + 1``, that is ``last_seen >= (floor(t/w) - n + 1)
* w``, so a window reads ``min(DISTINCT_CAP, distinct count)`` (exact in time order, see
the catalogue's docstring). Feature values:

- ``count``, ``declines``, ``frauds``, ``distinct``: the integer, as a float;
- ``sum_usd``: ``cents / 100``;
- ``mean_usd``: ``(cents / 100) / count``, 0 when the count is 0.

Everything is counted at the event second ``floor(event_time)`` (``floor(t/w) =
floor(floor(t)/w)`` for integer ``w``). Missing or blank entity keys and members count
nothing and read 0.

Memory: when ``begin`` writes an entity it drops the buckets older than the largest
window of their series plus one spare bucket (the spare keeps answers exact for
concurrent requests that straddle a bucket edge), and the members last seen before the
largest window of their kind plus one spare bucket. The key's TTL, set with every write,
is the longest horizon (``(kept buckets + 1) * width``) of its non-empty series and kinds,
so the state disappears once nothing in it can count any more: fraud series (written by
feedback at the original transaction's bucket) keep an entity up to their 30 days.

The plan is data for ``begin.lua``: ``lua_prelude()`` renders it as a Lua table inside the
function library (``library.py``), whose version hash changes whenever the catalogue does.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Final

from service import catalog
from service.catalog import Aggregate, Entity
from service.payment import Payment
from service.stores.keys import DISTINCT_CODES, WIDTH_CODES

_MEASURE: Final[dict[Aggregate, str]] = {
    Aggregate.count: "a",
    Aggregate.declines: "d",
    Aggregate.sum_usd: "s",
    Aggregate.frauds: "f",
}
# What ``begin`` adds to a series of each measure: 1 per attempt, its cents, or nothing
# (declines are counted by ``commit``, frauds by ``feedback``).
_BEGIN_ADDS: Final[dict[str, int]] = {"a": 1, "s": 2, "d": 0, "f": 0}

# Entities keyed by several log columns take their value from one joined Payment attribute.
_JOINED_KEY_ATTRIBUTE: Final[dict[Entity, str]] = {Entity.customer: "customer_key"}
for _entity, _columns in catalog.ENTITY_KEY_COLUMNS.items():
    if len(_columns) != 1 and _entity not in _JOINED_KEY_ATTRIBUTE:
        raise RuntimeError(f"{_entity}: a multi-column entity key needs a joined attribute")


def entity_attribute(entity: Entity) -> str:
    """The ``Payment`` attribute whose value keys ``entity``."""
    return _JOINED_KEY_ATTRIBUTE.get(entity) or catalog.ENTITY_KEY_COLUMNS[entity][0]


def present(value: object) -> str | None:
    """A key or member value, or None when it is missing or blank."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def event_second(event_time: float) -> int:
    return math.floor(event_time)


@dataclass(frozen=True, slots=True)
class SeriesWindow:
    buckets: int
    slot: int


@dataclass(frozen=True, slots=True)
class Series:
    """One counter series of an entity: a measure summed per bucket of one width."""

    measure: str  # a attempts, s USD cents, d declines, f frauds
    width: int
    keep: int  # buckets kept behind the current one: the largest window read (one spare)
    windows: tuple[SeriesWindow, ...]

    @property
    def name(self) -> str:
        return self.measure + WIDTH_CODES[self.width]

    @property
    def horizon(self) -> int:
        """Seconds a bucket stays useful after it was written."""
        return (self.keep + 1) * self.width


@dataclass(frozen=True, slots=True)
class DistinctWindow:
    width: int
    buckets: int
    slot: int


@dataclass(frozen=True, slots=True)
class DistinctKind:
    of: str
    attribute: str
    code: int
    windows: tuple[DistinctWindow, ...]
    keep_width: int  # the largest window's bucket width and count, for pruning
    keep: int

    @property
    def name(self) -> str:
        return f"z{self.code}"

    @property
    def horizon(self) -> int:
        return (self.keep + 1) * self.keep_width


@dataclass(frozen=True, slots=True)
class EntityPlan:
    entity: Entity
    attribute: str
    index: int  # 1-based position in the plan, as ``commit`` and ``feedback`` name it
    series: tuple[Series, ...]
    distinct: tuple[DistinctKind, ...]
    layout: str  # names the packed state's layout (``layout``), part of the key

    @property
    def declines(self) -> tuple[Series, ...]:
        return tuple(s for s in self.series if s.measure == "d")

    @property
    def frauds(self) -> tuple[Series, ...]:
        return tuple(s for s in self.series if s.measure == "f")


def layout(series: tuple[Series, ...], distinct: tuple[DistinctKind, ...]) -> str:
    """Names the layout of an entity's packed state (its series and kinds, in order, and
    the cap). It is part of the entity's key, so a catalogue that changes the layout
    starts the entity afresh instead of misreading a state packed by another."""
    shape = [s.name for s in series] + [d.name for d in distinct]
    return hashlib.sha1(f"{shape}|{catalog.DISTINCT_CAP}".encode()).hexdigest()[:6]


@dataclass(frozen=True, slots=True)
class FeatureSlots:
    """Where a feature's value comes from in the script's output."""

    name: str
    aggregate: Aggregate
    slot: int
    count_slot: int = -1  # mean_usd: the attempts of the same window


class Plan:
    """The catalogue as counter series, distinct kinds and output slots, per entity."""

    def __init__(self, features: tuple[catalog.VelocityFeature, ...]) -> None:
        slots: dict[tuple, int] = {}

        def slot(key: tuple) -> int:
            return slots.setdefault(key, len(slots))

        series: dict[tuple[Entity, str, int], dict[int, int]] = {}
        distinct: dict[tuple[Entity, str], dict[tuple[int, int], int]] = {}
        outputs: list[FeatureSlots] = []
        for f in features:
            if f.bucket not in WIDTH_CODES:
                raise RuntimeError(f"{f.name}: bucket width {f.bucket} s has no code in keys.py")
            if f.aggregate is Aggregate.distinct:
                assert f.of is not None
                if f.of not in DISTINCT_CODES:
                    raise RuntimeError(f"{f.name}: distinct {f.of!r} has no code in keys.py")
                windows = distinct.setdefault((f.entity, f.of), {})
                s = windows.setdefault(
                    (f.bucket, f.buckets), slot(("z", f.entity, f.of, f.bucket, f.buckets))
                )
                outputs.append(FeatureSlots(f.name, f.aggregate, s))
                continue
            wanted = ("s", "a") if f.aggregate is Aggregate.mean_usd else (_MEASURE[f.aggregate],)
            found = []
            for m in wanted:
                reads = series.setdefault((f.entity, m, f.bucket), {})
                s = reads.setdefault(f.buckets, slot(("c", f.entity, f.bucket, m, f.buckets)))
                found.append(s)
            outputs.append(FeatureSlots(f.name, f.aggregate, *found))

        entities = []
        for entity in Entity:
            counters = tuple(
                Series(
                    measure=m,
                    width=width,
                    keep=max(reads),
                    windows=tuple(SeriesWindow(n, s) for n, s in reads.items()),
                )
                for (e, m, width), reads in sorted(series.items(), key=lambda i: i[0][1:])
                if e is entity
            )
            kinds = []
            for (e, of), windows in distinct.items():
                if e is not entity:
                    continue
                wide = max(windows, key=lambda wn: wn[0] * wn[1])
                kinds.append(
                    DistinctKind(
                        of=of,
                        attribute=catalog.DISTINCT_OF[of],
                        code=DISTINCT_CODES[of],
                        windows=tuple(DistinctWindow(w, n, s) for (w, n), s in windows.items()),
                        keep_width=wide[0],
                        keep=wide[1],
                    )
                )
            if counters or kinds:
                entities.append(
                    EntityPlan(
                        entity,
                        entity_attribute(entity),
                        len(entities) + 1,
                        counters,
                        tuple(kinds),
                        layout(counters, tuple(kinds)),
                    )
                )
        self.entities: tuple[EntityPlan, ...] = tuple(entities)
        self.outputs: tuple[FeatureSlots, ...] = tuple(outputs)
        self.slot_count = len(slots)
        self._prelude = self._render()

    def values(self, raw: list[int]) -> dict[str, float]:
        """Feature name → value from the script's output array."""
        result: dict[str, float] = {}
        for o in self.outputs:
            value = raw[o.slot]
            if o.aggregate is Aggregate.sum_usd:
                result[o.name] = value / 100
            elif o.aggregate is Aggregate.mean_usd:
                count = raw[o.count_slot]
                result[o.name] = value / 100 / count if count else 0.0
            else:
                result[o.name] = float(value)
        return result

    def zeros(self) -> dict[str, float]:
        return dict.fromkeys((o.name for o in self.outputs), 0.0)

    def lua_prelude(self) -> str:
        """``local PLAN``, ``SLOTS`` and ``CAP`` for the functions (see ``begin.lua``)."""
        return self._prelude

    def _render(self) -> str:
        """The plan as a Lua table, one entry per entity (1-based output slots):

        ``s`` counter series {name, width, kept buckets, horizon (s), what begin adds (0
        nothing, 1 one, 2 the cents), {{window buckets, slot}}}; ``d``, ``f`` the positions
        in ``s`` of the decline and fraud series (as a set); ``z`` distinct kinds {name,
        pruning width, kept buckets, horizon (s), {{width, window buckets, slot}}}. The
        state's layout follows ``s`` and ``z`` in this order (``EntityPlan.layout`` names it).
        """
        lines = ["local PLAN = {"]
        for e in self.entities:
            counters = ",".join(
                f"{{'{s.name}',{s.width},{s.keep},{s.horizon},{_BEGIN_ADDS[s.measure]},"
                f"{{{','.join(f'{{{w.buckets},{w.slot + 1}}}' for w in s.windows)}}}}}"
                for s in e.series
            )
            kinds = ",".join(
                f"{{'{d.name}',{d.keep_width},{d.keep},{d.horizon},"
                f"{{{','.join(f'{{{w.width},{w.buckets},{w.slot + 1}}}' for w in d.windows)}}}}}"
                for d in e.distinct
            )
            declines = ",".join(
                f"[{i + 1}]=true" for i, s in enumerate(e.series) if s.measure == "d"
            )
            frauds = ",".join(f"[{i + 1}]=true" for i, s in enumerate(e.series) if s.measure == "f")
            lines.append(
                f"  {{s={{{counters}}},d={{{declines}}},f={{{frauds}}},z={{{kinds}}}}},"
                f" -- {e.entity}"
            )
        lines.append("}")
        lines.append(f"local SLOTS, CAP = {self.slot_count}, {catalog.DISTINCT_CAP}")
        return "\n".join(lines) + "\n"


def entity_values(plan: Plan, payment: Payment) -> list[tuple[EntityPlan, str]]:
    """The entities of ``payment`` that have a key value, in plan order."""
    found = []
    for e in plan.entities:
        value = present(getattr(payment, e.attribute))
        if value is not None:
            found.append((e, value))
    return found


PLAN: Final[Plan] = Plan(catalog.VELOCITY_FEATURES)
