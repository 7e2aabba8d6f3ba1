"""The feature catalogue compiled into what the Redis store reads and writes.

Window rule (``service.catalog``): at event second ``t`` a window of ``n`` buckets of
``w`` seconds covers the bucket ids ``[floor(t/w) - n + 1, floor(t/w)]``. Counters live in
one hash per entity (a field per measure, width and bucket id). Distinct members live in
one sorted set per entity, scored by their last-seen second (the largest seen, ``ZADD
GT``); a member counts in a window iff ``floor(last_seen/w) >= floor(t/w) - n + 1``, that
is ``last_seen >= (floor(t/w) - n + 1) * w``: one ``ZCOUNT``. Feature values:

- ``count``, ``declines``, ``frauds``, ``distinct``: the integer, as a float;
- ``sum_usd``: ``cents / 100``;
- ``mean_usd``: ``(cents / 100) / count``, 0 when the count is 0.

Everything is counted at the event second ``floor(event_time)`` (``floor(t/w) =
floor(floor(t)/w)`` for integer ``w``). Missing or blank entity keys and members count
nothing and read 0.

Memory: fields and members older than the largest window of their width plus one spare
bucket are deleted when seen (the spare keeps answers exact for concurrent requests that
straddle a bucket edge). A key's TTL is refreshed when the entity's widest written bucket
(``star``) opens, to cover every field written until the next refresh; fraud fields
(written by feedback at the original transaction's bucket) extend it to their horizon.

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
from service.stores.keys import DISTINCT_CODES, DISTINCT_SPAN, WIDTH_CODES

# A counter hash with at least this many fields is worth a summary (see begin.lua).
SUMMARY_FIELDS: Final[int] = 16

_MEASURE: Final[dict[Aggregate, str]] = {
    Aggregate.count: "a",
    Aggregate.declines: "d",
    Aggregate.sum_usd: "s",
    Aggregate.frauds: "f",
}

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
class Read:
    measure: str
    buckets: int
    slot: int


@dataclass(frozen=True, slots=True)
class Width:
    """One bucket width of an entity's counter hash."""

    width: int
    code: str
    keep: int  # buckets kept behind the current one: the largest window, plus one spare
    measures: frozenset[str]
    reads: tuple[Read, ...]

    @property
    def written(self) -> bool:
        """Begin writes attempts here (and cents when summed); frauds-only widths it skips."""
        return bool(self.measures & {"a", "s", "d"})

    @property
    def horizon(self) -> int:
        """Seconds a field stays useful after its bucket was written."""
        return (self.keep + 1) * self.width

    def field(self, measure: str, second: int) -> str:
        return f"{measure}{self.code}{second // self.width}"


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
    def offset(self) -> int:
        return self.code * DISTINCT_SPAN

    @property
    def horizon(self) -> int:
        return (self.keep + 1) * self.keep_width

    def member(self, value: str) -> str:
        return f"{self.code}:{value}"


@dataclass(frozen=True, slots=True)
class EntityPlan:
    entity: Entity
    attribute: str
    widths: tuple[Width, ...]
    distinct: tuple[DistinctKind, ...]

    @property
    def star(self) -> Width | None:
        """The written width with the longest horizon: its new buckets refresh the TTLs."""
        written = [w for w in self.widths if w.written]
        return max(written, key=lambda w: w.horizon) if written else None

    @property
    def counters_ttl(self) -> int:
        star = self.star
        if star is None:
            return self.frauds_ttl
        return max(w.horizon for w in self.widths if w.written) + star.width

    @property
    def frauds_ttl(self) -> int:
        return max((w.horizon for w in self.widths if "f" in w.measures), default=0)

    @property
    def members_ttl(self) -> int:
        star = self.star
        return max((d.horizon for d in self.distinct), default=0) + (star.width if star else 0)

    @property
    def finest(self) -> int:
        """The smallest bucket width of the counters: when no bucket of it opened, none did
        (the widths divide each other), so its bucket id marks the summary's validity."""
        return min(w.width for w in self.widths)

    @property
    def members_may_outlive_counters(self) -> bool:
        """True when an entity whose counters expired may still have its member set (its
        set's TTL, refreshed up to one star bucket late, exceeds the counters' TTL)."""
        star = self.star
        return self.members_ttl + (star.width if star else 0) > self.counters_ttl

    @property
    def declines(self) -> tuple[Width, ...]:
        return tuple(w for w in self.widths if "d" in w.measures)

    @property
    def frauds(self) -> tuple[Width, ...]:
        return tuple(w for w in self.widths if "f" in w.measures)


@dataclass(frozen=True, slots=True)
class FeatureSlots:
    """Where a feature's value comes from in the script's output."""

    name: str
    aggregate: Aggregate
    slot: int
    count_slot: int = -1  # mean_usd: the attempts of the same window


