"""The feature catalogue compiled into what the Redis store reads and writes.

Window rule (``service.catalog``): at event second ``t`` a window of ``n`` buckets of
``w`` seconds covers the bucket ids ``[floor(t/w) - n + 1, floor(t/w)]``.

Layout (``keys.py``): each entity's whole state is one string key, a run of doubles, read
with ``MGET`` (all the payment's entities at once) and written with one ``SET``. Per bucket
width the catalogue reads for the entity (a ``Group``), one record per bucket holds the
bucket id and a value per measure (attempts, cents, declines, frauds), in bucket order;
per distinct kind at most ``catalog.DISTINCT_CAP`` (member digest, last-seen second)
pairs: the members seen last, an older one giving way to a newer when the list is full. A
member counts in a window iff ``floor(last_seen/w) >= floor(t/w) - n + 1``, that is
``last_seen >= (floor(t/w) - n + 1) * w``, so a window reads ``min(DISTINCT_CAP, distinct
count)`` (exact in time order, see the catalogue's docstring). Feature values:

- ``count``, ``declines``, ``frauds``, ``distinct``: the integer, as a float;
- ``sum_usd``: ``cents / 100``;
- ``mean_usd``: ``(cents / 100) / count``, 0 when the count is 0.

Everything is counted at the event second ``floor(event_time)`` (``floor(t/w) =
floor(floor(t)/w)`` for integer ``w``). Missing or blank entity keys and members count
nothing and read 0.

Memory: when ``begin`` writes an entity it drops the buckets older than the largest
window of their group plus one spare bucket (the spare keeps answers exact for concurrent
requests that straddle a bucket edge), and the members last seen before the largest
window of their kind plus one spare bucket. The key's TTL is the longest horizon
(``(kept buckets + 1) * width``) of its non-empty groups and kinds plus the width of the
refreshing group (``EntityPlan.star``), set when the entity is new, when that group opens
a bucket or when a longer horizon is needed (``begin.lua`` explains why that suffices),
so a state disappears once nothing in it can count any more: fraud records (written by
feedback at the original transaction's bucket) keep an entity up to their 30 days.

The plan is data for ``begin.lua``: ``lua_prelude()`` renders it as a Lua table inside the
function library (``library.py``), whose version hash changes whenever the catalogue does.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
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
class Group:
    """The counter series of one bucket width of an entity, stored together: a record per
    bucket holds its id and one value per measure, so the measures share the bucket id."""

    width: int
    series: tuple[Series, ...]  # one per measure, in record order
    keep: int  # buckets kept behind the current one: the largest window read (one spare)

    @property
    def name(self) -> str:
        return WIDTH_CODES[self.width] + "".join(s.measure for s in self.series)

    @property
    def horizon(self) -> int:
        """Seconds a bucket stays useful after it was written."""
        return (self.keep + 1) * self.width

    def codes(self, measures: str) -> str:
        """The Lua list of what to add per record value: 1 ``one``, 2 the cents, 0 nothing
        (``false`` when nothing is added at all); ``measures`` are those that get ``one``,
        and ``s`` gets the cents when listed."""
        codes = ["0"] + [
            "2" if s.measure == "s" and "s" in measures else "1" if s.measure in measures else "0"
            for s in self.series
        ]
        return f"{{{','.join(codes)}}}" if set(codes) != {"0"} else "false"


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
    groups: tuple[Group, ...]
    distinct: tuple[DistinctKind, ...]
    layout: str  # names the packed state's layout (``layout``), part of the key

    @property
    def star(self) -> int:
        """The 1-based position of the group ``begin`` writes with the longest horizon, 0
        when it writes none: its new buckets refresh the state's TTL."""
        written = [i for i, g in enumerate(self.groups) if g.codes("as") != "false"]
        return 1 + max(written, key=lambda i: self.groups[i].horizon) if written else 0

    @property
    def refresh(self) -> int:
        """The refreshing group's width, 0 when none: a state's TTL, when set, is its
        longest horizon plus this (see ``begin.lua``)."""
        return self.groups[self.star - 1].width if self.star else 0

    @property
    def series(self) -> tuple[Series, ...]:
        return tuple(s for g in self.groups for s in g.series)

    @property
    def declines(self) -> tuple[Series, ...]:
        return tuple(s for s in self.series if s.measure == "d")

    @property
    def frauds(self) -> tuple[Series, ...]:
        return tuple(s for s in self.series if s.measure == "f")


