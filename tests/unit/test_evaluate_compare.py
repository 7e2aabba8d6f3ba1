"""``riskscore evaluate --model A [--model B]``: models side by side on the same rows.

By default the rows are A's held-out test period, exactly the rows its card reports (so
A's figures there are its card's); evaluating over rows a model was fitted on warns; the
plots are scikit-learn's display classes with a log false-positive axis and titles that
name versions, period and row counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.model.bundle import ModelBundle
from tests.unit.test_model_bundle import SMALL
from training.cli import main
from training.compare import compare_models, comparison_figures
from training.dataset import build_dataset
from training.simulate import simulate, write_log
from training.train import train_on_dataset


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object, list]:
    """A log, its features, and two models of it in a registry (the second trained later on)."""
    directory = tmp_path_factory.mktemp("compare")
    log = simulate(5000, seed=31, days=12)
    write_log(log, directory / "log.parquet")
    dataset = build_dataset(log)
    registry = directory / "models"
    a = train_on_dataset(dataset, registry=registry, params=SMALL, refit=False)
    late = dataset["event_time"].quantile(0.3)
    b = train_on_dataset(
        dataset, registry=registry, params={**SMALL, "max_iter": 10}, since=late, promote=False
    )
    return (
        directory,
        registry,
        dataset,
        [ModelBundle.load(a.directory), ModelBundle.load(b.directory)],
    )


def test_by_default_the_first_models_held_out_period_and_its_card_figures(two):
    _, _, dataset, (a, b) = two
    result = compare_models(None, [a, b], dataset=dataset)
    test = a.card["periods"]["test"]
    period = result["period"]
    assert (period["start"][:19], period["end"][:19]) == (test["start"][:19], test["end"][:19])
    assert period["rows"] == test["rows"] and period["frauds"] == test["frauds"]
    assert "held-out test period" in period["source"]
    first, second = result["models"]
    assert (first["version"], second["version"]) == (a.version, b.version)
    card = a.card["metrics"]["test"]
    for name in ("roc_auc", "average_precision", "recall_at_1%_decline", "card_precision_at_100"):
        assert first[name] == pytest.approx(card[name], rel=1e-9), name
    assert first["rows"] == second["rows"] == test["rows"]  # the same rows for both
    assert first["roc_auc"] != second["roc_auc"]
    assert first["warning"] is None and result["warnings"] == [w for w in [second["warning"]] if w]


def test_a_refitted_model_on_its_own_held_out_period_is_flagged(two, tmp_path):
    """After the refit on every mature row, no period is held out from the shipped model."""
    _, _, dataset, _ = two
    refitted = ModelBundle.load(
        train_on_dataset(dataset, registry=tmp_path, params=SMALL, refit=True).directory
    )
    result = compare_models(None, [refitted], dataset=dataset)
    assert len(result["warnings"]) == 1
    assert "final_fit" in result["warnings"][0] and "optimistic" in result["warnings"][0]


def test_evaluating_over_training_rows_warns_loudly(two):
    _, _, dataset, (a, b) = two
    start = float(dataset["event_time"].min())
    result = compare_models(None, [a, b], dataset=dataset, since=start)
    assert result["period"]["source"] == "--since/--until"
    assert result["period"]["rows"] == int(dataset["label"].notna().sum())
    assert len(result["warnings"]) == 2
    for model, warning in zip(result["models"], result["warnings"], strict=True):
        assert warning.startswith(f"{model['version']} was fitted on ")
        assert "optimistic" in warning and "train " in warning


def test_plots_are_the_display_classes_with_a_log_fpr_axis_and_titled(two):
    _, _, dataset, (a, b) = two
    result = compare_models(None, [a, b], dataset=dataset, keep_scores=True)
    scores = result["scores"]
    figures = comparison_figures(scores["labels"], scores["probabilities"], result["period"])
    assert set(figures) == {"roc", "pr", "calibration"}
    rows = f"{result['period']['rows']:,} payments"
    for kind, figure in figures.items():
        axes = figure.axes[0]
        title = axes.get_title()
        assert a.version in title and b.version in title and rows in title
        assert result["period"]["start"][:10] in title
        legend = [t.get_text() for t in axes.get_legend().get_texts()]
        assert any(a.version in t for t in legend) and any(b.version in t for t in legend), kind
    assert figures["roc"].axes[0].get_xscale() == "log"
    assert "AUC" in " ".join(t.get_text() for t in figures["roc"].axes[0].get_legend().get_texts())
    assert "AP" in " ".join(t.get_text() for t in figures["pr"].axes[0].get_legend().get_texts())


def test_the_command_compares_prints_json_and_writes_the_plots(two, capsys):
    directory, registry, _, (a, b) = two
    plots = directory / "plots"
    argv = ["evaluate", "--log", str(directory / "log.parquet"), "--registry", str(registry)]
    assert (
        main([*argv, "--model", "LATEST", "--model", b.version, "--plots", str(plots), "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert [m["version"] for m in result["models"]] == [a.version, b.version]
    for kind in ("roc", "pr", "calibration"):
        assert (plots / f"{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*argv, "--model", a.version]) == 0
    out = capsys.readouterr().out
    assert a.version in out and "held-out test period" in out
    assert main([*argv, "--model", "2030-01-01T000000Z-00000000"]) == 2
    assert "not a registered model" in capsys.readouterr().err


def test_plain_evaluate_warns_when_its_period_holds_training_rows(two, capsys):
    directory, registry, _, (a, _) = two
    argv = ["evaluate", "--log", str(directory / "log.parquet"), "--registry", str(registry)]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert len(result["warnings"]) == 1 and a.version in result["warnings"][0]
    assert "WARNING: the evaluated period" in captured.err and "optimistic" in captured.err
    test_start = a.card["periods"]["test"]["start"]
    assert main([*argv, "--since", test_start, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []
