"""Backtest a rule set over a labelled history: what it would have hit, and how well.

The rows get exactly the features the service computed (the offline twin, point in
time), and the rules run through the same compiled definitions as live traffic; a draft
rule directory can be compared with the live one before it goes live (``compare``: what
the draft newly stops and newly lets through, in payments and USD).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from service.decision.policy import DECISIONS, STRENGTH, rule_effects_frame
from service.rules.rulebook import load_ruleset
from service.settings import DEFAULT_RULES_DIR
from training.dataset import build_dataset
from training.evaluate import rule_outcomes

_NAMES = dict(enumerate(DECISIONS))  # strength → decision


def backtest(
    log: pd.DataFrame, *, rules_dir: Path | str | None = None, secret: bytes | None = None
) -> dict[str, Any]:
    """Run a rule set over a labelled log: per rule, hits, precision and recall."""
    frame = build_dataset(log, secret=secret)
    return backtest_dataset(frame, rules_dir=Path(rules_dir or DEFAULT_RULES_DIR))


def backtest_dataset(frame: pd.DataFrame, *, rules_dir: Path) -> dict[str, Any]:
    """The rules alone over dataset rows: the policy's rule step (no model, no lists)."""
    outcome = rule_outcomes(frame, rules_dir)
    strength = outcome["strength"]
    labelled = frame["label"].notna().to_numpy()
    fraud = (frame["label"].to_numpy() == 1) & labelled
    caught = strength >= STRENGTH["review"]
    rows = len(frame)
    rates = {
        f"{'approval' if name == 'approve' else name}_rate": float((strength == s).mean())
        if rows
        else 0.0
        for s, name in _NAMES.items()
    }
    total = rates | {
        "recall": float(caught[fraud].mean()) if fraud.any() else 0.0,
        "precision_of_declines": float(fraud[strength == STRENGTH["decline"]].mean())
        if (strength == STRENGTH["decline"]).any()
        else None,
        "frauds": int(fraud.sum()),
    }
    return {
        "version": outcome["version"],
        "rows": rows,
        "rules": outcome["by_rule"],
        "errors": outcome["errors"],
        "total": total,
        "decisions": {name: int((strength == s).sum()) for s, name in _NAMES.items()},
    }


# --- a draft rule set beside the live one, in money ------------------------------------------

# What the comparison counts a payment as: stopped when the rule step declines it or holds
# it for review (it does not go through without an analyst); a challenge lets it through.
STOPPED_FROM: Final = STRENGTH["review"]
_CLASSES: Final = ("fraud", "legit", "unlabelled")


def _tally() -> dict[str, dict[str, Any]]:
    return {c: {"payments": 0, "usd_cents": 0} for c in _CLASSES}


