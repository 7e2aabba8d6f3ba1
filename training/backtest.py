"""Backtest a rule set over a labelled history: what it would have hit, and how well.

The rows get exactly the features the service computed (the offline twin, point in
time), and the rules run through the same compiled definitions as live traffic; a draft
rule directory can be compared with the shipped one before it goes live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from service.decision.policy import DECISIONS, STRENGTH
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
