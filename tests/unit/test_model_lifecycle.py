"""The model lifecycle: register without promoting, promote, roll back, list, show.

And a live model that follows LATEST and never swaps in a model that fails its checks.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from service.model.bundle import FOREST, LATEST, MODEL_CARD, SHADOW, find_latest, find_shadow
from service.model.live import LiveModel
from tests.unit.test_model_bundle import SMALL, feature_frame
from training.cli import main
from training.registry import (
    PROMOTIONS,
    RegistryError,
    list_models,
    promote,
    promotions,
    rollback,
    set_shadow,
    shadow_version,
)
from training.train import train_on_dataset


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two different trained models in a scratch registry (copied into each test's own)."""
    registry = tmp_path_factory.mktemp("two-models")
    first = train_on_dataset(feature_frame(seed=0), registry=registry, params=SMALL)
    second = train_on_dataset(feature_frame(seed=1), registry=registry, params=SMALL, promote=False)
    assert first.version != second.version
    return first.directory, second.directory


@pytest.fixture
def registry(two_models: tuple[Path, Path], tmp_path: Path) -> Path:
    """A registry holding both models, with the first one live (promoted at training)."""
    directory = tmp_path / "models"
    directory.mkdir()
    first, second = two_models
    shutil.copytree(first, directory / first.name)
    promote(directory, first.name)
    shutil.copytree(second, directory / second.name)
    return directory


def test_promote_remembers_the_model_served_before_the_registry_had_a_pointer(two_models, tmp_path):
    first, second = two_models
    for model in two_models:
        shutil.copytree(model, tmp_path / model.name)
    newest = max(first.name, second.name)  # served while no LATEST exists
    other = min(first.name, second.name)
    assert promote(tmp_path, other) == newest
    assert rollback(tmp_path) == (newest, other)


def test_training_with_no_promote_leaves_latest_alone(two_models):
    first, _ = two_models
    assert find_latest(first.parent) == first
    assert (first.parent / LATEST).read_text().strip() == first.name


def test_promote_then_rollback_returns_to_the_model_live_before(registry, two_models):
    first, second = (m.name for m in two_models)
    assert promote(registry, second) == first
    assert find_latest(registry).name == second
    assert rollback(registry) == (first, second)
    assert find_latest(registry).name == first
    history = promotions(registry)
    assert history.live == [first]
    assert [(e.action, e.version, e.previous) for e in history.events][-2:] == [
        ("promote", second, first),
        ("rollback", first, second),
    ]
    with pytest.raises(RegistryError, match="no earlier live model"):
        rollback(registry)
    assert find_latest(registry).name == first


def test_successive_rollbacks_walk_back_through_the_history(registry, two_models):
    first, second = (m.name for m in two_models)
    third = "2027-01-01T000000Z-cccccccc"
    shutil.copytree(registry / first, registry / third)
    for version in (second, third):
        promote(registry, version)
    assert promotions(registry).live == [first, second, third]
    assert rollback(registry)[0] == second
    assert rollback(registry)[0] == first


def test_rollback_after_a_hand_edited_latest_goes_to_the_last_promoted(registry, two_models):
    first, second = (m.name for m in two_models)
    promote(registry, second)
    (registry / LATEST).write_text(first + "\n")  # set by hand, outside the history
    assert rollback(registry) == (second, first)


def test_promote_refuses_an_unregistered_version_and_changes_nothing(registry, two_models):
    before = (registry / LATEST).read_bytes(), (registry / PROMOTIONS).read_bytes()
    for bad in ("2030-01-01T000000Z-00000000", "../x", ""):
        with pytest.raises(RegistryError, match="not a registered model"):
            promote(registry, bad)
    assert ((registry / LATEST).read_bytes(), (registry / PROMOTIONS).read_bytes()) == before


def test_concurrent_promotions_keep_one_consistent_history(registry, two_models):
    first, second = (m.name for m in two_models)
    threads = [threading.Thread(target=promote, args=(registry, v)) for v in [first, second] * 10]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = msgspec.json.decode((registry / PROMOTIONS).read_bytes())
    assert len(history["events"]) == 21  # the fixture's promotion and these twenty
    assert history["live"][-1] == (registry / LATEST).read_text().strip()
    assert not [p for p in registry.iterdir() if p.name.startswith(f".{LATEST}")]