def _money(tally: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Cents as exact USD strings (two decimals), and an ``all`` line."""
    out = {
        c: {"payments": t["payments"], "usd": str(Decimal(t["usd_cents"]).scaleb(-2))}
        for c, t in tally.items()
    }
    out["all"] = {
        "payments": sum(t["payments"] for t in tally.values()),
        "usd": str(Decimal(sum(t["usd_cents"] for t in tally.values())).scaleb(-2)),
    }
    return out


def compare_dataset(
    frame: pd.DataFrame,
    *,
    draft_dir: Path,
    live_dir: Path,
    since: float | None = None,
    until: float | None = None,
) -> dict[str, Any]:
    """The draft rule set beside the live one over dataset rows: what changes, in money.

    A payment is *newly stopped* when the draft's rule step stops it (``STOPPED_FROM``:
    review or decline) and the live one does not, *newly let through* the other way round;
    in total and per vertical each payment counts once. Per rule, a newly stopped payment
    counts for every draft rule that stops it (action review or decline, active, hit), a
    newly let-through one for every live rule that stopped it; a rule present in one set
    only is named with it. Payments and USD (exact cents), fraud (label 1), legitimate
    (label 0) and unlabelled apart. ``since``/``until`` (Unix seconds, ``until``
    exclusive) choose the payments compared; every row is history for the features.
    The rule step alone: no model, no lists (as ``backtest_dataset``).
    """
    live, draft = rule_hits(frame, live_dir), rule_hits(frame, draft_dir)
    time = frame["event_time"].to_numpy(dtype=np.float64)
    chosen = np.ones(len(frame), dtype=bool)
    if since is not None:
        chosen &= time >= since
    if until is not None:
        chosen &= time < until
    label = frame["label"].to_numpy(dtype=np.float64)
    kind = np.where(label == 1, 0, np.where(label == 0, 1, 2))
    cents = np.round(frame["amount_usd"].to_numpy(dtype=np.float64) * 100).astype(np.int64)
    verticals = frame["vertical"].astype(object).fillna("").to_numpy()
    was, now = live["stopped"] & chosen, draft["stopped"] & chosen
    changes = {"newly_stopped": now & ~was, "newly_let_through": was & ~now}

    def tally(rows: np.ndarray) -> dict[str, dict[str, Any]]:
        t = _tally()
        for k, name in enumerate(_CLASSES):
            these = rows & (kind == k)
            t[name]["payments"] = int(these.sum())
            t[name]["usd_cents"] = int(cents[these].sum())
        return _money(t)

    by_rule: dict[str, dict[str, Any]] = {}
    for change, rows in changes.items():
        side = draft if change == "newly_stopped" else live
        for rule_id, stops in side["stops"].items():
            entry = by_rule.setdefault(rule_id, {"in": _presence(rule_id, live, draft)})
            entry[change] = tally(rows & stops)
    for entry in by_rule.values():
        for change in changes:
            entry.setdefault(change, _money(_tally()))
    return {
        "live": {"directory": str(live_dir), "version": live["version"]},
        "draft": {"directory": str(draft_dir), "version": draft["version"]},
        "payments": int(chosen.sum()),
        "since": since,
        "until": until,
        "stopped_means": "review or decline by the rule step (no model, no lists)",
        "stopped": {"live": tally(was), "draft": tally(now)},
        "total": {change: tally(rows) for change, rows in changes.items()},
        "by_vertical": {
            vertical or "(none)": {
                change: tally(rows & (verticals == vertical)) for change, rows in changes.items()
            }
            for vertical in sorted(set(verticals[chosen]))
        },
        "by_rule": dict(sorted(by_rule.items())),
        "errors": {"live": live["errors"], "draft": draft["errors"]},
    }


def _presence(rule_id: str, live: dict[str, Any], draft: dict[str, Any]) -> str:
    inside = (rule_id in live["ids"], rule_id in draft["ids"])
    return {(True, True): "both", (True, False): "live", (False, True): "draft"}[inside]


def rule_hits(frame: pd.DataFrame, rules_dir: Path) -> dict[str, Any]:
    """A rule set's rule step over the rows: who it stops, and which of its rules stop whom."""
    ruleset = load_ruleset(rules_dir)
    hits = ruleset.evaluate_frame(frame)
    strength, _ = rule_effects_frame(hits, ruleset.rules)
    stops = {
        rule.rule_id: hits[rule.rule_id].to_numpy(dtype=bool)
        for rule in ruleset.rules
        if rule.mode == "active"
        and rule.action != "score"
        and STRENGTH[rule.action] >= STOPPED_FROM
    }
    return {
        "version": ruleset.version,
        "stopped": strength >= STOPPED_FROM,
        "stops": stops,
        "ids": {rule.rule_id for rule in ruleset.rules},
        "errors": hits.attrs.get("rule_errors", {}),
    }


def compare(
    log: pd.DataFrame,
    *,
    draft_dir: Path | str,
    live_dir: Path | str | None = None,
    since: float | None = None,
    until: float | None = None,
    secret: bytes | None = None,
) -> dict[str, Any]:
    """``compare_dataset`` over a labelled log (features built point in time, as served)."""
    draft_dir, live_dir = Path(draft_dir), Path(live_dir or DEFAULT_RULES_DIR)
    load_ruleset(draft_dir)  # a broken draft fails before the features are built
    load_ruleset(live_dir)
    frame = build_dataset(log, secret=secret)
    return compare_dataset(frame, draft_dir=draft_dir, live_dir=live_dir, since=since, until=until)
