"""Feature sets: which model columns the trees may split on, recorded in the model card."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.ensemble._hist_gradient_boosting.binning import _find_binning_thresholds
from threadpoolctl import threadpool_limits

from service.model.bundle import ModelBundle
from service.model.encoding import MODEL_FEATURES, encode_frame
from tests.unit.test_model_bundle import SMALL, feature_frame
from training.cli import main
from training.feature_sets import (
    AUTO_CANDIDATES,
    AUTO_TIE_AP,
    DEFAULT_SET,
    FEATURE_GROUPS,
    FEATURE_SETS,
    FeatureSetError,
    candidates,
    choose_by_average_precision,
    resolve,
)
from training.simulate import simulate, write_log
from training.train import (
    MAX_BINS,
    MIN_VALIDATION_FRAUDS,
    _fill_unseen,
    bin_edges,
    shared_bins,
    split_periods,
    train_on_dataset,
)


def test_every_group_names_model_columns_and_the_new_groups_are_complete() -> None:
    for name, columns in FEATURE_GROUPS.items():
        assert columns, name
        assert set(columns) <= set(MODEL_FEATURES)
    # seven entities x three windows for each label-arrival group; card and customer x three
    assert len(FEATURE_GROUPS["reported_frauds"]) == 21
    assert len(FEATURE_GROUPS["reported_fraud_rate"]) == 21
    assert len(FEATURE_GROUPS["amount_over_mean"]) == 6
    # the payment-time fraud counts are not mistaken for the label-arrival ones
    assert not set(FEATURE_GROUPS["frauds"]) & set(FEATURE_GROUPS["reported_frauds"])
    assert "merchant_frauds_7d" in FEATURE_GROUPS["frauds"]
    assert FEATURE_GROUPS["merchant_reported_rate"] == (
        "merchant_reported_fraud_rate_24h",
        "merchant_reported_fraud_rate_7d",
        "merchant_reported_fraud_rate_30d",
    )
    # the default set leaves them out, the spec the card-data section names puts them back
    kept = set(resolve("default,+merchant_reported_rate").excluded)
    assert kept == set(resolve(None).excluded) - set(FEATURE_GROUPS["merchant_reported_rate"])
    # the merchant's rate over its matured payments: a group of its own, left out by default
    matured = FEATURE_GROUPS["merchant_matured_rate"]
    assert matured == ("merchant_matured_fraud_rate_7d_30d",)
    assert set(matured) <= set(resolve(None).excluded)
    assert not set(matured) & set(FEATURE_GROUPS["merchant_fraud_counts"])


def test_specifications_resolve_to_left_out_columns() -> None:
    assert resolve("all").excluded == ()
    assert resolve(None) == resolve(DEFAULT_SET)
    default = set(resolve(None).excluded)
    expected = {c for g in FEATURE_SETS[DEFAULT_SET] for c in FEATURE_GROUPS[g]}
    assert default == expected
    spec = resolve("all,-local_time,-amount_usd")
    assert spec.excluded == tuple(
        c for c in MODEL_FEATURES if c in {*FEATURE_GROUPS["local_time"], "amount_usd"}
    )
    # a leading +/- starts from the default set; + puts a column back
    back = resolve(f"-local_time,+{FEATURE_GROUPS['local_time'][0]}")
    assert set(back.excluded) == default | {FEATURE_GROUPS["local_time"][1]}
    assert back.spec.startswith(f"{DEFAULT_SET},")
    for bad in ("nonsense", "all,-nonsense", "all,local_time", "all,-"):
        with pytest.raises(FeatureSetError, match="--features"):
            resolve(bad)


def test_a_left_out_column_is_blanked_and_never_split_on(tmp_path) -> None:
    frame = feature_frame(rows=3000, seed=3)
    spec = "all,-amount_usd,-reported_frauds"
    report = train_on_dataset(frame, registry=tmp_path, params=SMALL, features=spec)
    card = json.loads((report.directory / "model_card.json").read_text())
    left_out = resolve(spec).excluded
    assert card["feature_set"] == {
        "spec": spec,
        "columns_used": len(MODEL_FEATURES) - len(left_out),
        "columns_left_out": list(left_out),
    }
    assert f"Feature set `{spec}`" in (report.directory / "MODEL_CARD.md").read_text()
    bundle = ModelBundle.load(report.directory)
    arrays = bundle.forest.arrays
    splits = arrays["node_feature"][~arrays["node_is_leaf"].astype(bool)]
    used = {MODEL_FEATURES[i] for i in splits}
    assert used and not used & set(left_out)
    # serving still encodes every column; the left-out values change no probability
    matrix = encode_frame(frame.head(200))
    changed = matrix.copy()
    changed[:, resolve(spec).mask] = 1e6
    np.testing.assert_array_equal(
        bundle.forest.proba_many(matrix), bundle.forest.proba_many(changed)
    )


def test_the_auto_rule_prefers_the_smaller_set_on_a_near_tie() -> None:
    sets = [resolve(spec) for spec in ("all", "default", "default,+merchant_reported_rate")]
    # a clear winner wins whatever its size
    assert choose_by_average_precision(sets, [0.60, 0.50, 0.52]) == 0
    # within AUTO_TIE_AP of the best: the set with the fewest columns
    assert choose_by_average_precision(sets, [0.60, 0.60 - AUTO_TIE_AP / 2, 0.59]) == 1
    assert choose_by_average_precision(sets, [0.60, 0.50, 0.60 - AUTO_TIE_AP / 2]) == 2
    assert choose_by_average_precision(sets, [None, 0.1, None]) == 1


def test_the_candidate_list_is_data_runs_from_small_to_large_and_resolves() -> None:
    sets = candidates()
    assert [s.spec for s in sets] == [resolve(spec).spec for spec in AUTO_CANDIDATES]
    used = [len(MODEL_FEATURES) - len(s.excluded) for s in sets]
    assert used == sorted(used) and sets[0] == resolve(None)
    assert set(FEATURE_SETS) <= {s.spec for s in sets}  # every named set is weighed
    with pytest.raises(FeatureSetError, match="candidate 'default,\\+nonsense'"):
        candidates(["default", "default,+nonsense"])
    with pytest.raises(FeatureSetError, match="walkforward --compare"):
        resolve("auto")  # what walkforward --features auto meets


SIGNAL = "merchant_reported_fraud_rate_7d"  # left out of `default`, put back by the candidate


def drifting_frame(rows: int = 6000, seed: int = 4) -> pd.DataFrame:
    """``feature_frame`` plus a merchant rate that tracks fraud until the test period.

    Over the first 80 % of the time (train and validation) the rate is high on frauds;
    over the last 20 % (the test period) it is high on legitimate payments instead, so a
    model that uses it is better on validation and worse on test than one that does not.
    """
    frame = feature_frame(rows=rows, seed=seed)
    rng = np.random.default_rng(seed)
    time_ = frame["event_time"].to_numpy()
    late = time_ >= np.quantile(time_, 0.8)
    fraud = frame["label"].to_numpy() == 1
    tracks = np.where(late, ~fraud, fraud)
    return frame.assign(**{SIGNAL: np.where(tracks, 0.3, 0.0) + rng.uniform(0, 0.1, rows)})


def validation_frauds(frame: pd.DataFrame) -> int:
    return int((frame["label"].to_numpy()[split_periods(frame).validation] == 1).sum())


def test_auto_chooses_on_validation_never_on_test(tmp_path) -> None:
    frame = drifting_frame()
    specs = ["default", "default,+merchant_reported_rate"]
    # exactly the minimum of validation frauds: enough, the figures decide
    kwargs = {"params": SMALL, "promote": False, "min_validation_frauds": validation_frauds(frame)}
    report = train_on_dataset(
        frame, registry=tmp_path, features="auto", feature_candidates=specs, **kwargs
    )
    card = json.loads((report.directory / "model_card.json").read_text())
    choice = card["feature_choice"]
    figures = {c["spec"]: c["validation"]["average_precision"] for c in choice["candidates"]}
    assert list(figures) == specs
    # validation prefers the merchant rate by far more than a tie ...
    assert figures[specs[1]] > figures[specs[0]] + AUTO_TIE_AP
    assert choice["chosen"] == specs[1] and card["feature_set"] == resolve(specs[1]).card()
    assert [c["chosen"] for c in choice["candidates"]] == [False, True]
    assert choice["fallback"] is None and card["warnings"] == []
    assert "## Warnings" not in (report.directory / "MODEL_CARD.md").read_text()
    assert card["protocol"]["feature_set_from"].startswith("validation")
    # ... while the test period would have chosen the other: the choice never read it
    given = train_on_dataset(frame, registry=tmp_path, features=specs[0], **kwargs).card
    test_ap = card["metrics"]["test"]["average_precision"]
    assert given["metrics"]["test"]["average_precision"] > test_ap + 0.05
    assert given["feature_choice"] is None
    assert "Chosen by `--features auto`" in (report.directory / "MODEL_CARD.md").read_text()


def test_too_few_validation_frauds_warn_and_auto_keeps_the_first_candidate(tmp_path) -> None:
    frame = drifting_frame()
    frauds = validation_frauds(frame)
    specs = ["default", "default,+merchant_reported_rate"]
    report = train_on_dataset(
        frame,
        registry=tmp_path,
        params=SMALL,
        promote=False,
        features="auto",
        feature_candidates=specs,
        min_validation_frauds=frauds + 1,  # one short of the minimum
    )
    card = report.card
    choice = card["feature_choice"]
    figures = {c["spec"]: c["validation"]["average_precision"] for c in choice["candidates"]}
    # the merchant rate still wins on validation by far more than a tie, yet default is kept
    assert figures[specs[1]] > figures[specs[0]] + AUTO_TIE_AP
    assert choice["chosen"] == "default" and card["feature_set"] == resolve(None).card()
    assert [c["chosen"] for c in choice["candidates"]] == [True, False]
    assert f"{frauds} validation frauds, fewer than {frauds + 1}" in choice["fallback"]
    (warning,) = card["warnings"]
    assert f"holds {frauds} frauds, fewer than the minimum of {frauds + 1}" in warning
    assert "--features auto kept its first candidate" in warning
    stored = json.loads((report.directory / "model_card.json").read_text())
    assert stored["warnings"] == card["warnings"]
    assert stored["feature_choice"]["fallback"] == choice["fallback"]
    markdown = (report.directory / "MODEL_CARD.md").read_text()
    assert "## Warnings" in markdown and warning in markdown
    assert "Not chosen by the figures" in markdown
    # a given feature set: the same warning, without the words about auto
    given = train_on_dataset(
        frame, registry=tmp_path, params=SMALL, promote=False, min_validation_frauds=frauds + 1
    ).card
    assert given["feature_choice"] is None and len(given["warnings"]) == 1
    assert "--features auto" not in given["warnings"][0]


def test_the_command_trains_with_auto_and_refuses_a_bad_candidate(capsys, tmp_path) -> None:
    path = tmp_path / "log.parquet"
    write_log(simulate(3_000, seed=2), path)
    command = ["train", "--log", str(path), "--registry", str(tmp_path / "m"), "--no-promote"]
    assert main([*command, "--features", "auto", "--candidate", "default,+nonsense"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'default,+nonsense'" in err
    # --candidate goes with auto only
    assert main([*command, "--features", "default", "--candidate", "all"]) == 2
    assert "--features auto" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # nothing was trained
    # auto is train's default: without --features the candidates are weighed
    candidates_ = ["--candidate", "default", "--candidate", "all"]
    assert main([*command, *candidates_, "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["protocol"]["feature_set_from"] == "validation (--features auto)"
    assert result["feature_choice"]["rule"] and result["feature_choice"]["binning_cpu_seconds"] >= 0
    assert [c["spec"] for c in result["feature_choice"]["candidates"]] == ["default", "all"]
    assert result["feature_set"]["spec"] == result["feature_choice"]["chosen"]
    # a 3,000-row log has far fewer validation frauds than the documented minimum
    frauds = result["periods"]["validation"]["frauds"]
    assert frauds < MIN_VALIDATION_FRAUDS
    (warning,) = result["warnings"]
    assert f"holds {frauds} frauds, fewer than the minimum of {MIN_VALIDATION_FRAUDS}" in warning
    assert f"WARNING: {warning}" in err
    assert result["feature_choice"]["chosen"] == "default" and result["feature_choice"]["fallback"]


# --- the candidates share one binning (training.train.shared_bins) --------------------

_values = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, width=32),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0]),
)


@st.composite
def weighted_columns(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray | None]:
    """A column and its weights: ties, NaN, infinities, zero weights, few or many values."""
    rows = draw(st.integers(2, 600))
    if draw(st.booleans()):  # many distinct values: scikit-learn takes quantiles
        column = np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=rows)
        column[draw(st.lists(st.integers(0, rows - 1), max_size=20))] = np.nan
        column = np.round(column, draw(st.integers(0, 3)))  # ties
    else:
        column = np.array(draw(st.lists(_values, min_size=rows, max_size=rows)))
    if draw(st.booleans()):
        return column, None
    weight = draw(st.sampled_from([1.0, 3.95, 0.5])) * np.ones(rows)
    weight[draw(st.lists(st.integers(0, rows - 1), max_size=rows // 2))] = draw(
        st.sampled_from([0.0, 1.0, 7.3])
    )
    return column, weight


@settings(max_examples=100, deadline=None)
@given(weighted_columns())
def test_bin_edges_are_scikit_learns(case: tuple[np.ndarray, np.ndarray | None]) -> None:
    column, weight = case
    kept = ~np.isnan(column) & (weight != 0 if weight is not None else True)
    assume(len(np.unique(column[kept])) >= 1)
    expected = _find_binning_thresholds(column, MAX_BINS, sample_weight=weight)
    assert np.array_equal(bin_edges(column, weight), expected)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**16), st.integers(800, 1500), st.booleans())
def test_trees_on_shared_bins_predict_as_trees_on_the_values(
    seed: int, rows: int, weighted: bool
) -> None:
    rng = np.random.default_rng(seed)
    fit = np.column_stack(
        [
            np.round(rng.normal(size=rows), 2),  # quantile bins, some empty once weighted
            np.round(rng.exponential(size=rows), 1),  # ties
            rng.integers(0, 4, rows).astype(float),  # few values
            np.where(rng.random(rows) < 0.3, np.nan, rng.normal(size=rows)),  # missing
            np.full(rows, np.nan),  # never seen: filled as train fills it
        ]
    )
    y = (rng.random(rows) < 1 / (1 + np.exp(-fit[:, 0] - fit[:, 2] + 3))).astype(int)
    heavy = rng.choice([1.0, 40.0, 0.0], rows, p=[0.8, 0.1, 0.1])  # leaves bins empty
    weight = np.where(y == 1, 1.0, heavy) if weighted else None
    # later rows, some beyond the fit rows' range and in bins no fit row fell in
    others = np.column_stack(
        [
            3 * rng.normal(size=500),
            np.round(rng.exponential(size=500), 2),
            rng.integers(-1, 6, 500).astype(float),
            np.where(rng.random(500) < 0.3, np.nan, rng.normal(size=500)),
            rng.normal(size=500),
        ]
    )
    params = {"max_iter": 15, "min_samples_leaf": 5, "early_stopping": False}

    def fitted(matrix: np.ndarray) -> HistGradientBoostingClassifier:
        model = HistGradientBoostingClassifier(**params, random_state=0)
        return model.fit(_fill_unseen(matrix)[0], y, sample_weight=weight)

    binned_fit, binned_others = shared_bins(fit, weight, others)
    with threadpool_limits(1):  # OpenMP threads spin on a shared machine
        on_values, on_bins = fitted(fit), fitted(binned_fit)
    assert on_values.n_iter_ == on_bins.n_iter_
    assert np.allclose(
        on_values.decision_function(others),
        on_bins.decision_function(binned_others),
        rtol=0,
        atol=1e-9,
    )
    assert np.allclose(
        on_values.decision_function(fit), on_bins.decision_function(binned_fit), rtol=0, atol=1e-9
    )
    # the ranks are dense (the trees re-bin them one value per bin), and a value of
    # `others`, also in a bin no fit row fell in, is on the side of every split it was on
    edges = bin_edges(fit[:, 0], weight)
    fit_bins, other_bins = (np.searchsorted(edges, m[:, 0]) for m in (fit, others))
    ranks = np.unique(binned_fit[:, 0])
    assert np.array_equal(ranks, np.arange(len(ranks)))
    for split in np.unique(fit_bins)[:-1]:  # the last held bin splits no fit rows
        rank = binned_fit[fit_bins == split, 0][0]
        assert np.array_equal(other_bins <= split, binned_others[:, 0] <= rank)
    # missing stays missing; a column no fit row has a value in is missing everywhere
    assert np.array_equal(np.isnan(binned_fit[:, :4]), np.isnan(fit[:, :4]))
    assert np.isnan(binned_others[:, 4]).all()


def test_a_value_in_a_bin_no_fit_row_holds_keeps_its_side_of_every_split() -> None:
    # heavy and zero weights make weighted quantiles that leave a bin empty (found by search)
    rng = np.random.default_rng(55)
    column = np.round(rng.normal(size=1000), 2)
    weight = rng.choice([1.0, 40.0, 0.0], 1000, p=[0.8, 0.1, 0.1])
    edges = bin_edges(column, weight)
    fit_bins = np.searchsorted(edges, column)
    held = np.unique(fit_bins)
    empty = np.setdiff1d(np.arange(len(edges) + 1), held)
    assert ((empty > held.min()) & (empty < held.max())).any()  # the case exists
    bounds = np.concatenate([[edges[0] - 1], edges, [edges[-1] + 1]])
    inside = (bounds[empty] + bounds[empty + 1]) / 2  # a value in each empty bin
    binned_fit, binned_inside = (
        m[:, 0] for m in shared_bins(column[:, None], weight, inside[:, None])
    )
    assert np.array_equal(np.unique(binned_fit), np.arange(len(held)))  # dense ranks
    for split in held[:-1]:  # a split keeps bins <= split on the left
        rank = binned_fit[fit_bins == split][0]
        assert np.array_equal(empty <= split, binned_inside <= rank)


def test_train_without_features_weighs_every_candidate_and_default_opts_out(
    capsys, tmp_path
) -> None:
    path = tmp_path / "log.parquet"
    write_log(simulate(3_000, seed=5), path)
    command = ["train", "--log", str(path), "--registry", str(tmp_path / "m"), "--no-promote"]
    assert main([*command, "--json"]) == 0
    chosen = json.loads(capsys.readouterr().out)
    specs = [c["spec"] for c in chosen["feature_choice"]["candidates"]]
    assert specs == [s.spec for s in candidates()]  # AUTO_CANDIDATES, all of them
    assert chosen["feature_set"]["spec"] == chosen["feature_choice"]["chosen"]
    assert main([*command, "--features", "default", "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["feature_choice"] is None and given["feature_set"] == resolve(None).card()
    assert given["protocol"]["feature_set_from"] == "given"
