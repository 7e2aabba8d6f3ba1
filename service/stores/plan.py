"""The feature catalogue compiled into what the Redis store reads and writes.

Window rule (``service.features.catalog``): at event second ``t`` a window of ``n`` buckets
of ``w`` seconds covers the bucket ids from ``floor(s/w) - n + 1`` on, up to the newest the
entity holds (attempts counted before this one but stamped later count too; in time order
that is ``[floor(t/w) - n + 1, floor(t/w)]``). ``s``, the window second, is ``t``, or with
the server clock the server's second when that is earlier (a stamp in the future, within
the skew, cannot move a window's start forward past the attempts it should see). The
attempt itself is counted at ``t``.

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
window of their group plus ``backdating_buckets`` (at least one spare bucket, for
concurrent requests that straddle a bucket edge; as many as
``catalog.MAX_BACKDATING_SECONDS`` needs, so that an attempt stamped that much before the
newest still finds its whole window), and the members last seen before the largest window
of their kind plus ``MAX_BACKDATING_SECONDS`` (rounded up to its bucket). The key's TTL
is the longest horizon (``(kept buckets + 1) * width``) of its non-empty groups and kinds
plus the width of the refreshing group (``EntityPlan.star``), set when the entity is new,
when that group opens a bucket or when a longer horizon is needed (``begin.lua`` explains
why that suffices), so a state disappears once nothing in it can count any more: fraud
records (written by feedback at the original transaction's bucket) keep an entity up to
their 30 days.

The plan is data for ``begin.lua``: ``lua_prelude()`` renders it inside the function
library (``library.py``), whose version hash changes whenever the catalogue does, as a Lua
table and, for begin's pass over each entity's state, as one Lua function per entity with
the plan's numbers written in as constants (``_count_entity``: the rules above, stated
once in ``_count_group`` and ``_count_kind``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import chain, repeat
from operator import call, itemgetter, truediv
from typing import Final

from service.features import catalog
from service.features.catalog import Aggregate, Entity
from service.normalisation.payment import Payment
from service.stores.keys import DISTINCT_CODES, WIDTH_CODES

# The measures each aggregate reads, per bucket: ``a`` attempts, ``s`` USD cents, ``d``
# declines, ``f`` frauds (at their payment's bucket), ``r`` frauds reported (at their
# label's arrival), ``l`` and ``w`` the attempts' ``catalog.amount_log_units`` and their
# squares. begin adds to a, s, l and w; commit to d; feedback to f and r. Each letter is a
# Lua local of the generated COUNT code, so none may be one of its other locals.
_WANTED: Final[dict[Aggregate, tuple[str, ...]]] = {
    Aggregate.count: ("a",),
    Aggregate.declines: ("d",),
    Aggregate.sum_usd: ("s",),
    Aggregate.frauds: ("f",),
    Aggregate.frauds_reported: ("r",),
    Aggregate.mean_usd: ("s", "a"),
    Aggregate.fraud_rate_reported: ("r", "a"),
    Aggregate.fraud_rate_matured: ("f", "a"),  # and the same of its ``recent`` window
    Aggregate.amount_over_mean: ("s", "a"),
    Aggregate.amount_zscore: ("a", "l", "w"),
}
# What begin adds to each measure it counts, as Lua expressions of COUNT's arguments.
_BEGIN_ADDS: Final[tuple[tuple[str, str], ...]] = (
    ("a", "1"),
    ("s", "cents"),
    ("l", "units"),
    ("w", "units2"),
)


def _mean_usd(cents: float, attempts: float) -> float:
    """A window's mean USD per attempt, 0 without attempts (``mean_usd``)."""
    return cents / 100 / attempts if attempts else 0.0


