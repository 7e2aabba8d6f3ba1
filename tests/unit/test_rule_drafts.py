"""Draft rule directories edited round-trip: the diff shows the edit and nothing else."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from service.errors import RuleError
from service.rules.rulebook import check_directory, load_ruleset
from service.settings import DEFAULT_RULES_DIR
from training.rule_drafts import (
    draft_directory,
    edit_pack,
    replace_in_when,
    set_param,
    set_rule,
)

PACKS = sorted(p.name for p in Path(DEFAULT_RULES_DIR).glob("*.yaml"))


def changed_lines(draft: Path, name: str) -> list[str]:
    """The -/+ lines of the draft pack against the shipped one."""
    before = (Path(DEFAULT_RULES_DIR) / name).read_text().splitlines()
    after = (draft / name).read_text().splitlines()
    diff = difflib.unified_diff(before, after, lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("---", "+++")]


@pytest.fixture
def draft(tmp_path: Path) -> Path:
    return draft_directory(DEFAULT_RULES_DIR, tmp_path / "draft")


@pytest.mark.parametrize("name", PACKS)
def test_a_pack_loaded_and_written_back_is_byte_for_byte_the_same(draft, name):
    with edit_pack(draft / name):
        pass
    assert (draft / name).read_bytes() == (Path(DEFAULT_RULES_DIR) / name).read_bytes()


def test_a_threshold_edit_changes_one_line_and_the_rule_engine_sees_it(draft):
    replace_in_when(
        draft / "common.yaml",
        "COMMON_DEVICE_MANY_CARDS",
        "device_distinct_cards_24h >= 5",
        "device_distinct_cards_24h >= 4",
    )
    assert changed_lines(draft, "common.yaml") == [
        "-    when: device_distinct_cards_24h >= 5",
        "+    when: device_distinct_cards_24h >= 4",
    ]
    rule = next(r for r in load_ruleset(draft).rules if r.rule_id == "COMMON_DEVICE_MANY_CARDS")
    assert rule.when.text.strip() == "device_distinct_cards_24h >= 4"


def test_an_edit_inside_a_folded_condition_keeps_its_line_breaks(draft):
    replace_in_when(
        draft / "common.yaml",
        "COMMON_AMOUNT_OVER_LIMIT",
        'amount > param("amount_limit_bdt")',
        'amount >= 2 * param("amount_limit_bdt")',
    )
    assert changed_lines(draft, "common.yaml") == [
        '-      or (currency == "BDT" and amount > param("amount_limit_bdt"))',
        '+      or (currency == "BDT" and amount >= 2 * param("amount_limit_bdt"))',
    ]
    assert check_directory(draft) == []


def test_mode_and_params_are_set_in_place(draft):
    shadow = next(
        r
        for r in load_ruleset(DEFAULT_RULES_DIR).rules
        if r.mode == "shadow" and Path(r.file).name != "common.yaml"
    )
    pack = Path(shadow.file).name
    set_rule(draft / pack, shadow.rule_id, mode="active")
    assert changed_lines(draft, pack) == ["-    mode: shadow", "+    mode: active"]
    set_param(draft / "common.yaml", "card_burst_10m", 5)
    set_param(draft / "common.yaml", "card_burst_10m", 9, merchant="ecom_electronics_sp")
    assert changed_lines(draft, "common.yaml") == [
        "-  card_burst_10m: 6",
        "+  card_burst_10m: 5",
        "+    card_burst_10m: 9",
    ]
    rules = {r.rule_id: r for r in load_ruleset(draft).rules}
    assert rules[shadow.rule_id].mode == "active"


def test_edits_that_would_miss_or_hit_twice_are_refused_naming_the_file(draft):
    before = (draft / "common.yaml").read_bytes()
    with pytest.raises(RuleError, match="no rule 'NOPE'"):
        set_rule(draft / "common.yaml", "NOPE", mode="active")
    with pytest.raises(RuleError, match="0 times in COMMON_DEVICE_MANY_CARDS"):
        replace_in_when(draft / "common.yaml", "COMMON_DEVICE_MANY_CARDS", ">= 7", ">= 8")
    with pytest.raises(RuleError, match="5 times in COMMON_AMOUNT_OVER_LIMIT"):
        replace_in_when(draft / "common.yaml", "COMMON_AMOUNT_OVER_LIMIT", "currency", "x")
    with pytest.raises(RuleError, match="no parameter 'nope'"):
        set_param(draft / "common.yaml", "nope", 1)
    assert (draft / "common.yaml").read_bytes() == before