def layout(groups: tuple[Group, ...], distinct: tuple[DistinctKind, ...]) -> str:
    """Names the layout of an entity's packed state (its groups and kinds, in order, and
    the cap). It is part of the entity's key, so a catalogue that changes the layout
    starts the entity afresh instead of misreading a state packed by another."""
    shape = [g.name for g in groups] + [d.name for d in distinct]
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
            widths = sorted({width for (e, _, width) in series if e is entity})
            counters = []
            for width in widths:
                measures = sorted(m for (e, m, w) in series if e is entity and w == width)
                keep = max(max(series[(entity, m, width)]) for m in measures)
                group = tuple(
                    Series(
                        measure=m,
                        width=width,
                        keep=keep,
                        windows=tuple(
                            SeriesWindow(n, s) for n, s in series[(entity, m, width)].items()
                        ),
                    )
                    for m in measures
                )
                counters.append(Group(width, group, keep))
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
                        tuple(counters),
                        tuple(kinds),
                        layout(tuple(counters), tuple(kinds)),
                    )
                )
        self.entities: tuple[EntityPlan, ...] = tuple(entities)
        self.outputs: tuple[FeatureSlots, ...] = tuple(outputs)
        self._names = tuple(o.name for o in self.outputs)
        self._zeros: dict[str, float] = dict.fromkeys(self._names, 0.0)
        # every output's raw slot in catalogue order, read in one C call by ``values``
        slots_in_order = [o.slot for o in self.outputs]
        self._raw_in_order = (
            itemgetter(*slots_in_order)
            if len(slots_in_order) != 1
            else lambda raw, slot=slots_in_order[0]: (raw[slot],)
        )
        self._cents = tuple(
            (o.name, o.slot) for o in self.outputs if o.aggregate is Aggregate.sum_usd
        )
        self._means = tuple(
            (o.name, o.slot, o.count_slot)
            for o in self.outputs
            if o.aggregate is Aggregate.mean_usd
        )
        self.slot_count = len(slots)
        # begin's member arguments: one per distinct code (keys.py), at the code's place
        self.member_slots = max(DISTINCT_CODES.values())
        self._prelude = self._render()

    def values(self, raw: Sequence[float]) -> dict[str, float]:
        """Feature name → value from the script's output array, in catalogue order: every
        output as its slot's float first (right for all but the few money features, which
        are then overwritten in place): one pass in C instead of one Python loop step each."""
        result = self._zeros.copy()  # the names, without a resize per insert
        result.update(zip(self._names, map(float, self._raw_in_order(raw)), strict=True))
        for name, slot in self._cents:
            result[name] = raw[slot] / 100
        for name, slot, count_slot in self._means:
            count = raw[count_slot]
            result[name] = raw[slot] / 100 / count if count else 0.0
        return result

    def zeros(self) -> dict[str, float]:
        return dict.fromkeys((o.name for o in self.outputs), 0.0)

    def lua_prelude(self) -> str:
        """``local PLAN``, ``SLOTS`` and ``CAP`` for the functions (see ``begin.lua``)."""
        return self._prelude

    def _render(self) -> str:
        """The plan as a Lua table, one entry per entity (1-based output slots):

        ``g`` counter groups {width, values per record (1 + measures), kept buckets,
        horizon (s), what begin adds, what a decline adds, what a fraud adds (see
        ``Group.codes``), the windows by length {{buckets, (record position of the
        measure, slot)...}}, the record position of the attempts and of the cents (0 when
        the group has none)}; ``z`` distinct kinds {pruning width, kept buckets, horizon
        (s), {width, window buckets, slot, ...} (three numbers per window), the kind's
        code (``keys.DISTINCT_CODES``)}; ``star`` the position of the refreshing group (0
        when none), ``refresh`` its width (see ``begin.lua`` on TTLs). The state's layout
        follows ``g`` and ``z`` in this order (``EntityPlan.layout`` names it).

        Then ``SLOTS``, ``CAP``, ``MEMBERS`` (begin's member arguments, one per distinct
        code) and ``WIDTHS``, every bucket width the plan reads, whose current bucket begin
        computes once per call. Flat lists and positions rather than named fields: each
        lookup is one Lua instruction on the array part, and begin makes thousands.
        """
        lines = ["local PLAN = {"]
        for e in self.entities:
            groups = ",".join(
                f"{{{g.width},{1 + len(g.series)},{g.keep},{g.horizon},"
                f"{g.codes('as')},{g.codes('d')},{g.codes('f')},{{"
                + ",".join(_windows(g))
                + f"}},{_position(g, 'a')},{_position(g, 's')}}}"
                for g in e.groups
            )
            kinds = ",".join(
                f"{{{d.keep_width},{d.keep},{d.horizon},"
                f"{{{','.join(f'{w.width},{w.buckets},{w.slot + 1}' for w in d.windows)}}},"
                f"{d.code}}}"
                for d in e.distinct
            )
            lines.append(
                f"  {{g={{{groups}}},z={{{kinds}}},star={e.star},refresh={e.refresh}}},"
                f" -- {e.entity}"
            )
        lines.append("}")
        lines.append(
            f"local SLOTS, CAP, MEMBERS = {self.slot_count}, {catalog.DISTINCT_CAP}, "
            f"{self.member_slots}"
        )
        widths = sorted(
            {g.width for e in self.entities for g in e.groups}
            | {d.keep_width for e in self.entities for d in e.distinct}
            | {w.width for e in self.entities for d in e.distinct for w in d.windows}
        )
        lines.append(f"local WIDTHS = {{{','.join(map(str, widths))}}}")
        return "\n".join(lines) + "\n"


def _windows(group: Group) -> list[str]:
    """The group's windows by length: ``{buckets,position,slot,position,slot...}`` each."""
    by_length: dict[int, list[str]] = {}
    for j, series in enumerate(group.series):
        for w in series.windows:
            by_length.setdefault(w.buckets, []).append(f"{j + 2},{w.slot + 1}")
    return [f"{{{n},{','.join(reads)}}}" for n, reads in sorted(by_length.items())]


def _position(group: Group, measure: str) -> int:
    """The record position (2 onwards) of ``measure`` in ``group``'s records, 0 if none."""
    return next((j + 2 for j, s in enumerate(group.series) if s.measure == measure), 0)


def entity_values(plan: Plan, payment: Payment) -> list[tuple[EntityPlan, str]]:
    """The entities of ``payment`` that have a key value, in plan order."""
    found = []
    for e in plan.entities:
        value = present(getattr(payment, e.attribute))
        if value is not None:
            found.append((e, value))
    return found


PLAN: Final[Plan] = Plan(catalog.VELOCITY_FEATURES)