# How a feature's value comes from the window sums of its slots (``FeatureSlots.slots``, in
# ``_WANTED``'s order): None, the one sum itself; else the function, the attempt's own figure
# it takes first ("cents", "units", or None), the positions of the slots it takes next and
# the constants it takes last (``sum_usd``: ``cents / 100``, with no Python call).
_VALUE_OF: Final[
    dict[
        Aggregate,
        tuple[Callable[..., float], str | None, tuple[int, ...], tuple[float, ...]] | None,
    ]
] = {
    Aggregate.count: None,
    Aggregate.declines: None,
    Aggregate.frauds: None,
    Aggregate.frauds_reported: None,
    Aggregate.distinct: None,
    Aggregate.sum_usd: (truediv, None, (0,), (100,)),
    Aggregate.mean_usd: (_mean_usd, None, (0, 1), ()),
    Aggregate.fraud_rate_reported: (catalog.fraud_rate, None, (0, 1), ()),
    Aggregate.fraud_rate_matured: (catalog.fraud_rate_matured, None, (0, 1, 2, 3), ()),
    Aggregate.amount_over_mean: (catalog.amount_over_mean, "cents", (1, 0), ()),
    Aggregate.amount_zscore: (catalog.amount_zscore, "units", (0, 1, 2), ()),
}


def _getter(slots: Sequence[int]) -> Callable[[Sequence[float]], tuple[float, ...]]:
    """The values at ``slots`` as a tuple, in one C call (``itemgetter`` of one is bare)."""
    if len(slots) == 1:
        slot = slots[0]
        return lambda raw: (raw[slot],)
    return itemgetter(*slots)


def present(value: object) -> str | None:
    """A key or member value, or None when it is missing or blank."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def event_second(event_time: float) -> int:
    """The whole second an event time falls in."""
    return math.floor(event_time)


def arrival_time(event_second: int, reported_at: float) -> float:
    """When a fraud label counts among reported frauds (``catalog``'s rule), Unix seconds.

    Its arrival, ``reported_at``, but never before its payment's ``event_second``; its
    bucket is that of ``floor`` of it, as for any event.
    """
    return max(float(event_second), float(reported_at))  # (a Python float: Redis reads it)


def backdating_buckets(width: int) -> int:
    """Buckets of ``width`` an attempt may lie behind the entity's newest one.

    At least one (concurrent requests across a bucket edge), and enough for
    ``catalog.MAX_BACKDATING_SECONDS``. A group keeps its largest window less one plus these
    behind the current bucket, so what a backdated attempt's window reads is still there (the
    module docstring has the rule).
    """
    return max(1, -(-catalog.MAX_BACKDATING_SECONDS // width))


@dataclass(frozen=True, slots=True)
class SeriesWindow:
    """Where one window of a series is read: its buckets and output slot."""

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
        """The series' short name in the packed state."""
        return self.measure + WIDTH_CODES[self.width]

    @property
    def horizon(self) -> int:
        """Seconds a bucket stays useful after it was written."""
        return (self.keep + 1) * self.width


@dataclass(frozen=True, slots=True)
class Group:
    """The counter series of one bucket width of an entity, stored together.

    A record per bucket holds its id and one value per measure, so the measures share the bucket id.
    """

    width: int
    series: tuple[Series, ...]  # one per measure, in record order
    keep: int  # buckets kept behind the current one: the largest window read (one spare)

    @property
    def name(self) -> str:
        """The group's short name in the packed state."""
        return WIDTH_CODES[self.width] + "".join(s.measure for s in self.series)

    @property
    def horizon(self) -> int:
        """Seconds a bucket stays useful after it was written."""
        return (self.keep + 1) * self.width

    def codes(self, measures: str) -> str:
        """The Lua list of what each record value adds.

        The Lua list of what to add per record value: 1 ``one``, 2 the cents, 0 nothing
        (``false`` when nothing is added at all); ``measures`` are those that get ``one``,
        and ``s`` gets the cents when listed.
        """
        codes = ["0"] + [
            "2" if s.measure == "s" and "s" in measures else "1" if s.measure in measures else "0"
            for s in self.series
        ]
        return f"{{{','.join(codes)}}}" if set(codes) != {"0"} else "false"


@dataclass(frozen=True, slots=True)
class DistinctWindow:
    """One window of a distinct count: bucket width, buckets and output slot."""

    width: int
    buckets: int
    slot: int


@dataclass(frozen=True, slots=True)
class DistinctKind:
    """The members one entity remembers of one kind (cards, devices, ...) and their windows."""

    of: str
    attribute: str
    code: int
    windows: tuple[DistinctWindow, ...]
    keep_width: int  # the largest window's bucket width and count, for pruning
    keep: int

    @property
    def name(self) -> str:
        """The kind's short name in the packed state."""
        return f"z{self.code}"

    @property
    def horizon(self) -> int:
        """Seconds a member stays useful after it was last seen."""
        return (self.keep + 1) * self.keep_width