def test_list_shows_data_period_metrics_and_the_live_model(registry, two_models):
    first, second = (m.name for m in two_models)
    models = {m.version: m for m in list_models(registry)}
    assert models[first].latest and not models[second].latest
    for m in models.values():
        card = json.loads((registry / m.version / MODEL_CARD).read_text())
        assert m.data_start == card["periods"]["train"]["start"]
        assert m.data_end == card["periods"]["test"]["end"]
        assert m.test_metrics["roc_auc"] == card["metrics"]["test"]["roc_auc"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_commands_list_show_promote_and_roll_back(registry, two_models, capsys):
    first, second = (m.name for m in two_models)
    r = ["--registry", str(registry)]

    code, out, _ = _run(capsys, "models", "list", *r)
    assert code == 0 and first in out and second in out and "LATEST" in out

    code, out, _ = _run(capsys, "models", "list", *r, "--json")
    listed = {m["version"]: m for m in json.loads(out)}
    assert listed[first]["live"] and not listed[second]["live"]
    assert listed[second]["test"]["roc_auc"] is not None

    code, out, _ = _run(capsys, "models", "show", second, *r)
    assert code == 0 and out.startswith(f"# Model {second}")
    code, out, _ = _run(capsys, "models", "show", "LATEST", *r, "--json")
    assert json.loads(out)["version"] == first

    code, out, _ = _run(capsys, "models", "promote", second, *r)
    assert code == 0 and f"{second} is live (was {first})" in out
    assert find_latest(registry).name == second

    code, out, _ = _run(capsys, "models", "rollback", *r, "--json")
    assert code == 0 and json.loads(out) == {"live": first, "previous": second}
    assert find_latest(registry).name == first

    code, _, err = _run(capsys, "models", "rollback", *r)
    assert code == 2 and "no earlier live model" in err
    code, _, err = _run(capsys, "models", "show", "2030-01-01T000000Z-00000000", *r)
    assert code == 2 and "not a registered model" in err


def test_models_promote_refuses_a_model_that_fails_its_checks(registry, two_models, capsys):
    first, second = (m.name for m in two_models)
    (registry / second / FOREST).write_bytes(b"tampered")
    code, _, err = _run(capsys, "models", "promote", second, "--registry", str(registry))
    assert code == 1 and "SHA-256" in err
    assert find_latest(registry).name == first


def test_models_registry_defaults_to_the_service_setting(registry, two_models, capsys, monkeypatch):
    monkeypatch.setenv("RISKSCORE_MODEL_DIR", str(registry))
    code, out, _ = _run(capsys, "models", "list", "--json")
    assert code == 0
    assert {m["version"] for m in json.loads(out)} == {m.name for m in two_models}


def test_live_model_follows_latest_and_keeps_the_old_one_when_the_new_is_refused(
    registry, two_models
):
    first, second = (m.name for m in two_models)
    live = LiveModel(registry)
    assert live.load().version == first
    assert live.reload_if_changed() is None  # nothing changed
    promote(registry, second)
    assert live.reload_if_changed().version == second and live.problem is None
    assert live.current.version == second

    bad = "2027-02-01T000000Z-dddddddd"
    shutil.copytree(registry / first, registry / bad)
    (registry / bad / FOREST).write_bytes(b"tampered")
    promote(registry, bad)
    assert live.reload_if_changed() is None
    assert live.current.version == second and "SHA-256" in (live.problem or "")
    assert live.reload_if_changed() is None  # refused once, not retried every poll

    rollback(registry)
    assert live.reload_if_changed() is None  # back to the model already serving
    assert live.current.version == second and live.problem is None


def test_live_model_without_a_registry_says_so(tmp_path):
    live = LiveModel(tmp_path / "none")
    assert live.load() is None and live.problem == "no model registered"


def test_set_shadow_names_a_model_lists_it_records_it_and_switches_off(registry, two_models):
    first, second = (m.name for m in two_models)
    assert shadow_version(registry) is None
    assert set_shadow(registry, second) is None
    assert (registry / SHADOW).read_text().strip() == second
    assert find_shadow(registry).name == second
    models = {m.version: m for m in list_models(registry)}
    assert models[second].shadow and not models[second].latest
    assert models[first].latest and not models[first].shadow
    assert find_latest(registry).name == first  # the shadow never changes what is live
    assert set_shadow(registry, None) == second
    assert not (registry / SHADOW).exists() and find_shadow(registry) is None
    events = [(e.action, e.version, e.previous) for e in promotions(registry).events][-2:]
    assert events == [("shadow", second, None), ("shadow-off", None, second)]
    assert promotions(registry).live == [first]  # rollback history untouched
    with pytest.raises(RegistryError, match="not a registered model"):
        set_shadow(registry, "2030-01-01T000000Z-00000000")
    assert not (registry / SHADOW).exists()


def test_models_shadow_command_verifies_sets_and_switches_off(registry, two_models, capsys):
    first, second = (m.name for m in two_models)
    r = ["--registry", str(registry)]
    code, out, _ = _run(capsys, "models", "shadow", second, *r)
    assert code == 0 and f"{second} is in shadow (was none)" in out
    code, out, _ = _run(capsys, "models", "list", *r, "--json")
    listed = {m["version"]: m for m in json.loads(out)}
    assert listed[second]["shadow"] and not listed[first]["shadow"]
    code, out, _ = _run(capsys, "models", "list", *r)
    assert "SHADOW" in out
    code, out, _ = _run(capsys, "models", "shadow", "--off", *r, "--json")
    assert code == 0 and json.loads(out) == {"shadow": None, "previous": second}
    code, _, err = _run(capsys, "models", "shadow", *r)
    assert code == 2 and "VERSION or --off" in err
    code, _, err = _run(capsys, "models", "shadow", second, "--off", *r)
    assert code == 2
    (registry / second / FOREST).write_bytes(b"tampered")
    code, _, err = _run(capsys, "models", "shadow", second, *r)
    assert code == 1 and "SHA-256" in err and not (registry / SHADOW).exists()


def test_shadow_model_follows_its_pointer_is_switched_off_and_keeps_the_old_when_refused(
    registry, two_models
):
    first, second = (m.name for m in two_models)
    shadow = LiveModel(registry, role="shadow")
    assert shadow.load() is None and shadow.problem is None  # no pointer: no shadow, no problem
    assert not shadow.refresh()
    set_shadow(registry, second)
    assert shadow.refresh() and shadow.current.version == second
    assert not shadow.refresh()  # nothing changed

    bad = "2027-02-01T000000Z-dddddddd"
    shutil.copytree(registry / first, registry / bad)
    (registry / bad / FOREST).write_bytes(b"tampered")
    set_shadow(registry, bad)
    assert not shadow.refresh()
    assert shadow.current.version == second and "SHA-256" in (shadow.problem or "")

    set_shadow(registry, None)
    assert shadow.refresh() and shadow.current is None and shadow.problem is None
    (registry / SHADOW).write_text("2031-01-01T000000Z-00000000\n")  # by hand, unregistered
    assert not shadow.refresh() and shadow.current is None
    assert "not registered" in (shadow.problem or "")


def test_rollback_of_an_empty_registry_says_no_model_is_live(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="holds none and no model is live") as refused:
        rollback(tmp_path)
    assert "None" not in str(refused.value)


def test_the_same_model_trained_twice_in_one_second_is_registered_twice(tmp_path, monkeypatch):
    import training.train as train_module

    instant = datetime(2026, 12, 8, 0, 56, 36, tzinfo=UTC)

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return instant

    monkeypatch.setattr(train_module, "datetime", FrozenClock)
    frame = feature_frame(seed=0)
    first = train_on_dataset(frame, registry=tmp_path, params=SMALL)
    second = train_on_dataset(frame, registry=tmp_path, params=SMALL, promote=False)
    assert second.version == f"{first.version}.2"
    assert (second.directory / MODEL_CARD).is_file() and (first.directory / MODEL_CARD).is_file()
    assert [m.version for m in list_models(tmp_path)].count(second.version) == 1
    assert find_latest(tmp_path) == first.directory
