"""``backtest --against``: the vectorised comparison equals a row-by-row reference.

The reference takes each sampled payment alone: both rule sets' scalar ``evaluate`` (the
service's own path), the strongest active action of each, and then plain Python tallies
of what the draft newly stops and newly lets through, per rule, per vertical and in total,
fraud and legitimate apart, in exact cents. A broken draft is one line naming file, line
and rule, and no traceback, from every command that reads rule files.
"""

from __future__ import annotations

import math
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from service.decision.policy import STRENGTH
from service.rules.rulebook import load_ruleset
from service.settings import DEFAULT_RULES_DIR
from training.backtest import STOPPED_FROM, compare_dataset
from training.cli import main
from training.dataset import build_dataset

SAMPLE = Path(__file__).parents[2] / "data" / "sample" / "transactions.csv"


@pytest.fixture(scope="module")
def dataset() -> pd.DataFrame:
    log = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False).iloc[:1_500]
    return build_dataset(log)


def _draft(tmp_path: Path) -> Path:
    """The shipped packs with thresholds moved both ways, a rule gone and a rule added."""
    draft = tmp_path / "draft"
    shutil.copytree(DEFAULT_RULES_DIR, draft)
    common = draft / "common.yaml"
    text = common.read_text()
    for old, new in (
        ("  card_burst_10m: 6", "  card_burst_10m: 2"),
        ("  amount_limit_usd: 10000", "  amount_limit_usd: 1500"),
        ("    when: device_distinct_cards_24h >= 5", "    when: device_distinct_cards_24h >= 7"),
    ):
        assert old in text
        text = text.replace(old, new)
    text += (
        "  - id: COMMON_DRAFT_ODD_AMOUNT\n"
        "    description: An amount far from the card's habit.\n"
        "    action: review\n"
        "    when: card_amount_over_mean_30d >= 4\n"
        '    message: "Amount {card_amount_over_mean_30d} times the card\'s mean"\n'
    )
    common.write_text(text)
    return draft


def _features(row: pd.Series) -> dict[str, Any]:
    return {
        k: (None if isinstance(v, float) and math.isnan(v) else v)
        for k, v in row.items()
        if not (v is pd.NA or v is pd.NaT)
    }


def _reference(frame: pd.DataFrame, draft: Path, live: Path) -> dict[str, Any]:
    sets = {"live": load_ruleset(live), "draft": load_ruleset(draft)}
    total: dict[str, dict[str, list[int]]] = {}
    vertical: dict[tuple[str, str, str], list[int]] = {}
    rule: dict[tuple[str, str, str], list[int]] = {}
    for _, row in frame.iterrows():
        features = _features(row)
        stops: dict[str, set[str]] = {}
        stopped: dict[str, bool] = {}
        for side, ruleset in sets.items():
            ex = ruleset.evaluate(row["vertical"], row["merchant_id"], features)
            strong = [
                e.rule_id
                for e in ex
                if e.hit and e.mode == "active" and STRENGTH.get(e.action, 0) >= STOPPED_FROM
            ]
            stops[side] = set(strong)
            stopped[side] = bool(strong)
        label = row["label"]
        kind = "unlabelled" if pd.isna(label) else ("fraud" if label == 1 else "legit")
        cents = round(float(row["amount_usd"]) * 100)
        for change, side, happened in (
            ("newly_stopped", "draft", stopped["draft"] and not stopped["live"]),
            ("newly_let_through", "live", stopped["live"] and not stopped["draft"]),
        ):
            if not happened:
                continue
            for key, table in (
                ((change, kind), total),
                ((row["vertical"], change, kind), vertical),
            ):
                cell = table.setdefault(key, [0, 0])  # type: ignore[arg-type]
                cell[0] += 1
                cell[1] += cents
            for rule_id in stops[side]:
                cell = rule.setdefault((rule_id, change, kind), [0, 0])
                cell[0] += 1
                cell[1] += cents
    return {"total": total, "vertical": vertical, "rule": rule}


def _cell(entry: dict[str, Any]) -> list[int]:
    return [entry["payments"], int(Decimal(entry["usd"]).scaleb(2))]


def test_the_comparison_equals_a_row_by_row_reference(
    dataset: pd.DataFrame, tmp_path: Path
) -> None:
    draft, live = _draft(tmp_path), Path(DEFAULT_RULES_DIR)
    result = compare_dataset(dataset, draft_dir=draft, live_dir=live)
    reference = _reference(dataset, draft, live)
    kinds = ("fraud", "legit", "unlabelled")
    changes = ("newly_stopped", "newly_let_through")
    for change in changes:
        for kind in kinds:
            expected = reference["total"].get((change, kind), [0, 0])
            assert _cell(result["total"][change][kind]) == expected, (change, kind)
            for v, entry in result["by_vertical"].items():
                want = reference["vertical"].get((v, change, kind), [0, 0])
                assert _cell(entry[change][kind]) == want, (v, change, kind)
    for (rule_id, change, kind), expected in reference["rule"].items():
        assert _cell(result["by_rule"][rule_id][change][kind]) == expected, rule_id
    for rule_id, entry in result["by_rule"].items():
        for change in changes:
            for kind in kinds:
                got = _cell(entry[change][kind])
                assert got == reference["rule"].get((rule_id, change, kind), [0, 0]), rule_id
    # the draft moves payments both ways, and the new rule is named as the draft's
    assert result["total"]["newly_stopped"]["all"]["payments"] > 0
    assert result["total"]["newly_let_through"]["all"]["payments"] > 0
    assert result["by_rule"]["COMMON_DRAFT_ODD_AMOUNT"]["in"] == "draft"
    assert result["errors"] == {"live": {}, "draft": {}}


def test_since_and_until_choose_the_payments_compared(
    dataset: pd.DataFrame, tmp_path: Path
) -> None:
    draft, live = _draft(tmp_path), Path(DEFAULT_RULES_DIR)
    time = dataset["event_time"]
    since, until = float(time.quantile(0.3)), float(time.quantile(0.7))
    part = compare_dataset(dataset, draft_dir=draft, live_dir=live, since=since, until=until)
    assert part["payments"] == int(((time >= since) & (time < until)).sum())
    inside = dataset[(time >= since) & (time < until)]
    reference = _reference(inside, draft, live)
    for (change, kind), expected in reference["total"].items():
        assert _cell(part["total"][change][kind]) == expected


def test_the_same_rule_sets_change_nothing(dataset: pd.DataFrame) -> None:
    live = Path(DEFAULT_RULES_DIR)
    result = compare_dataset(dataset, draft_dir=live, live_dir=live)
    for change in ("newly_stopped", "newly_let_through"):
        assert result["total"][change]["all"] == {"payments": 0, "usd": "0.00"}
    assert result["stopped"]["live"] == result["stopped"]["draft"]


@pytest.mark.parametrize(
    "command",
    [
        ["backtest", "--log", str(SAMPLE), "--rules", "{draft}", "--against", "{live}"],
        ["backtest", "--log", str(SAMPLE), "--rules", "{draft}"],
        ["rules", "check", "{draft}"],
    ],
)
def test_a_broken_draft_is_one_line_naming_file_line_and_rule(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    draft = _draft(tmp_path)
    common = draft / "common.yaml"
    text = common.read_text().replace(
        "card_amount_over_mean_30d >= 4", "card_amount_over_mean_30d >= >= 4"
    )
    common.write_text(text)
    args = [
        a.format(draft=draft, live=DEFAULT_RULES_DIR, registry=tmp_path / "models") for a in command
    ]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "Traceback" not in err
    lines = err.splitlines()
    # (``rules check`` lists every problem, then how many: one line each)
    assert len(lines) == (2 if command[0] == "rules" else 1), err
    assert f"{common}:235: rule COMMON_DRAFT_ODD_AMOUNT: " in lines[0], lines[0]