@dataclass(frozen=True, slots=True)
class EntityPlan:
    """What ``begin`` counts and reads for one entity."""

    entity: Entity
    attribute: str
    index: int  # 1-based position in the plan, as ``commit`` and ``feedback`` name it
    groups: tuple[Group, ...]
    distinct: tuple[DistinctKind, ...]
    layout: str  # names the packed state's layout (``layout``), part of the key

    @property
    def star(self) -> int:
        """The position of the group with the longest horizon, 0 when none.

        The 1-based position of the group ``begin`` writes with the longest horizon, 0
        when it writes none: its new buckets refresh the state's TTL.
        """
        written = [i for i, g in enumerate(self.groups) if g.codes("as") != "false"]
        return 1 + max(written, key=lambda i: self.groups[i].horizon) if written else 0

    @property
    def refresh(self) -> int:
        """The refreshing group's width, 0 when none.

        A state's TTL, when set, is its longest horizon plus this (see ``begin.lua``).
        """
        return self.groups[self.star - 1].width if self.star else 0

    @property
    def series(self) -> tuple[Series, ...]:
        """Every series of the entity, group by group."""
        return tuple(s for g in self.groups for s in g.series)

    @property
    def declines(self) -> tuple[Series, ...]:
        """The entity's decline series."""
        return tuple(s for s in self.series if s.measure == "d")

    @property
    def frauds(self) -> tuple[Series, ...]:
        """The entity's confirmed-fraud series."""
        return tuple(s for s in self.series if s.measure == "f")

    @property
    def reported(self) -> tuple[Series, ...]:
        """The entity's series of frauds by label arrival."""
        return tuple(s for s in self.series if s.measure == "r")

    @property
    def slots(self) -> tuple[int, ...]:
        """The output slots the entity's windows fill, ascending (one run: ``Plan``)."""
        counted = (w.slot for s in self.series for w in s.windows)
        distinct = (w.slot for d in self.distinct for w in d.windows)
        return tuple(sorted((*counted, *distinct)))


def _entity_ordered_slots(
    entities: list[EntityPlan], outputs: list[FeatureSlots]
) -> tuple[list[EntityPlan], list[FeatureSlots]]:
    """``entities`` and ``outputs`` with the output slots numbered entity by entity.

    In plan order, and within an entity its groups' series' windows, then its kinds'
    windows: so each entity's slots are one run, which ``_count_entity`` returns packed.
    Only the numbering changes.
    """
    new: dict[int, int] = {}
    for e in entities:
        for s in e.series:
            for w in s.windows:
                new[w.slot] = len(new)
        for d in e.distinct:
            for w in d.windows:
                new[w.slot] = len(new)
    renumbered = [
        replace(
            e,
            groups=tuple(
                replace(
                    g,
                    series=tuple(
                        replace(s, windows=tuple(replace(w, slot=new[w.slot]) for w in s.windows))
                        for s in g.series
                    ),
                )
                for g in e.groups
            ),
            distinct=tuple(
                replace(d, windows=tuple(replace(w, slot=new[w.slot]) for w in d.windows))
                for d in e.distinct
            ),
        )
        for e in entities
    ]
    return renumbered, [replace(o, slots=tuple(new[s] for s in o.slots)) for o in outputs]


def layout(groups: tuple[Group, ...], distinct: tuple[DistinctKind, ...]) -> str:
    """The name of an entity's packed-state layout, part of its key.

    Names the layout of an entity's packed state (its groups and kinds, in order, and
    the cap). It is part of the entity's key, so a catalogue that changes the layout
    starts the entity afresh instead of misreading a state packed by another.
    """
    shape = [g.name for g in groups] + [d.name for d in distinct]
    return hashlib.sha1(f"{shape}|{catalog.DISTINCT_CAP}".encode()).hexdigest()[:6]