class Clock:
    """The time-dependent strings ``begin`` compares with, computed in Python per second.

    Formatting numbers in Lua costs about a microsecond each, so the script receives, for
    the event second, every field name and score bound it needs as a ready string: counter
    fields ``<measure><code><bucket>`` (current bucket, a window's first bucket, the
    stale threshold) and member-set scores and bounds. Entries are deduplicated across
    entities; ``begin.lua`` addresses them by their ARGV position.
    """

    ARGV_BASE = 6  # ARGV[7] is the first clock string

    def __init__(self, tag: str) -> None:
        self.tag = tag  # names the plan in summary markers, so another plan's never match
        self._entries: dict[tuple, int] = {}
        self._cached: tuple[int, list[str]] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def _add(self, entry: tuple) -> int:
        """The entry's ARGV position (1-based, as Lua indexes)."""
        return self.ARGV_BASE + 1 + self._entries.setdefault(entry, len(self._entries))

    def field(self, measure: str, width: Width, delta: int) -> int:
        """The counter field of bucket ``floor(t / width) + delta``."""
        return self._add(("f", measure + width.code, width.width, delta))

    def score(self, offset: int) -> int:
        """A member's score at the event second."""
        return self._add(("s", offset))

    def marker(self, width: int) -> int:
        """The bucket id at ``width``: names the summary's moment (see ``begin.lua``)."""
        return self._add(("m", width))

    def marker_text(self, width: int, second: int) -> str:
        return f"{self.tag}{second // width}"

    def bound(self, offset: int, width: int, delta: int, exclusive: bool = False) -> int:
        """The score where bucket ``floor(t / width) + delta`` starts."""
        return self._add(("b", offset, width, delta, exclusive))

    def strings(self, second: int) -> list[str]:
        cached = self._cached
        if cached is not None and cached[0] == second:
            return cached[1]
        out = []
        for entry in self._entries:
            if entry[0] == "f":
                _, prefix, width, delta = entry
                out.append(f"{prefix}{max(0, second // width + delta)}")
            elif entry[0] == "s":
                out.append(str(entry[1] + second))
            elif entry[0] == "m":
                out.append(self.marker_text(entry[1], second))
            else:
                _, offset, width, delta, exclusive = entry
                value = offset + max(0, second // width + delta) * width
                out.append(f"({value}" if exclusive else str(value))
        self._cached = (second, out)
        return out


class Plan:
    """The catalogue as counter widths, distinct kinds and output slots, per entity."""

    def __init__(self, features: tuple[catalog.VelocityFeature, ...]) -> None:
        slots: dict[tuple, int] = {}

        def slot(key: tuple) -> int:
            return slots.setdefault(key, len(slots))

        measures: dict[tuple[Entity, int], set[str]] = {}
        reads: dict[tuple[Entity, int], dict[tuple[str, int], int]] = {}
        largest: dict[tuple[Entity, int], int] = {}
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
            key = (f.entity, f.bucket)
            largest[key] = max(largest.get(key, 0), f.buckets)
            wanted = ("s", "a") if f.aggregate is Aggregate.mean_usd else (_MEASURE[f.aggregate],)
            found = []
            for m in wanted:
                measures.setdefault(key, set()).add(m)
                s = slot(("c", f.entity, f.bucket, m, f.buckets))
                reads.setdefault(key, {})[(m, f.buckets)] = s
                found.append(s)
            outputs.append(FeatureSlots(f.name, f.aggregate, *found))

        for ms in measures.values():
            if ms & {"s", "d"}:
                ms.add("a")  # begin counts attempts wherever it writes; "a" marks new buckets
        entities = []
        for entity in Entity:
            widths = tuple(
                Width(
                    width=width,
                    code=WIDTH_CODES[width],
                    keep=largest[(e, width)],
                    measures=frozenset(measures[(e, width)]),
                    reads=tuple(Read(m, n, s) for (m, n), s in reads[(e, width)].items()),
                )
                for e, width in sorted(measures, key=lambda k: k[1])
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
            if widths and any(w.width % widths[0].width for w in widths):
                raise RuntimeError(
                    f"{entity}: bucket widths {[w.width for w in widths]} must be multiples of "
                    "the smallest, or a summary could outlive a bucket (see begin.lua)"
                )
            if widths or kinds:
                entities.append(EntityPlan(entity, entity_attribute(entity), widths, tuple(kinds)))
        self.entities: tuple[EntityPlan, ...] = tuple(entities)
        self.outputs: tuple[FeatureSlots, ...] = tuple(outputs)
        self.slot_count = len(slots)
        shape = repr([(f.name, f.aggregate, f.of, f.bucket, f.buckets) for f in features])
        self.clock = Clock(hashlib.sha1(shape.encode()).hexdigest()[:6] + ":")
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

    def marker(self, entity: EntityPlan, second: int) -> str:
        """The summary marker of ``entity``'s counters at ``second`` (as ``begin`` sees it)."""
        return self.clock.marker_text(entity.finest, second)

    def zeros(self) -> dict[str, float]:
        return dict.fromkeys((o.name for o in self.outputs), 0.0)

    def lua_prelude(self) -> str:
        """``local PLAN``, ``SLOTS`` and ``CLOCK`` (the clock's size) for ``begin.lua``."""
        return self._prelude

    def _render(self) -> str:
        """The plan as a Lua table; numbers Redis must see are pre-rendered strings.

        Per entity (numbers in braces are ARGV positions of clock strings, or 1-based
        output slots): ``c`` has counters; ``f`` key ``measure byte * 256 + code byte`` →
        {stale threshold, current field, {{window's first field, slot}}}; ``wr`` written
        widths {attempts field, cents field or false, attempts slots, cents slots, is the
        TTL-refreshing width}; ``nostar`` no written width (refresh the TTL always);
        ``ttl``/``ttlf`` counter TTL without/with fraud fields; ``mk`` the summary marker;
        ``hn`` the summary's field names; ``sl`` the slot of each summary value and ``sc``
        the current field its window shares; ``cf`` current fields {field, {slots}, is a
        fraud field}; ``z`` distinct kinds {score, prune bound, offset, top score, {{first
        score, slot}}}; ``zttl``; ``zold`` the member set may outlive the counters.
        """
        clock = self.clock
        lines = ["local PLAN = {"]
        for e in self.entities:
            star = e.star
            fields = []
            written = []
            current = []
            summary_slots = []
            summary_current = []
            for w in e.widths:
                for m in sorted(w.measures):
                    slots = ",".join(str(r.slot + 1) for r in w.reads if r.measure == m)
                    is_f = "true" if m == "f" else "false"
                    current.append(f"{{{clock.field(m, w, 0)},{{{slots}}},{is_f}}}")
                    for r in w.reads:
                        if r.measure == m:
                            summary_slots.append(str(r.slot + 1))
                            summary_current.append(str(clock.field(m, w, 0)))
                    windows = ",".join(
                        f"{{{clock.field(m, w, 1 - r.buckets)},{r.slot + 1}}}"
                        for r in w.reads
                        if r.measure == m
                    )
                    fields.append(
                        f"[{ord(m) * 256 + ord(w.code)}]="
                        f"{{{clock.field(m, w, -w.keep)},{clock.field(m, w, 0)},{{{windows}}}}}"
                    )
                if w.written:
                    a_slots = ",".join(str(r.slot + 1) for r in w.reads if r.measure == "a")
                    s_slots = ",".join(str(r.slot + 1) for r in w.reads if r.measure == "s")
                    cents = clock.field("s", w, 0) if "s" in w.measures else "false"
                    is_star = "true" if w is star else "false"
                    attempts = clock.field("a", w, 0)
                    written.append(f"{{{attempts},{cents},{{{a_slots}}},{{{s_slots}}},{is_star}}}")
            kinds = []
            for d in e.distinct:
                windows = ",".join(
                    f"{{{clock.bound(d.offset, w.width, 1 - w.buckets)},{w.slot + 1}}}"
                    for w in d.windows
                )
                prune = clock.bound(d.offset, d.keep_width, -d.keep, exclusive=True)
                kinds.append(
                    f"{{{clock.score(d.offset)},{prune},'{d.offset}',"
                    f"'{d.offset + DISTINCT_SPAN - 1}',{{{windows}}}}}"
                )
            ttl = e.counters_ttl
            marker = clock.marker(e.finest) if e.widths else 0
            names = ",".join(["'~m'", "'~f'", *(f"'~{i + 1}'" for i in range(len(summary_slots)))])
            lines.append(
                f"  {{c={'true' if e.widths else 'false'},f={{{','.join(fields)}}},"
                f"wr={{{','.join(written)}}},nostar={'false' if star else 'true'},"
                f"ttl='{ttl}',ttlf='{max(ttl, e.frauds_ttl)}',mk={marker},hn={{{names}}},"
                f"sl={{{','.join(summary_slots)}}},sc={{{','.join(summary_current)}}},"
                f"cf={{{','.join(current)}}},"
                f"z={{{','.join(kinds)}}},zttl='{e.members_ttl}',"
                f"zold={'true' if e.members_may_outlive_counters else 'false'}}}, -- {e.entity}"
            )
        lines.append("}")
        lines.append(f"local SLOTS, CLOCK, BIG = {self.slot_count}, {len(clock)}, {SUMMARY_FIELDS}")
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