@dataclass(frozen=True, slots=True)
class FeatureSlots:
    """Where a feature's value comes from in the script's output.

    ``slots``: one per measure the aggregate reads (``_WANTED``), in that order; for
    ``fraud_rate_matured`` the same again of its ``recent`` window.
    """

    name: str
    aggregate: Aggregate
    slots: tuple[int, ...]

    @property
    def slot(self) -> int:
        """The slot of the aggregate's first measure."""
        return self.slots[0]


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
                outputs.append(FeatureSlots(f.name, f.aggregate, (s,)))
                continue
            found = []
            for window in (f, f.recent) if f.recent else (f,):
                for m in _WANTED[f.aggregate]:
                    reads = series.setdefault((f.entity, m, window.bucket), {})
                    s = reads.setdefault(
                        window.buckets, slot(("c", f.entity, window.bucket, m, window.buckets))
                    )
                    found.append(s)
            outputs.append(FeatureSlots(f.name, f.aggregate, tuple(found)))

        entities = []
        for entity in Entity:
            widths = sorted({width for (e, _, width) in series if e is entity})
            counters = []
            for width in widths:
                measures = sorted(m for (e, m, w) in series if e is entity and w == width)
                keep = max(max(series[(entity, m, width)]) for m in measures) - 1
                keep += backdating_buckets(width)
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
                reach = wide[0] * wide[1] + catalog.MAX_BACKDATING_SECONDS
                kinds.append(
                    DistinctKind(
                        of=of,
                        attribute=catalog.DISTINCT_OF[of],
                        code=DISTINCT_CODES[of],
                        windows=tuple(DistinctWindow(w, n, s) for (w, n), s in windows.items()),
                        keep_width=wide[0],
                        keep=-(-reach // wide[0]),
                    )
                )
            if counters or kinds:
                entities.append(
                    EntityPlan(
                        entity,
                        catalog.entity_attribute(entity),
                        len(entities) + 1,
                        tuple(counters),
                        tuple(kinds),
                        layout(tuple(counters), tuple(kinds)),
                    )
                )
        # output slots renumbered entity by entity, in plan order (each slot is one entity's),
        # so that each entity's sums are one run of the output (``_count_entity`` packs it)
        entities, outputs = _entity_ordered_slots(entities, outputs)
        self.entities: tuple[EntityPlan, ...] = tuple(entities)
        self.outputs: tuple[FeatureSlots, ...] = tuple(outputs)
        self._names = tuple(o.name for o in self.outputs)
        self._zeros: dict[str, float] = dict.fromkeys(self._names, 0.0)
        # per aggregate form (``_VALUE_OF``), its features' names and how ``values`` makes
        # their values from the raw sums: the plain sums by one getter; a form of several
        # features by one getter per slot position (a column) and ``map`` (its constants as
        # ``repeat``, made once); a form of one feature by one getter and a direct call
        forms: dict[object, list[FeatureSlots]] = {}
        for o in self.outputs:
            forms.setdefault(_VALUE_OF[o.aggregate], []).append(o)
        plain = forms.pop(None, [])
        several = [(form, group) for form, group in forms.items() if len(group) > 1]
        single = [(form, group[0]) for form, group in forms.items() if len(group) == 1]
        self._value_names = tuple(
            o.name for o in (*plain, *(o for _, g in several for o in g), *(o for _, o in single))
        )
        self._plain = _getter([o.slot for o in plain])
        self._several = tuple(
            (
                function,
                lead,
                tuple(_getter([o.slots[i] for o in group]) for i in order),
                tuple(map(repeat, last)),
            )
            for (function, lead, order, last), group in several
        )
        self._single = tuple(
            (function, lead, _getter([o.slots[i] for i in order]), last)
            for (function, lead, order, last), o in single
        )
        self.slot_count = len(slots)
        # begin's member arguments: one per distinct code (keys.py), at the code's place
        self.member_slots = max(DISTINCT_CODES.values())
        self._prelude = self._render()

    def values(self, raw: Sequence[float], cents: int = 0, units: int = 0) -> dict[str, float]:
        """Feature name → value from the script's output array (floats, as unpacked).

        ``cents`` and ``units`` are the current attempt's USD cents and
        ``catalog.amount_log_units``, which the amount-against-habit features compare with the
        window. Each feature's value is its aggregate's form (``_VALUE_OF``) of its slots, the
        features of one form read by ``itemgetter`` and mapped in C (a form of one feature:
        called once on its slots), every value put in one ``update`` of the names in catalogue
        order: no Python loop step per feature.
        """
        result = self._zeros.copy()  # catalogue order, without a resize per insert
        parts: list[Iterable[float]] = [self._plain(raw)]
        for function, lead, reads, last in self._several:
            columns = map(call, reads, repeat(raw))
            if lead is None:
                parts.append(map(function, *columns, *last))
            else:
                figure = repeat(cents if lead == "cents" else units)
                parts.append(map(function, figure, *columns, *last))
        for function, lead, read, constants in self._single:
            if lead is None:
                parts.append((function(*read(raw), *constants),))
            else:
                figure = cents if lead == "cents" else units
                parts.append((function(figure, *read(raw), *constants),))
        result.update(zip(self._value_names, chain.from_iterable(parts), strict=True))
        return result

    def zeros(self) -> dict[str, float]:
        """Every velocity feature at 0, for a payment without history."""
        return dict.fromkeys((o.name for o in self.outputs), 0.0)

    def lua_prelude(self) -> str:
        """The Lua prelude of the plan: its tables and per-entity functions.

        ``PLAN``, ``SLOTS``, ``CAP``, ``MEMBERS``, ``WIDTHS`` and ``COUNT`` for the
        functions (see ``_render`` and ``begin.lua``).
        """
        return self._prelude

    def _render(self) -> str:
        """The plan as Lua: a table for every function, and begin's counting code.

        ``PLAN``, one entry per entity: ``g`` counter groups {width, values per record (1 +
        measures), kept buckets, horizon (s), what begin adds, what a decline adds, what
        a fraud adds, what a reported fraud adds (see ``Group.codes``)}; ``z`` distinct kinds
        {pruning width, kept buckets, horizon (s)}; ``star`` the position of the refreshing
        group (0 when none), ``refresh`` its width (see ``begin.lua`` on TTLs), ``slots`` the
        count of its output slots (one run, ``_entity_ordered_slots``). The state's layout
        follows ``g`` and ``z`` in this order (``EntityPlan.layout`` names it). Then
        ``SLOTS``, ``CAP``, ``MEMBERS`` (begin's member arguments, one per distinct code)
        and ``WIDTHS``, every bucket width the plan reads, whose current bucket begin
        computes once per call.

        ``COUNT[e]``: begin's pass over entity e's state, one Lua function per entity
        written out from the plan (``_count_entity``). A loop over the plan's tables did
        the same with Lua bookkeeping per value moved (which group, how many measures,
        which window, which slot); with those as constants in the code a begin costs Redis
        fewer instructions. The functions are text
        made from the plan's own numbers, with the rules spelled out once, in
        ``_count_group`` and ``_count_kind``.
        """
        lines = ["local PLAN = {"]
        for e in self.entities:
            groups = ",".join(
                f"{{{g.width},{1 + len(g.series)},{g.keep},{g.horizon},"
                f"{g.codes('as')},{g.codes('d')},{g.codes('f')},{g.codes('r')}}}"
                for g in e.groups
            )
            kinds = ",".join(f"{{{d.keep_width},{d.keep},{d.horizon}}}" for d in e.distinct)
            lines.append(
                f"  {{g={{{groups}}},z={{{kinds}}},star={e.star},refresh={e.refresh},"
                f"slots={len(e.slots)}}}, -- {e.entity}"
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
        lines.append("local COUNT, FRESH = {}, {}")
        at = {width: i + 1 for i, width in enumerate(widths)}  # cur[i]: bucket of WIDTHS[i]
        lines += (_count_entity(e, at) for e in self.entities)
        lines += (_fresh_entity(e, at) for e in self.entities if _freshable(e))
        return "\n".join(lines) + "\n"


# The locals and arguments of the generated COUNT functions (``_count_entity``).
_COUNT_LOCALS: Final = frozenset(
    (
        *("p", "m", "ttl", "old", "opened", "n", "last", "h", "q", "c", "sb", "b", "v"),
        *("O", "M", "cur", "start", "t", "cents", "units", "units2", "write"),
        *("found", "member", "low", "oldest", "at", "digest", "seen", "from", "count", "j"),
    )
)


def _count_entity(e: EntityPlan, at: dict[int, int]) -> str:
    """The Lua of ``COUNT[e.index]``: one entity's pass over its state.

    ``COUNT[e.index]``: sums the entity's windows while it copies the state ``v`` (an
    array of its doubles, empty when new) to ``O``, counting the attempt
    when ``write``: per group ``_count_group``, per kind ``_count_kind``. ``cur`` holds the
    bucket of the event second ``t`` per width (``cur[at[width]]``, by the width's place
    in WIDTHS), ``start`` that of the window second (``t``, or the server's second when
    that is earlier: the module docstring), ``M`` the member digests by code (false when
    missing). Returns the length of the state in O, the longest horizon of its non-empty
    groups and kinds after and before, whether the refreshing group opened a bucket
    (begin.lua sets the TTL from them), and the window sums, packed: the entity's run of
    the output slots (``_entity_ordered_slots``). Each sum is a Lua local, not a table
    entry: an addition then is one VM instruction instead of a table read and write.
    """
    if len(e.slots) > 120:  # Lua 5.1 allows a function 200 locals
        raise RuntimeError(f"{e.entity}: {len(e.slots)} windows, too many for one Lua function")
    body = "".join(_count_group(e, g, i + 1 == e.star, at) for i, g in enumerate(e.groups))
    body += "".join(_count_kind(e, d, at) for d in e.distinct)
    sums = ", ".join(_sum(slot) for slot in e.slots)
    zeros = ", ".join("0" for _ in e.slots)
    return (
        f"COUNT[{e.index}] = function(v, O, M, cur, start, t, cents, units, units2, write)"
        f" -- {e.entity}\n"
        f"  local p, m, ttl, old, opened = 1, 0, 0, 0, {'false' if e.star else 'true'}\n"
        "  local n, last, h, q, c, sb\n"
        f"  local {sums} = {zeros}\n"
        f"{body}"
        f"  return m, ttl, old, opened, struct.pack('<{'d' * len(e.slots)}', {sums})\n"
        "end"
    )


def _sum(slot: int) -> str:
    """The Lua local of ``_count_entity`` that sums output slot ``slot``."""
    return f"o{slot + 1}"


def _count_group(e: EntityPlan, g: Group, star: bool, at: dict[int, int]) -> str:
    """One group of ``_count_entity``.

    The group at v[p] (its record count, then records of the bucket id and a value per measure, in
    bucket order) is copied to O after m: records of buckets below start - keep are dropped (no
    window reads them; start is the bucket of the window second, cur's or earlier), and so are
    records with no value above 0. Each kept record of a bucket b < cur adds its values to the
    windows that cover it: b > start - buckets. The current bucket's record
    gets the attempt (1 to the attempts, the cents to the amount) and is made when missing. Records
    of later buckets (attempts counted before this one but stamped later) are copied and count in
    every window: a backdated stamp cannot hide the entity's newest activity. A takeover reads
    through the same code without the attempt: what it drops counts in no window.
    """
    k = 1 + len(g.series)
    xs = [s.measure for s in g.series]  # one Lua local per measure, named by its letter
    if set(xs) & _COUNT_LOCALS:
        raise RuntimeError(f"measure letters {xs} clash with COUNT's Lua locals")
    values = ", ".join(xs)
    at_q = ", ".join(f"v[q + {j}]" for j in range(1, k))
    kept = " or ".join(f"{x} > 0" for x in xs)
    store = ", ".join(f"O[m + {j}]" for j in range(1, k + 1))
    # per window length, the adds of its series; reported frauds apart: their window is
    # the n full buckets before the window second's, sb - n .. sb - 1 (``catalog``'s
    # label-arrival rule), so they never count in the current or a later bucket
    windows: dict[int, list[str]] = {}
    reported: dict[int, list[str]] = {}
    for s in g.series:
        for w in s.windows:
            (reported if s.measure == "r" else windows).setdefault(w.buckets, []).append(
                f"{_sum(w.slot)} = {_sum(w.slot)} + {s.measure}"
            )
    earlier = "".join(
        f"      if b > sb - {n} then {'; '.join(adds)} end\n" for n, adds in sorted(windows.items())
    ) + "".join(
        f"      if b >= sb - {n} and b < sb then {'; '.join(adds)} end\n"
        for n, adds in sorted(reported.items())
    )
    current = "".join(f"      {'; '.join(adds)}\n" for _, adds in sorted(windows.items()))
    later = current
    attempt = [f"{x} = {x} + {add}" for x, add in _BEGIN_ADDS if x in xs]
    count = f"    if write then {'; '.join(attempt)} end\n" if attempt else ""
    opens = "      if not found then opened = true end\n" if star else ""
    return (
        f"  -- {e.entity} {g.name}: buckets of {g.width} s, {g.keep} kept behind the current\n"
        f"  c, sb = cur[{at[g.width]}], start[{at[g.width]}]\n"
        "  n = v[p] or 0\n"
        f"  if n > 0 and {g.horizon} > old then old = {g.horizon} end\n"
        f"  last = p + {k} * n\n"
        "  h = m + 1\n"
        "  m = h\n"
        "  q = p + 1\n"
        f"  while q <= last and v[q] < sb - {g.keep} do q = q + {k} end\n"
        "  while q <= last do -- earlier buckets\n"
        "    local b = v[q]\n"
        "    if b >= c then break end\n"
        f"    local {values} = {at_q}\n"
        f"    if {kept} then\n"
        f"      {store} = b, {values}\n"
        f"{earlier}"
        f"      m = m + {k}\n"
        "    end\n"
        f"    q = q + {k}\n"
        "  end\n"
        "  do -- the current bucket\n"
        f"    local {values} = {', '.join('0' for _ in xs)}\n"
        "    local found = q <= last and v[q] == c\n"
        "    if found then\n"
        f"      {values} = {at_q}\n"
        f"      q = q + {k}\n"
        "    end\n"
        f"{count}"
        f"    if {kept} then\n"
        f"      {store} = c, {values}\n"
        f"{current}"
        f"      m = m + {k}\n"
        f"{opens}"
        "    end\n"
        "  end\n"
        "  while q <= last do -- later buckets\n"
        f"    local {values} = {at_q}\n"
        f"    if {kept} then\n"
        f"      {store} = v[q], {values}\n"
        f"{later}"
        f"      m = m + {k}\n"
        "    end\n"
        f"    q = q + {k}\n"
        "  end\n"
        f"  O[h] = (m - h) / {k}\n"
        f"  if m > h and {g.horizon} > ttl then ttl = {g.horizon} end\n"
        "  p = last + 1\n"
    )


def _count_kind(e: EntityPlan, d: DistinctKind, at: dict[int, int]) -> str:
    """One distinct kind of ``_count_entity``.

    The members at v[p] (count, then (digest, last-seen second) pairs) are copied to O after m,
    dropping those last seen before the kind's largest window plus one spare bucket; the payment's
    member (a digest, none when missing or reading) moves its last-seen second up to t, or joins:
    appended while fewer than CAP are kept, else in the place of the member seen longest ago if that
    was not after t. Then each window counts the kept members last seen in its buckets.
    """
    windows = "".join(
        "      do\n"
        f"        local from, count = (start[{at[w.width]}] - {w.buckets - 1}) * {w.width}, 0\n"
        "        for j = h + 2, m, 2 do\n"
        "          if O[j] >= from then count = count + 1 end\n"
        "        end\n"
        f"        {_sum(w.slot)} = count\n"
        "      end\n"
        for w in d.windows
    )
    return (
        f"  -- {e.entity} {d.name}: the {d.of} seen with it\n"
        "  do\n"
        f"    local member = write and M[{d.code}] or nil\n"
        f"    local low = (start[{at[d.keep_width]}] - {d.keep}) * {d.keep_width}\n"
        "    n = v[p] or 0\n"
        f"    if n > 0 and {d.horizon} > old then old = {d.horizon} end\n"
        "    last = p + 2 * n\n"
        "    h = m + 1\n"
        "    m = h\n"
        "    local oldest, at = nil, 0\n"
        "    for j = p + 1, last, 2 do\n"
        "      local digest, seen = v[j], v[j + 1]\n"
        "      if digest == member then\n"
        "        if seen < t then seen = t end\n"
        "        member = nil\n"
        "      end\n"
        "      if seen >= low then\n"
        "        O[m + 1], O[m + 2] = digest, seen\n"
        "        m = m + 2\n"
        "        if not oldest or seen < oldest then oldest, at = seen, m - 1 end\n"
        "      end\n"
        "    end\n"
        "    if member and t >= low then\n"
        "      if m - h < 2 * CAP then\n"
        "        O[m + 1], O[m + 2] = member, t\n"
        "        m = m + 2\n"
        "      elseif t >= oldest then\n"
        "        O[at], O[at + 1] = member, t\n"
        "      end\n"
        "    end\n"
        "    O[h] = (m - h) / 2\n"
        "    if m > h then\n"
        f"{windows}"
        f"      if {d.horizon} > ttl then ttl = {d.horizon} end\n"
        "    end\n"
        "    p = last + 1\n"
        "  end\n"
    )


def _freshable(e: EntityPlan) -> bool:
    """Whether ``_fresh_entity`` can write ``e``: each of its groups counts attempts.

    An attempt then makes one record in every group, so a new state's groups have a fixed
    shape.
    """
    return all("a" in (s.measure for s in g.series) for g in e.groups)


def _fresh_entity(e: EntityPlan, at: dict[int, int]) -> str:
    """The Lua of ``FRESH[e.index]``: ``COUNT[e.index]`` for a new entity's attempt.

    What ``_count_entity`` does with an empty state and ``write``, with what is fixed then
    written in: one record per group, its bucket ``cur``'s, holding the attempt; per kind
    the payment's member, if any, last seen at ``t``. The values go to ``struct.pack`` as
    locals instead of through ``O`` (which holds only the kinds' part, the one of
    variable length) and no loop runs over an empty state. Arguments: ``O`` and
    ``format`` (begin.lua's scratch table and pack format for n doubles), then
    ``COUNT``'s. Returns the state's TTL (its longest horizon, as ``COUNT``'s ``ttl``),
    the window sums packed (as ``COUNT``) and the state packed. The same state and sums
    as ``COUNT`` bit for bit (``tests/unit/test_plan_fresh.py`` runs both).
    """
    sums = ", ".join(_sum(slot) for slot in e.slots)
    zeros = ", ".join("0" for _ in e.slots)
    adds = dict(_BEGIN_ADDS)
    body, values = [], []
    for i, g in enumerate(e.groups, start=1):
        xs = [f"{sr.measure}{i}" for sr in g.series]
        first = ", ".join(
            f"0 + {adds[sr.measure]}" if sr.measure in adds else "0" for sr in g.series
        )
        body.append(
            f"  -- {e.entity} {g.name}\n"
            f"  local c{i}, {', '.join(xs)} = cur[{at[g.width]}], {first}\n"
        )
        for sr, x in zip(g.series, xs, strict=True):
            if sr.measure != "r":  # (reported frauds: never the current bucket's)
                body += (f"  {_sum(w.slot)} = {_sum(w.slot)} + {x}\n" for w in sr.windows)
        values += ["1", f"c{i}", *xs]
    for d in e.distinct:
        windows = "".join(
            f"      if t >= (start[{at[w.width]}] - {w.buckets - 1}) * {w.width} then"
            f" {_sum(w.slot)} = 1 end\n"
            for w in d.windows
        )
        body.append(
            f"  -- {e.entity} {d.name}: the {d.of} seen with it\n"
            "  do\n"
            f"    local member = M[{d.code}]\n"
            f"    if member and t >= (start[{at[d.keep_width]}] - {d.keep}) * {d.keep_width} then\n"
            "      O[n + 1], O[n + 2], O[n + 3] = 1, member, t\n"
            "      n = n + 3\n"
            f"{windows}"
            f"      if {d.horizon} > ttl then ttl = {d.horizon} end\n"
            "    else\n"
            "      O[n + 1] = 0\n"
            "      n = n + 1\n"
            "    end\n"
            "  end\n"
        )
    horizon = max(g.horizon for g in e.groups) if e.groups else 0
    return (
        f"FRESH[{e.index}] = function(O, format, M, cur, start, t, cents, units, units2)"
        f" -- {e.entity}\n"
        f"  local ttl, n = {horizon}, 0\n"
        f"  local {sums} = {zeros}\n"
        f"{''.join(body)}"
        f"  return ttl, struct.pack('<{'d' * len(e.slots)}', {sums}),\n"
        f"    struct.pack(format({len(values)} + n), {', '.join([*values, 'unpack(O, 1, n)'])})\n"
        "end"
    )


def entity_values(plan: Plan, payment: Payment) -> list[tuple[EntityPlan, str]]:
    """The entities of ``payment`` that have a key value, in plan order."""
    found = []
    for e in plan.entities:
        value = present(getattr(payment, e.attribute))
        if value is not None:
            found.append((e, value))
    return found


PLAN: Final[Plan] = Plan(catalog.VELOCITY_FEATURES)
