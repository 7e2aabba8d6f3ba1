"""Training: from a labelled transaction log to a registered, verified model.

1. Features for every row, point in time (``training.dataset``).
2. Examples are the labelled rows at or after ``since``; every other row is history that
   only feeds the features. With ``legit_after_days`` (``--legit-after``), a payment with
   no fraud label that is older than that many days at ``as_of`` (by default the log's
   last payment or label) is legitimate: no business reports "this payment was fine", a
   payment becomes legitimate by maturing without a dispute. Rows younger than that are
   history only, labelled or not: among them only the frauds are known yet, and as
   examples they would teach (and test) a fraud rate far above the real one.
3. The examples are split in time order: train (the first 60 % of the examples' time
   span by rows), validation (the next 20 %), test (the last 20 %). A gap as long as the
   typical label delay (median time from a fraud to its label, at most 5 % of the span)
   separates them and its rows are dropped: a model trained today has not yet seen the
   labels of the last days, and evaluating right after the training period would flatter it.
4. A ``HistGradientBoostingClassifier`` learns on the training period and stops early on
   the validation period's log-loss: that fixes the number of iterations. Categoricals are
   encoded as indicator columns (``service.model.encoding``), so the trees have numeric
   splits only and compile.
5. Calibration: scikit-learn's ``CalibratedClassifierCV(FrozenEstimator(model),
   method="sigmoid")`` (Platt) on the validation period. Each vertical's challenge /
   review / decline score cut-offs are chosen on the validation period's calibrated scores
   for a target decline rate (challenge and review at 5x and 2x that rate) or, when given,
   the lowest decline cut-off reaching a target precision.
6. The held-out test period is scored once with that model, calibration and cut-offs: the
   card's ``metrics`` are these figures, measured before the refit.
7. Refit: a new model with the same settings and the chosen number of iterations learns
   on every example (all mature labelled rows from ``since`` on, train, gaps, validation
   and test alike: with drift the latest days matter most). It keeps the calibration and
   cut-offs of step 5 (nothing is left to fit them on that it has not seen). The card's
   ``periods.final_fit`` says which rows it learnt from; ``refit=False`` ships the model
   of step 4 instead. Above ``REFIT_LEGIT_ROWS`` legitimate rows (or at ``refit_sample``,
   ``--refit-sample``) the refit learns from every fraud and a random sample of the
   legitimate rows, each weighted by the inverse of the sampling rate, so the trees see
   the full fraud rate, and its baseline is then shifted so that it predicts as many
   frauds over all the rows as they hold (``match_fraud_rate``): the calibration and
   cut-offs of step 5 stay right for it. Its trees' node counts are made the weighted
   counts (``weigh_node_counts``), which the reasons are measured against. The card's
   ``protocol.refit_sample`` says how many rows of each kind it kept and the shift.
8. The final trees are compiled (``service.model.compiled``), checked against
   scikit-learn to 1e-9 (serving uses the compiled forest only), and registered with the
   card. ``exclude_known_fraud`` leaves out of every period the payments whose card,
   customer, device, email or account already had a confirmed fraud when they were scored:
   lists and rules stop those, and the model is trained and measured on the rest.
9. With ``promote`` (the default) the new model goes live only when the promotion gate
   (``training.gate``) finds it not worse than the live one on its held-out period, or
   with ``force``; whoever calls ``train``, the CLI or Python code. ``features`` chooses
   the columns the trees may split on (``training.feature_sets``), recorded in the card.
   ``features="auto"`` chooses them in step 4 instead (``choose_features``): each candidate
   set learns on the train period (on many legitimate rows, a weighted sample of them)
   and stops early on the validation period, the validation average precision picks one
   (``training.feature_sets.choose_by_average_precision``), and steps 4-8 run with it; the
   test period plays no part in the choice. The candidates share one binning of the
   columns (``shared_bins``) and fit only their own columns: the same trees, at about
   half the CPU. ``riskscore train`` chooses so by default (``--features default``
   opts out); ``train`` and ``train_on_dataset`` here take ``features="auto"``. The
   card's ``feature_choice`` has every candidate's validation figures. The fits use the
   machine's free cores (``training.threads``).
10. A validation period with fewer than ``MIN_VALIDATION_FRAUDS`` frauds decides the
   iterations, calibration and cut-offs on noise: ``train`` says so in the card's
   ``warnings`` (and ``MODEL_CARD.md``), and ``features="auto"`` then keeps its first
   candidate (``default``) whatever the figures, as ``feature_choice.fallback`` says.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
from sklearn.utils.stats import _weighted_percentile
from tqdm import tqdm

from service.contract import VERTICALS
from service.errors import RiskscoreError
from service.features import catalog
from service.model.bundle import (
    FOREST,
    FORMAT,
    MODEL_CARD,
    MODEL_CARD_MD,
    MODEL_JSON,
    SCORE_LOG10_ODDS_AT_0,
    SCORE_LOG10_ODDS_AT_100,
    Calibration,
    ModelBundle,
    ModelSpec,
    scores_from_logits,
    sha256_hex,
)
from service.model.compiled import CompiledForest, sigmoid_many
from service.model.encoding import MODEL_FEATURES, MODEL_SOURCES, SOURCE_INDEX, encode_frame
from service.reference.tables import FxTable
from service.verticals import Thresholds
from training.dataset import build_dataset, fingerprint
from training.estimator import ESTIMATOR, estimator_bytes
from training.evaluate import model_metrics, ranking_metrics
from training.feature_sets import (
    AUTO,
    AUTO_RULE,
    FeatureSet,
    FeatureSetError,
    choose_by_average_precision,
    resolve,
)
from training.feature_sets import candidates as resolve_candidates
from training.gate import GateDecision, live_model, promotion_gate
from training.registry import promote as promote_version
from training.registry import register, unused_version_name
from training.threads import limited_threads

DEFAULT_PARAMS: Final[dict[str, Any]] = {
    "learning_rate": 0.1,
    "max_iter": 300,
    "max_leaf_nodes": 31,
    "max_depth": 6,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "n_iter_no_change": 20,
    "scoring": "loss",
    "tol": 1e-7,
}
SPLIT: Final = (0.6, 0.8)  # train ends at 60 % of the examples, validation at 80 %
MAX_GAP_SHARE: Final = 0.05
REVIEW_RATE_FACTOR: Final = 2.0
CHALLENGE_RATE_FACTOR: Final = 5.0
MIN_VERTICAL_ROWS: Final = 200  # fewer validation rows: the vertical takes the global cuts
PARITY_TOLERANCE: Final = 1e-9
# Above this many legitimate example rows the refit learns from a weighted sample of them
# (module doc, step 7): it bounds the refit's time on big logs (benchmarks/README.md,
# "train on a million rows"); docs/model-evaluation.md has the walk-forward check.
REFIT_LEGIT_ROWS: Final = 250_000
# Legitimate rows the sampled refit's fraud-rate match (``match_fraud_rate``) scores.
RATE_CHECK_LEGIT_ROWS: Final = 200_000
# ``--features auto``: above this many legitimate train-period rows each candidate learns
# from every fraud and a weighted sample of this many (benchmarks/README.md, "train on a
# million rows": it bounds what the choice adds to ``train``).
AUTO_LEGIT_ROWS: Final = 100_000
# Fewer validation frauds than this: the choices made on validation are noise (module doc,
# step 10; docs/model-evaluation.md, "How many validation frauds" has the bootstrap).
MIN_VALIDATION_FRAUDS: Final = 200


class TrainingError(RiskscoreError):
    """The log cannot train a model; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class Split:
    """The boolean row masks of the time-ordered train, validation and test periods."""

    train: np.ndarray  # boolean masks over the dataset's rows
    validation: np.ndarray
    test: np.ndarray
    gap_seconds: float
    examples: np.ndarray  # every example row: the three periods and the gaps between them


@dataclass(slots=True)
class TrainReport:
    """What a training run produced and measured."""

    version: str
    directory: Path
    card: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    # The held-out test period's rows (labels as training used them) and the calibrated
    # probabilities the card's test figures were measured from: the promotion gate
    # (``training.gate``) scores the live model on the same rows.
    holdout: pd.DataFrame | None = None
    holdout_probability: np.ndarray | None = None
    # ``promote=True``: the gate's decision, and whether the model went live (``forced``
    # when it did only because of ``force``); ``gate`` is None with ``promote=False``.
    gate: GateDecision | None = None
    promoted: bool = False
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        return (
            {"version": self.version, "directory": str(self.directory)}
            | self.card
            | {
                "promoted": self.promoted,
                "forced": self.forced,
                "gate": self.gate.to_dict() if self.gate is not None else None,
            }
        )


def to_unix_seconds(value: float | int | str | datetime | pd.Timestamp | None) -> float | None:
    """``--since`` as Unix seconds: a number, an RFC 3339 string, or a datetime."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.timestamp()


def train(
    log: pd.DataFrame,
    *,
    registry: Path | str,
    since: float | str | datetime | None = None,
    legit_after_days: float | None = None,
    as_of: float | str | datetime | None = None,
    promote: bool = True,
    force: bool = False,
    seed: int = 0,
    progress: bool = False,
    target_decline_rate: float = 0.01,
    target_precision: float | None = None,
    params: Mapping[str, Any] | None = None,
    secret: bytes | None = None,
    fx: FxTable | None = None,
    refit: bool = True,
    refit_sample: float | None = None,
    exclude_known_fraud: bool = False,
    features: str | FeatureSet | None = None,
    feature_candidates: Sequence[str] | None = None,
) -> TrainReport:
    """Build features from ``log``, train, evaluate on the test period, register.

    ``promote``, ``force``, ``features``, ``feature_candidates`` and ``refit_sample`` as
    ``train_on_dataset`` says; a bad feature-set specification fails before any work.
    """
    feature_request(features, feature_candidates)
    clock = StageClock()
    dataset = build_dataset(log, secret=secret, fx=fx, progress=progress)
    clock.lap("features")
    report = train_on_dataset(
        dataset,
        registry=registry,
        since=since,
        legit_after_days=legit_after_days,
        as_of=as_of,
        promote=promote,
        force=force,
        seed=seed,
        target_decline_rate=target_decline_rate,
        target_precision=target_precision,
        params=params,
        data_fingerprint=fingerprint(log),
        refit=refit,
        refit_sample=refit_sample,
        exclude_known_fraud=exclude_known_fraud,
        features=features,
        feature_candidates=feature_candidates,
        progress=progress,
    )
    report.timings = clock.timings | report.timings
    return report


class StageClock:
    """Wall and CPU seconds of successive stages, into ``timings`` as ``NAME_seconds``.

    CPU is this process's user + system time over all its threads (``time.process_time``):
    on a machine other processes share it moves far less than the wall clock.
    """

    def __init__(self, timings: dict[str, float] | None = None) -> None:
        """Start the first stage now."""
        self.timings = timings if timings is not None else {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        """End the stage ``name`` (``NAME_seconds``, ``NAME_cpu_seconds``), start the next."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.timings[f"{name}_seconds"] = round(wall - self._wall, 3)
        self.timings[f"{name}_cpu_seconds"] = round(cpu - self._cpu, 3)
        self._wall, self._cpu = wall, cpu


_LEGIT_AFTER_HINT: Final = (
    ". A log that carries only fraud labels (a production export: nobody reports a payment "
    "as fine) trains with --legit-after DAYS, which counts unlabelled payments older than "
    "DAYS as legitimate"
)


@dataclass(frozen=True, slots=True)
class Maturity:
    """What ``--legit-after`` made of a log's labels (``mature_labels``)."""

    label: np.ndarray  # 1 fraud, 0 legitimate, NaN not an example
    legit_after_days: float
    as_of: float  # Unix seconds
    cutoff: float  # payments at or before it are mature
    matured_as_legit: int  # unlabelled payments that became legitimate
    young_history_only: int  # payments after the cut-off: history only

    def card(self) -> dict[str, Any]:
        """The model card's ``training_data.maturity``."""
        return {
            "legit_after_days": self.legit_after_days,
            "as_of": _iso(self.as_of),
            "mature_until": _iso(self.cutoff),
            "unlabelled_counted_legit": self.matured_as_legit,
            "younger_rows_history_only": self.young_history_only,
        }


def mature_labels(
    dataset: pd.DataFrame, legit_after_days: float, as_of: float | None = None
) -> Maturity:
    """The labels as ``--legit-after`` makes them (module doc, step 2).

    Unlabelled payments older than ``legit_after_days`` at ``as_of`` count as legitimate,
    and every payment younger than that is history only.

    ``as_of`` defaults to the log's last payment or label, whichever is later.
    """
    if not (math.isfinite(legit_after_days) and legit_after_days >= 0):
        raise TrainingError(f"--legit-after must be a number of days >= 0, not {legit_after_days}")
    time_ = dataset["event_time"].to_numpy(dtype=np.float64)
    label = dataset["label"].to_numpy(dtype=np.float64).copy()
    if as_of is None:
        label_at = dataset["label_at"].to_numpy(dtype=np.float64)
        as_of = float(np.nanmax(np.concatenate([time_, label_at, [-np.inf]])))
    cutoff = as_of - legit_after_days * 86_400.0
    mature = time_ <= cutoff
    unlabelled = np.isnan(label)
    label[mature & unlabelled] = 0.0
    label[~mature] = np.nan
    return Maturity(
        label=label,
        legit_after_days=float(legit_after_days),
        as_of=float(as_of),
        cutoff=float(cutoff),
        matured_as_legit=int((mature & unlabelled).sum()),
        young_history_only=int((~mature).sum()),
    )


# Entities whose confirmed frauds make a payment the lists' and rules' business.
KNOWN_FRAUD_ENTITIES: Final = frozenset({"card", "customer", "device", "email", "account"})


def known_fraud_rows(dataset: pd.DataFrame) -> np.ndarray:
    """Rows whose card, customer, device, email or account had a confirmed fraud already.

    Read from the catalogue's confirmed-fraud features as the row was scored (labels count
    only from their ``label_at`` on), so no later knowledge leaks in.
    """
    known = np.zeros(len(dataset), dtype=bool)
    for feature in catalog.VELOCITY_FEATURES:
        counts_fraud = "fraud" in str(feature.aggregate)
        if counts_fraud and str(feature.entity) in KNOWN_FRAUD_ENTITIES:
            values = dataset.get(feature.name)
            if values is not None:
                numbers = pd.to_numeric(values, errors="coerce").to_numpy(float)
                known |= np.nan_to_num(numbers) > 0
    return known


def split_periods(dataset: pd.DataFrame, since: float | None = None) -> Split:
    """Time-ordered train / validation / test masks with label-delay gaps (module doc)."""
    time_ = dataset["event_time"].to_numpy(dtype=np.float64)
    label = dataset["label"].to_numpy(dtype=np.float64)
    examples = ~np.isnan(label)
    if since is not None:
        examples &= time_ >= since
    if examples.sum() < 50:
        raise TrainingError(
            f"{int(examples.sum())} labelled rows at or after --since; at least 50 are needed"
        )
    times = np.sort(time_[examples])
    span = float(times[-1] - times[0])
    cut_train = times[int(SPLIT[0] * (len(times) - 1))]
    cut_validation = times[int(SPLIT[1] * (len(times) - 1))]
    delays = (dataset["label_at"].to_numpy(dtype=np.float64) - time_)[examples & (label == 1)]
    delays = delays[np.isfinite(delays) & (delays >= 0)]
    gap = min(float(np.median(delays)) if len(delays) else 0.0, MAX_GAP_SHARE * span)
    return Split(
        train=examples & (time_ < cut_train),
        validation=examples & (time_ >= cut_train + gap) & (time_ < cut_validation),
        test=examples & (time_ >= cut_validation + gap),
        gap_seconds=gap,
        examples=examples,
    )


def calibrate(estimator: Any, matrix: np.ndarray, labels: np.ndarray) -> Calibration:
    """Platt scaling of a fitted binary classifier's ``decision_function`` on held-out rows.

    scikit-learn's ``CalibratedClassifierCV`` on the frozen estimator fits
    ``p = 1 / (1 + exp(A f + B))`` (Platt's smoothed targets keep a small or separable
    period from infinite slopes); the service's form is ``sigmoid(a * raw + b)``, so
    ``a = -A`` and ``b = -B``. A period with one class only leaves the scores as they are.
    """
    labels = np.asarray(labels)
    if labels.sum() == 0 or labels.sum() == len(labels):
        return Calibration("platt", 1.0, 0.0)
    calibrated = CalibratedClassifierCV(FrozenEstimator(estimator), method="sigmoid")
    calibrated.fit(matrix, labels)
    sigmoid = calibrated.calibrated_classifiers_[0].calibrators[0]
    return Calibration("platt", -float(sigmoid.a_), -float(sigmoid.b_))


def cut_for_rate(scores: np.ndarray, rate: float) -> int:
    """The lowest score cut-off that flags at most ``rate`` of ``scores`` (``>= cut``).

    Never above 100: a score of 100 (odds of fraud of 100:1 or more) is always flagged,
    even where ties at the top hold more than ``rate`` of the traffic.
    """
    if len(scores) == 0:
        return 100
    counts = np.bincount(np.clip(scores, 0, 100), minlength=101)
    at_or_above = np.cumsum(counts[::-1])[::-1] / len(scores)
    within = np.flatnonzero(at_or_above <= rate)
    return int(within[0]) if len(within) else 100


def cut_for_precision(scores: np.ndarray, labels: np.ndarray, precision: float) -> int:
    """The lowest cut-off whose flagged rows reach ``precision``; 100 if none does."""
    for cut in range(101):
        flagged = scores >= cut
        if flagged.any() and labels[flagged].mean() >= precision:
            return cut
    return 100


def choose_thresholds(
    scores: np.ndarray,
    labels: np.ndarray,
    verticals: np.ndarray,
    *,
    decline_rate: float,
    precision: float | None = None,
) -> dict[str, Thresholds]:
    """Challenge / review / decline cut-offs per vertical (module docstring, step 6)."""

    def cuts(s: np.ndarray, y: np.ndarray) -> Thresholds:
        if precision is None:
            decline = cut_for_rate(s, decline_rate)
        else:
            decline = cut_for_precision(s, y, precision)
        review = min(cut_for_rate(s, decline_rate * REVIEW_RATE_FACTOR), decline)
        challenge = min(cut_for_rate(s, decline_rate * CHALLENGE_RATE_FACTOR), review)
        return Thresholds(challenge=challenge, review=review, decline=decline)

    overall = cuts(scores, labels)
    out = {}
    for vertical in VERTICALS:
        rows = verticals == vertical
        out[vertical] = (
            cuts(scores[rows], labels[rows]) if rows.sum() >= MIN_VERTICAL_ROWS else overall
        )
    return out


@dataclass(frozen=True, slots=True)
class Fitted:
    """What the training protocol (module doc, steps 4, 5 and 7) produced."""

    estimator: HistGradientBoostingClassifier  # the final model (refit, or the first)
    forest: CompiledForest  # the final model, compiled
    held_out_forest: CompiledForest  # the first model: what the held-out figures measure
    calibration: Calibration
    thresholds: dict[str, Thresholds]
    iterations: int  # chosen by early stopping on ``stop_rows``
    unseen: np.ndarray  # model columns with no value in the final rows (set to 0)
    disagreement: float  # max |compiled - scikit-learn| probability on checked rows
    refit: bool
    refit_sample: RefitSample | None = None  # the rows the refit learnt from (None: no refit)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RefitSample:
    """The rows the refit learns from: every fraud, a weighted sample of the legitimate rows."""

    rows: np.ndarray  # row indices into the matrix, in order
    weight: np.ndarray | None  # per row of ``rows``; None when every row is kept (weight 1)
    rate: float  # share of the legitimate rows kept
    frauds: int
    legitimate: int  # legitimate rows among the final rows
    legitimate_kept: int
    legitimate_weight: float  # each kept legitimate row's weight: legitimate / kept
    baseline_shift: float = 0.0  # log-odds added to the refit's baseline (match_fraud_rate)

    def card(self) -> dict[str, Any]:
        """The model card's ``protocol.refit_sample``."""
        return {
            "legitimate_rate": round(self.rate, 6),
            "frauds": self.frauds,
            "legitimate_rows": self.legitimate,
            "legitimate_kept": self.legitimate_kept,
            "legitimate_weight": round(self.legitimate_weight, 6),
            "rows_fitted": len(self.rows),
            "baseline_shift_log_odds": round(self.baseline_shift, 6),
        }


def refit_sample_rows(
    y: np.ndarray, final_rows: np.ndarray, rate: float | None = None, seed: int = 0
) -> RefitSample:
    """Every fraud of ``final_rows`` and a random share ``rate`` of its legitimate rows.

    The kept legitimate rows weigh ``legitimate / kept`` each, so they weigh as much in
    all as the legitimate rows did: the fraud rate the trees see, and so the calibration
    and the cut-offs chosen before the refit, stay as on every row. ``rate`` None: all
    the legitimate rows up to ``REFIT_LEGIT_ROWS``, a sample of that many above it.
    ``rate`` 1 keeps every row unweighted. The sample is drawn with ``seed``.
    """
    index = np.flatnonzero(final_rows)
    is_fraud = y[index] == 1
    frauds, legitimate = index[is_fraud], index[~is_fraud]
    if rate is None:
        rate = min(1.0, REFIT_LEGIT_ROWS / len(legitimate)) if len(legitimate) else 1.0
    if not (isinstance(rate, int | float) and 0 < rate <= 1):
        raise TrainingError(f"--refit-sample must be a share in (0, 1], not {rate!r}")
    kept = min(len(legitimate), max(1, round(rate * len(legitimate))))
    if kept >= len(legitimate):
        return RefitSample(index, None, 1.0, len(frauds), len(legitimate), len(legitimate), 1.0)
    chosen = np.random.default_rng(seed).choice(legitimate, size=kept, replace=False)
    rows = np.sort(np.concatenate([frauds, chosen]))
    legit_weight = len(legitimate) / kept
    weight = np.where(y[rows] == 1, 1.0, legit_weight)
    return RefitSample(
        rows, weight, float(rate), len(frauds), len(legitimate), int(kept), legit_weight
    )


def match_fraud_rate(
    model: HistGradientBoostingClassifier,
    matrix: np.ndarray,
    y: np.ndarray,
    final_rows: np.ndarray,
    seed: int = 0,
) -> float:
    """Shift a sampled refit's baseline so it predicts as many frauds as ``final_rows`` hold.

    A refit on every row predicts, on average over those rows, their fraud rate (the
    Newton steps balance the gradients). A refit on a weighted sample of the legitimate
    rows does so over the sample only: it never saw the other legitimate rows and scores
    them a little higher (fewer legitimate rows per leaf), more so the smaller the sample,
    and the calibration fitted before the refit would then decline more than its target.
    This adds to the model's baseline the log-odds that bring its mean probability over
    ``final_rows`` (every fraud, and up to ``RATE_CHECK_LEGIT_ROWS`` legitimate rows drawn
    with ``seed``, weighted for all) back to their fraud rate; a constant, so the ranking
    is unchanged. Returns the shift.
    """
    index = np.flatnonzero(final_rows)
    frauds, legitimate = index[y[index] == 1], index[y[index] == 0]
    if len(frauds) == 0 or len(legitimate) == 0:
        return 0.0
    checked = legitimate
    if len(legitimate) > RATE_CHECK_LEGIT_ROWS:
        rng = np.random.default_rng(seed + 1)
        checked = np.sort(rng.choice(legitimate, RATE_CHECK_LEGIT_ROWS, replace=False))
    fraud_raw = model.decision_function(matrix[frauds])
    legit_raw = model.decision_function(matrix[checked])
    legit_weight = len(legitimate) / len(checked)
    target = float(len(frauds))  # expected frauds over final_rows

    def excess(shift: float) -> float:
        expected = expit(fraud_raw + shift).sum() + legit_weight * expit(legit_raw + shift).sum()
        return float(expected) - target

    shift = float(brentq(excess, -20.0, 20.0, xtol=1e-9))
    model._baseline_prediction = model._baseline_prediction + shift
    return shift


def weigh_node_counts(
    model: HistGradientBoostingClassifier, matrix: np.ndarray, weight: np.ndarray
) -> None:
    """Make every tree node's ``count`` the weighted count of the rows the model fitted.

    scikit-learn stores how many fitted rows reached each node, whatever their weights.
    The compiled forest's expected values (what the ``MODEL_*`` reasons are measured
    against) and scikit-learn's partial dependence weigh nodes by those counts, so after a
    refit on a weighted sample (every fraud, some of the legitimate rows) they would count
    frauds several times too often. ``matrix`` and ``weight``: the rows fitted and theirs.
    Each leaf gets the sum of its rows' weights, rounded; each split its children's sum.
    """
    known_categories, feature_map = model._bin_mapper.make_known_categories_bitsets()
    threads = _openmp_effective_n_threads()  # as scikit-learn's predict: the pool's limit
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        values = nodes["value"].copy()
        nodes["value"] = np.arange(len(nodes))  # predict() now answers the leaf's index
        try:
            leaf = predictor.predict(matrix, known_categories, feature_map, threads)
        finally:
            nodes["value"] = values
        weighted = np.bincount(leaf.astype(np.intp), weights=weight, minlength=len(nodes))
        counts = np.rint(weighted).astype(np.int64)
        for i in range(len(nodes) - 1, -1, -1):  # children come after their parent
            if not nodes["is_leaf"][i]:
                counts[i] = counts[nodes["left"][i]] + counts[nodes["right"][i]]
        nodes["count"] = counts.astype(nodes["count"].dtype)


def _fill_unseen(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # scikit-learn cannot bin a column with no value at all; a constant never splits, so
    # 0 there trains the same trees, and such a feature plays no part in any prediction.
    unseen = np.isnan(matrix).all(axis=0)
    if unseen.any():
        matrix = matrix.copy()
        matrix[:, unseen] = 0.0
    return matrix, unseen


def _compile_checked(model: HistGradientBoostingClassifier, check: np.ndarray):
    forest = CompiledForest.from_sklearn(model)
    disagreement = 0.0
    if len(check):
        proba = model.predict_proba(check)[:, 1]
        disagreement = float(np.abs(forest.proba_many(check) - proba).max())
    if disagreement > PARITY_TOLERANCE:
        raise TrainingError(f"compiled forest differs from scikit-learn by {disagreement:.3g}")
    return forest, disagreement


def fit_protocol(
    matrix: np.ndarray,
    y: np.ndarray,
    verticals: np.ndarray,
    *,
    fit_rows: np.ndarray,
    stop_rows: np.ndarray,
    final_rows: np.ndarray,
    settings: Mapping[str, Any],
    seed: int = 0,
    decline_rate: float = 0.01,
    precision: float | None = None,
    threads: int | None = None,
    refit_sample: float | None = None,
) -> Fitted:
    """Iterations, calibration and cut-offs on ``stop_rows``, then a refit on ``final_rows``.

    The first model learns on ``fit_rows`` and stops early on ``stop_rows`` (which follow
    them in time); its calibration and cut-offs come from ``stop_rows`` too. When
    ``final_rows`` differs from ``fit_rows``, a second model with the same settings and
    the first one's number of iterations learns on ``final_rows`` (no early stopping: no
    rows are left to stop on) and keeps that calibration and those cut-offs; on many
    legitimate rows, or at ``refit_sample``, on a weighted sample of them
    (``refit_sample_rows``). The fits use ``threads`` threads (by default
    ``training.threads.training_threads()``: the free cores).
    """
    with limited_threads(threads) as used:
        fitted = _fit_protocol(
            matrix,
            y,
            verticals,
            fit_rows=fit_rows,
            stop_rows=stop_rows,
            final_rows=final_rows,
            settings=settings,
            seed=seed,
            decline_rate=decline_rate,
            precision=precision,
            refit_sample=refit_sample,
        )
    fitted.timings["fit_threads"] = used
    return fitted


def _fit_protocol(
    matrix: np.ndarray,
    y: np.ndarray,
    verticals: np.ndarray,
    *,
    fit_rows: np.ndarray,
    stop_rows: np.ndarray,
    final_rows: np.ndarray,
    settings: Mapping[str, Any],
    seed: int,
    decline_rate: float,
    precision: float | None,
    refit_sample: float | None,
) -> Fitted:
    settings = dict(settings)
    clock = StageClock()
    timings = clock.timings
    first = HistGradientBoostingClassifier(**settings, random_state=seed)
    fit_matrix, unseen = _fill_unseen(matrix[fit_rows])
    stop_matrix = matrix[stop_rows]
    early = settings.get("early_stopping", "auto") is not False
    # Early stopping watches stop_rows (scikit-learn refuses X_val without it).
    extra = {"X_val": stop_matrix, "y_val": y[stop_rows]} if early else {}
    first.fit(fit_matrix, y[fit_rows], **extra)
    clock.lap("first_fit")
    held_out, disagreement = _compile_checked(first, stop_matrix[:2000])
    calibration = calibrate(first, stop_matrix, y[stop_rows])
    scores = scores_from_logits(calibration.logit(held_out.raw_many(stop_matrix)))
    thresholds = choose_thresholds(
        scores, y[stop_rows], verticals[stop_rows], decline_rate=decline_rate, precision=precision
    )
    iterations = int(first.n_iter_)
    clock.lap("calibration_thresholds")
    refit = not np.array_equal(final_rows, fit_rows)
    final, forest, sample = first, held_out, None
    if refit:
        sample = refit_sample_rows(y, final_rows, refit_sample, seed)
        final_settings = settings | {"max_iter": max(1, iterations), "early_stopping": False}
        final = HistGradientBoostingClassifier(**final_settings, random_state=seed)
        final_matrix, unseen = _fill_unseen(matrix[sample.rows])
        final.fit(final_matrix, y[sample.rows], sample_weight=sample.weight)
        if sample.weight is not None:
            weigh_node_counts(final, final_matrix, sample.weight)
            shift = match_fraud_rate(final, matrix, y, final_rows, seed)
            sample = dataclasses.replace(sample, baseline_shift=shift)
        forest, disagreement = _compile_checked(final, stop_matrix[:2000])
        clock.lap("refit")
    return Fitted(
        estimator=final,
        forest=forest,
        held_out_forest=held_out,
        calibration=calibration,
        thresholds=thresholds,
        iterations=iterations,
        unseen=unseen,
        disagreement=disagreement,
        refit=refit,
        refit_sample=sample,
        timings=timings,
    )


# scikit-learn's histogram boosting: at most 255 bins for the values, one for missing, and
# edges clipped below infinity (sklearn.ensemble._hist_gradient_boosting.common.ALMOST_INF).
MAX_BINS: Final = 255
_ALMOST_INF: Final = 1e300


def bin_edges(column: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """The bin edges ``HistGradientBoostingClassifier`` finds for one column of its rows.

    The same edges as scikit-learn's binning (``_find_binning_thresholds``: the midpoints of
    the distinct values when there are at most ``MAX_BINS``, else the weighted quantiles),
    with every quantile taken in one pass over the sorted column where scikit-learn sorts
    it again for each of its 254 quantiles: with weights that was more than half of a
    candidate's fit (``choose_features``). Missing and zero-weight values are ignored.
    """
    present = ~np.isnan(column)
    values = column[present]
    if weight is not None:
        w = weight[present]
        values, w = values[w != 0], w[w != 0]
    order = np.argsort(values)
    values = values[order]
    distinct = np.unique(values)
    if len(distinct) <= 1:
        return np.empty(0)
    if len(distinct) <= MAX_BINS:
        edges = (distinct[:-1] + distinct[1:]) / 2
    else:
        ranks = np.linspace(0, 100, num=MAX_BINS + 1)[1:-1]
        if weight is None:
            edges = np.percentile(values, ranks, method="averaged_inverted_cdf")
        else:
            edges = _weighted_percentile(values, w[order], ranks, average=True)
        edges = np.unique(edges)
    return np.minimum(edges, _ALMOST_INF)


def shared_bins(
    fit: np.ndarray, weight: np.ndarray | None, *others: np.ndarray
) -> tuple[np.ndarray, ...]:
    """``fit`` and ``others`` with every value replaced by its bin's rank: bin once, fit many.

    The boosted trees see a column only through the bins its fit rows make of it
    (``bin_edges``), so a model fitted on the ranks, and scored on ``others`` ranked by the
    same edges, grows the same trees as one fitted on the values: the same predictions.
    Each column's bins depend on that column alone, so the feature sets of ``--features
    auto`` share one binning, and a set that leaves columns out takes the others' ranks
    as they are. Ranks count only the bins that hold a fit row: a value of ``others`` in
    an empty bin takes the next bin's rank, the side of every split it fell on before.
    Missing values stay missing (NaN). Above 200,000 fit rows scikit-learn would find the
    edges on a random subsample of them; here every row counts.
    """
    outputs = [np.full(m.shape, np.nan) for m in (fit, *others)]
    for j in range(fit.shape[1]):
        edges = bin_edges(fit[:, j], weight)
        present = ~np.isnan(fit[:, j])
        held = np.unique(np.searchsorted(edges, fit[present, j], side="left"))
        if len(held) == 0:
            continue
        for source, out in zip((fit, *others), outputs, strict=True):
            known = ~np.isnan(source[:, j])
            bins = np.searchsorted(edges, source[known, j], side="left")
            ranks = np.minimum(np.searchsorted(held, bins, side="left"), len(held) - 1)
            out[known, j] = ranks
    return tuple(outputs)


@dataclass(frozen=True, slots=True)
class FeatureChoice:
    """What ``--features auto`` weighed on the validation period, and what it kept."""

    chosen: FeatureSet
    figures: list[dict[str, Any]]  # per candidate, in the order weighed
    sample: RefitSample  # the train-period rows each candidate learnt from
    fallback: str | None = None  # why the figures did not decide (too few frauds)
    binning_cpu_seconds: float = 0.0  # the one binning every candidate shares (shared_bins)

    def card(self) -> dict[str, Any]:
        """The model card's ``feature_choice``."""
        sampled = self.sample.weight is not None
        return {
            "chosen": self.chosen.spec,
            "rule": AUTO_RULE,
            "chosen_on": "validation",
            "fitted_on": "train period"
            + (" (every fraud, a weighted sample of the legitimate rows)" if sampled else ""),
            "train_sample": self.sample.card() if sampled else None,
            "candidates": self.figures,
            "fallback": self.fallback,
            "binning_cpu_seconds": self.binning_cpu_seconds,
        }


def choose_features(
    encoded: np.ndarray,
    y: np.ndarray,
    split: Split,
    sets: Sequence[FeatureSet],
    *,
    settings: Mapping[str, Any],
    seed: int = 0,
    legit_rows: int = AUTO_LEGIT_ROWS,
    threads: int | None = None,
    progress: bool = False,
    min_frauds: int = MIN_VALIDATION_FRAUDS,
) -> FeatureChoice:
    """Weigh each feature set on the validation period; keep the best (``--features auto``).

    ``encoded``: every model column (``encode_frame``). Each set learns on the train
    period (every fraud and up to ``legit_rows`` legitimate rows, weighted as the sampled
    refit's, ``refit_sample_rows``) and stops early on the validation period, whose ranking
    figures then decide (``choose_by_average_precision``). The test period is never read.
    The columns are binned once for every set (``shared_bins``) and each set fits its own
    columns only: the figures are those of fitting each set on the values.
    With fewer than ``min_frauds`` validation frauds the figures are still measured but
    the first set is kept (``FeatureChoice.fallback`` says why).
    """
    legitimate = int((y[split.train] == 0).sum())
    rate = min(1.0, legit_rows / legitimate) if legitimate else 1.0
    sample = refit_sample_rows(y, split.train, rate, seed)
    started = time.process_time()
    fit_rows, stop_rows = shared_bins(
        encoded[sample.rows], sample.weight, encoded[split.validation]
    )
    binning_cpu = round(time.process_time() - started, 2)
    y_stop = y[split.validation]
    figures: list[dict[str, Any]] = []
    with (
        limited_threads(threads),
        tqdm(sets, desc="feature sets", unit="set", disable=not progress) as bar,
    ):
        for feature_set in bar:
            bar.set_postfix_str(feature_set.spec)
            started = time.process_time()
            model = HistGradientBoostingClassifier(**settings, random_state=seed)
            # the set's columns only: a left-out column would be a constant the trees
            # never split on, yet pay for in every histogram
            kept = ~feature_set.mask
            stop = stop_rows[:, kept]
            extra = {}
            if settings.get("early_stopping", "auto") is not False:
                extra = {"X_val": stop, "y_val": y_stop}
            matrix, _ = _fill_unseen(fit_rows[:, kept])
            model.fit(matrix, y[sample.rows], sample_weight=sample.weight, **extra)
            risk = expit(model.decision_function(stop))
            figures.append(
                {
                    "spec": feature_set.spec,
                    "columns_used": feature_set.card()["columns_used"],
                    "iterations": int(model.n_iter_),
                    "validation": ranking_metrics(y_stop, risk),
                    "fit_cpu_seconds": round(time.process_time() - started, 2),
                }
            )
    fallback = None
    frauds = int(y_stop.sum())
    if frauds < min_frauds:
        chosen = 0
        fallback = (
            f"{frauds} validation frauds, fewer than {min_frauds}: the first candidate "
            f"`{sets[0].spec}` is kept whatever the figures (they are noise at that count)"
        )
    else:
        chosen = choose_by_average_precision(
            sets, [f["validation"]["average_precision"] for f in figures]
        )
    for i, figure in enumerate(figures):
        figure["chosen"] = i == chosen
    return FeatureChoice(sets[chosen], figures, sample, fallback, binning_cpu)


def validation_warnings(frauds: int, min_frauds: int, auto: bool) -> list[str]:
    """The card's ``warnings`` about a validation period of ``frauds`` frauds."""
    if frauds >= min_frauds:
        return []
    kept = "; --features auto kept its first candidate instead of choosing" if auto else ""
    return [
        f"the validation period holds {frauds} frauds, fewer than the minimum of "
        f"{min_frauds} (MIN_VALIDATION_FRAUDS): the iterations, calibration and "
        f"thresholds chosen on it rest on noise{kept}; train on a longer log or check "
        "with `riskscore walkforward` (docs/model-evaluation.md)"
    ]


def feature_request(
    features: str | FeatureSet | None, feature_candidates: Sequence[str] | None = None
) -> FeatureSet | list[FeatureSet]:
    """The feature set ``features`` names, or with ``"auto"`` the candidates to weigh.

    ``feature_candidates`` (``--candidate``) replaces ``AUTO_CANDIDATES`` and goes with
    ``"auto"`` only. Raises ``FeatureSetError`` for a bad specification.
    """
    if isinstance(features, str) and features.strip().lower() == AUTO:
        return resolve_candidates(feature_candidates)
    if feature_candidates:
        raise FeatureSetError("--candidate goes with --features auto")
    return features if isinstance(features, FeatureSet) else resolve(features)


def train_on_dataset(
    dataset: pd.DataFrame,
    *,
    registry: Path | str,
    since: float | str | datetime | None = None,
    legit_after_days: float | None = None,
    as_of: float | str | datetime | None = None,
    promote: bool = True,
    force: bool = False,
    seed: int = 0,
    target_decline_rate: float = 0.01,
    target_precision: float | None = None,
    params: Mapping[str, Any] | None = None,
    data_fingerprint: str | None = None,
    refit: bool = True,
    refit_sample: float | None = None,
    exclude_known_fraud: bool = False,
    features: str | FeatureSet | None = None,
    feature_candidates: Sequence[str] | None = None,
    progress: bool = False,
    min_validation_frauds: int = MIN_VALIDATION_FRAUDS,
) -> TrainReport:
    """Train on a ``training.dataset`` frame (features and meta columns) and register.

    ``promote=True`` makes the new model live only through the promotion gate
    (``training.gate``: not worse than the live model on the new model's held-out period)
    or with ``force``; the report carries the gate's decision. ``promote=False`` registers
    without pointing ``LATEST`` at it. ``features``: the feature set the trees may split on
    (``training.feature_sets``; its default set when None), recorded in the card; ``"auto"``
    chooses it on the validation period among ``feature_candidates`` (``choose_features``;
    ``AUTO_CANDIDATES`` when None). ``progress`` shows a bar while the candidates fit.
    ``refit``, ``refit_sample`` (the share of legitimate rows the refit learns from;
    None: ``REFIT_LEGIT_ROWS`` at most) and ``exclude_known_fraud`` as the module
    docstring says (steps 7 and 8). Fewer validation frauds than ``min_validation_frauds``:
    a warning in the card, and ``"auto"`` keeps its first candidate (step 10).
    """
    if not 0 < target_decline_rate < 1:
        raise TrainingError("target_decline_rate must lie between 0 and 1")
    if refit_sample is not None and not 0 < refit_sample <= 1:
        raise TrainingError(f"--refit-sample must be a share in (0, 1], not {refit_sample}")
    requested = feature_request(features, feature_candidates)
    total = StageClock()
    clock = StageClock()
    timings = clock.timings
    since_seconds = to_unix_seconds(since)
    maturity = None
    if legit_after_days is not None:
        maturity = mature_labels(dataset, legit_after_days, to_unix_seconds(as_of))
        dataset = dataset.assign(label=maturity.label)
    elif as_of is not None:
        raise TrainingError("--as-of goes with --legit-after")
    excluded = 0
    if exclude_known_fraud:
        known = known_fraud_rows(dataset) & dataset["label"].notna().to_numpy()
        excluded = int(known.sum())
        dataset = dataset.assign(label=dataset["label"].where(~known))
    hint = "" if maturity is not None else _LEGIT_AFTER_HINT
    try:
        split = split_periods(dataset, since_seconds)
    except TrainingError as exc:
        raise TrainingError(f"{exc}{hint}") from None
    label = dataset["label"].to_numpy(dtype=np.float64)
    for name in ("train", "validation", "test"):
        mask = getattr(split, name)
        if mask.sum() == 0:
            raise TrainingError(f"the {name} period holds no labelled rows")
    for name in ("train", "validation"):
        labels = label[getattr(split, name)]
        if labels.sum() == 0:
            raise TrainingError(f"the {name} period holds no fraud: nothing to learn")
        if labels.sum() == len(labels):
            raise TrainingError(
                f"the {name} period holds only fraud: no legitimate payments" + hint
            )

    encoded = encode_frame(dataset)
    y = (label == 1).astype(np.int64)
    settings = DEFAULT_PARAMS | dict(params or {})
    choice = None
    if isinstance(requested, FeatureSet):
        feature_set = requested
    else:
        choice = choose_features(
            encoded,
            y,
            split,
            requested,
            settings=settings,
            seed=seed,
            progress=progress,
            min_frauds=min_validation_frauds,
        )
        feature_set = choice.chosen
        clock.lap("feature_choice")
    matrix = feature_set.apply(encoded)
    del encoded
    verticals = dataset["vertical"].to_numpy(dtype=object)
    final_rows = split.examples if refit else split.train
    fitted = fit_protocol(
        matrix,
        y,
        verticals,
        fit_rows=split.train,
        stop_rows=split.validation,
        final_rows=final_rows,
        settings=settings,
        seed=seed,
        decline_rate=target_decline_rate,
        precision=target_precision,
        refit_sample=refit_sample,
    )
    clock.lap("fit")
    timings |= fitted.timings
    forest, calibration, thresholds = fitted.forest, fitted.calibration, fitted.thresholds
    unseen = fitted.unseen
    disagreement = fitted.disagreement
    held_out = fitted.held_out_forest

    def period_metrics(mask: np.ndarray) -> dict[str, Any]:
        logits = calibration.logit(held_out.raw_many(matrix[mask]))
        frame = dataset.loc[mask]
        return model_metrics(frame, sigmoid_many(logits), scores_from_logits(logits), thresholds)

    metrics = {"validation": period_metrics(split.validation), "test": period_metrics(split.test)}
    # the fair test: payments that lists and rules would not stop for a confirmed fraud
    fresh = split.test & ~known_fraud_rows(dataset)
    fresh_logits = calibration.logit(held_out.raw_many(matrix[fresh]))
    metrics["test_new_entities"] = ranking_metrics(y[fresh], sigmoid_many(fresh_logits))
    clock.lap("metrics")

    forest_bytes = forest.to_npz_bytes()
    joblib_bytes = estimator_bytes(fitted.estimator)
    created = datetime.now(UTC)
    version = unused_version_name(registry, created, sha256_hex(forest_bytes))
    spec = ModelSpec(
        format=FORMAT,
        version=version,
        catalog_version=catalog.CATALOG_VERSION,
        features=list(MODEL_FEATURES),
        calibration=calibration,
        thresholds=thresholds,
    )
    spec_bytes = msgspec.json.format(msgspec.json.encode(spec), indent=2)
    bundle = ModelBundle(Path(version), {"version": version}, spec, forest)
    latency = _latency(bundle, dataset.loc[split.test])
    importance = _importance(forest, matrix[split.test][:2000])
    clock.lap("latency_importance")
    total.lap("total_training")
    timings |= total.timings

    time_ = dataset["event_time"].to_numpy(dtype=np.float64)
    warnings = validation_warnings(
        int(y[split.validation].sum()), min_validation_frauds, auto=choice is not None
    )
    card: dict[str, Any] = {
        "format": FORMAT,
        "version": version,
        "created_at": created.isoformat(timespec="seconds"),
        "catalog_version": catalog.CATALOG_VERSION,
        # what the reader must know before trusting the figures below (validation too thin)
        "warnings": warnings,
        "artifacts": {MODEL_JSON: sha256_hex(spec_bytes), FOREST: sha256_hex(forest_bytes)},
        # for analysts' notebooks only (training.estimator); the service never reads it
        "analyst_artifacts": {ESTIMATOR: sha256_hex(joblib_bytes)},
        "features": list(MODEL_FEATURES),
        "catalog_features": list(MODEL_SOURCES),
        "features_never_seen": [n for n, u in zip(MODEL_FEATURES, unseen, strict=True) if u],
        "feature_set": feature_set.card(),
        # --features auto: every candidate's validation figures and the one kept
        "feature_choice": choice.card() if choice is not None else None,
        "training_data": {
            "fingerprint_sha256": data_fingerprint,
            "rows": len(dataset),
            "labelled_rows": int((~np.isnan(label)).sum()),
            "since": _iso(since_seconds) if since_seconds is not None else None,
            "maturity": maturity.card() if maturity is not None else None,
            "excluded_known_fraud_entities": excluded if exclude_known_fraud else None,
        },
        "protocol": {
            "iterations_calibration_thresholds_from": "validation",
            "feature_set_from": "validation (--features auto)" if choice else "given",
            "held_out_metrics_from": "test, model fitted on train only (before the refit)",
            "final_model_fitted_on": "final_fit" if fitted.refit else "train",
            "refit": fitted.refit,
            # every fraud of final_fit and a weighted sample of its legitimate rows
            "refit_sample": fitted.refit_sample.card() if fitted.refit_sample else None,
        },
        "periods": {
            "history": _range(time_, np.ones(len(time_), dtype=bool)),
            "train": _range(time_, split.train) | _counts(y, split.train),
            "validation": _range(time_, split.validation) | _counts(y, split.validation),
            "test": _range(time_, split.test) | _counts(y, split.test),
            "final_fit": _range(time_, final_rows) | _counts(y, final_rows),
            "label_delay_gap_seconds": round(split.gap_seconds, 1),
        },
        "model": {
            "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
            "params": settings | {"random_state": seed},
            "iterations": fitted.iterations,
            "trees": forest.n_trees,
            "max_depth": forest.max_depth,
            "compiled_vs_sklearn_max_abs_diff": disagreement,
        },
        "calibration": msgspec.to_builtins(calibration),
        "score": {
            "mapping": "round((log10(p / (1 - p)) - a) * 100 / (b - a)), clipped to 0..100",
            "a": SCORE_LOG10_ODDS_AT_0,
            "b": SCORE_LOG10_ODDS_AT_100,
        },
        "thresholds": {
            "target_decline_rate": target_decline_rate,
            "target_precision": target_precision,
            "per_vertical": msgspec.to_builtins(thresholds),
        },
        "metrics": metrics,
        "top_features": importance,
        "inference": latency,
        "libraries": _libraries(),
        "timings": timings,
    }
    card_bytes = json.dumps(card, indent=2, default=_json_default, allow_nan=False).encode()
    # the gate compares with the model live before this one registers
    live = live_model(registry) if promote else None
    directory = register(
        registry,
        version,
        {
            FOREST: forest_bytes,
            MODEL_JSON: spec_bytes,
            MODEL_CARD: card_bytes,
            MODEL_CARD_MD: model_card_markdown(card).encode(),
            ESTIMATOR: joblib_bytes,
        },
        make_latest=False,
    )
    # the model the held-out figures measure (before the refit), as the gate must judge it
    holdout = dataset.loc[split.test]
    holdout_probability = sigmoid_many(calibration.logit(held_out.raw_many(matrix[split.test])))
    report = TrainReport(version, directory, card, timings, holdout, holdout_probability)
    if live is not None:
        report.gate = promotion_gate(live, holdout, holdout_probability, new_version=version)
        report.promoted = report.gate.promote or force
        report.forced = report.promoted and not report.gate.promote
        if report.promoted:
            promote_version(registry, version)
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _range(time_: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    if not mask.any():
        return {"start": None, "end": None, "rows": 0}
    return {
        "start": _iso(float(time_[mask].min())),
        "end": _iso(float(time_[mask].max())),
        "rows": int(mask.sum()),
    }


def _counts(y: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    frauds = int(y[mask].sum())
    return {"frauds": frauds, "fraud_rate": frauds / int(mask.sum()) if mask.any() else None}


def _latency(bundle: ModelBundle, frame: pd.DataFrame, rows: int = 500) -> dict[str, Any]:
    """Single-row ``predict`` (with reasons) on test rows as the service receives them."""
    sample = frame.head(rows)
    features = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in sample.to_dict(orient="records")
    ]
    if not features:
        return {}
    for payload in features[:20]:
        bundle.predict(payload)
    spent = []
    for payload in features:
        start = time.perf_counter_ns()
        bundle.predict(payload)
        spent.append(time.perf_counter_ns() - start)
    return {
        "predict_rows": len(spent),
        "predict_median_us": round(float(np.median(spent)) / 1e3, 1),
        "predict_p99_us": round(float(np.percentile(spent, 99)) / 1e3, 1),
    }


def _importance(forest: CompiledForest, matrix: np.ndarray, top: int = 15) -> list[dict[str, Any]]:
    """Mean absolute contribution (log-odds) of each catalogue feature on test rows."""
    if len(matrix) == 0:
        return []
    total = np.zeros(len(MODEL_SOURCES))
    for row in matrix:
        _, contributions = forest.contributions(row)
        total += np.abs(np.bincount(SOURCE_INDEX, contributions, minlength=len(MODEL_SOURCES)))
    mean = total / len(matrix)
    order = [i for i in np.argsort(mean)[::-1][:top] if mean[i] > 0]
    return [
        {"feature": MODEL_SOURCES[i], "mean_abs_log_odds": round(float(mean[i]), 5)} for i in order
    ]


def _libraries() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("numpy", "pandas", "scikit-learn", "msgspec", "riskscore"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _maturity_lines(maturity: Mapping[str, Any] | None) -> list[str]:
    if not maturity:
        return []
    return [
        f"- legitimate by maturity (--legit-after {maturity['legit_after_days']:g} days, as of "
        f"{maturity['as_of']}): {maturity['unlabelled_counted_legit']:,} unlabelled payments "
        f"up to {maturity['mature_until']}; {maturity['younger_rows_history_only']:,} younger "
        "payments are history only"
    ]


def _protocol_line(card: Mapping[str, Any]) -> str:
    protocol = card.get("protocol") or {}
    iterations = card["model"].get("iterations")
    if not protocol.get("refit"):
        return f"Fitted on the train period ({iterations} iterations, early-stopped on validation)."
    final = card["periods"]["final_fit"]
    sample = protocol.get("refit_sample") or {}
    rows = f"all {final['rows']:,} mature labelled rows"
    if sample and sample["legitimate_kept"] < sample["legitimate_rows"]:
        rows = (
            f"all {final['rows']:,} mature labelled rows: every fraud ({sample['frauds']:,}) "
            f"and a random {sample['legitimate_rate']:.1%} of the legitimate rows "
            f"({sample['legitimate_kept']:,} of {sample['legitimate_rows']:,}, each weighted "
            f"{sample['legitimate_weight']:.2f} so the fraud rate stays as on every row, "
            f"its baseline then shifted by {sample.get('baseline_shift_log_odds', 0.0):+.3f} "
            "log-odds to predict as many frauds as the rows hold; --refit-sample)"
        )
    return (
        f"Iterations ({iterations}), calibration and thresholds chosen on the validation "
        f"period; the held-out test figures below are the model fitted on the train period "
        f"only; the shipped model was then refitted on {rows} ({final['start']} to "
        f"{final['end']})."
    )


def model_card_markdown(card: Mapping[str, Any]) -> str:
    """The model card for people: what the model is, what it was trained on, how it does."""
    test = card["metrics"]["test"]
    periods = card["periods"]
    lines = [
        f"# Model {card['version']}",
        "",
        f"Fraud model for the riskscore service, created {card['created_at']}. It needs the "
        f"feature catalogue `{card['catalog_version']}`; the service refuses it otherwise, "
        "and refuses any artifact whose SHA-256 differs from the list below.",
        "",
        *_warning_lines(card.get("warnings")),
        "## Training data",
        "",
        f"- fingerprint (SHA-256): `{card['training_data']['fingerprint_sha256']}`",
        f"- rows: {card['training_data']['rows']:,} "
        f"({card['training_data']['labelled_rows']:,} labelled)",
        f"- label-delay gap between periods: {periods['label_delay_gap_seconds'] / 3600:.1f} h",
        *_maturity_lines(card["training_data"].get("maturity")),
        "",
        "| period | from | to | rows | frauds | fraud rate |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for name in ("train", "validation", "test", "final_fit"):
        if name not in periods:
            continue
        p = periods[name]
        lines.append(
            f"| {name} | {p['start']} | {p['end']} | {p['rows']:,} | {p['frauds']:,} | "
            f"{_fmt(p['fraud_rate'], '.2%')} |"
        )
    model = card["model"]
    lines += [
        "",
        "## Model",
        "",
        f"{model['estimator']}: {model['trees']} trees, depth ≤ {model['max_depth']}; "
        f"compiled to numpy arrays (max difference from scikit-learn "
        f"{model['compiled_vs_sklearn_max_abs_diff']:.1e}). "
        + _protocol_line(card)
        + " Platt calibration (CalibratedClassifierCV on the frozen model, validation) "
        f"a = {card['calibration']['a']:.4f}, b = {card['calibration']['b']:.4f}. "
        f"Score: {card['score']['mapping']} with a = {card['score']['a']}, "
        f"b = {card['score']['b']}.",
        "",
        "## Held-out test period",
        "",
        "| scope | rows | frauds | ROC AUC | avg precision | recall @1% | recall @5% |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    scopes = [("all", test), *list(test["by_vertical"].items())]
    for name, m in scopes:
        lines.append(
            f"| {name} | {m['rows']:,} | {m['frauds']:,} | {_fmt(m['roc_auc'])} | "
            f"{_fmt(m['average_precision'])} | {_fmt(m['recall_at_1%_decline'])} | "
            f"{_fmt(m['recall_at_5%_decline'])} |"
        )
    lines += ["", f"Daily card precision@100: {_fmt(test.get('card_precision_at_100'))}", ""]
    fresh = card["metrics"].get("test_new_entities")
    if fresh:
        lines += [
            f"On the {fresh['rows']:,} test payments whose card, customer, device, email and "
            f"account had no confirmed fraud yet ({fresh['frauds']:,} frauds): ROC AUC "
            f"{_fmt(fresh['roc_auc'])}, average precision {_fmt(fresh['average_precision'])}, "
            f"recall @1% {_fmt(fresh['recall_at_1%_decline'])}.",
            "",
        ]
    if test.get("by_fraud_pattern"):
        lines += [
            "| fraud pattern | frauds | recall @1% | recall @5% |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, m in test["by_fraud_pattern"].items():
            lines.append(
                f"| {name} | {m['frauds']:,} | {_fmt(m['recall_at_1%_decline'])} | "
                f"{_fmt(m['recall_at_5%_decline'])} |"
            )
        lines.append("")
    lines += [
        "## Thresholds (score ≥ cut-off)",
        "",
        f"Chosen on the validation period for a decline rate of "
        f"{card['thresholds']['target_decline_rate']:.1%}"
        + (
            f" or a precision of {card['thresholds']['target_precision']:.0%}"
            if card["thresholds"]["target_precision"]
            else ""
        )
        + ".",
        "",
        "| vertical | challenge | review | decline | test decline rate | precision | recall |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for vertical, cut in card["thresholds"]["per_vertical"].items():
        at = test["by_vertical"].get(vertical, {}).get("at_thresholds", {}).get("decline", {})
        lines.append(
            f"| {vertical} | {cut['challenge']} | {cut['review']} | {cut['decline']} | "
            f"{_fmt(at.get('rate'), '.2%')} | {_fmt(at.get('precision'))} | "
            f"{_fmt(at.get('recall'))} |"
        )
    lines += ["", "## Features that matter most (mean |contribution|, log-odds, test)", ""]
    lines += [f"- `{f['feature']}`: {f['mean_abs_log_odds']:.4f}" for f in card["top_features"]]
    inference = card.get("inference") or {}
    lines += [
        "",
        "## Serving",
        "",
        f"Single-row predict with reasons: median {inference.get('predict_median_us')} µs, "
        f"p99 {inference.get('predict_p99_us')} µs (measured at training).",
        "",
        "## Artifacts",
        "",
    ]
    lines += [f"- `{name}`: SHA-256 `{digest}`" for name, digest in card["artifacts"].items()]
    lines += [
        f"- `{name}` (analysts' notebooks only, never read by the service): SHA-256 `{digest}`"
        for name, digest in (card.get("analyst_artifacts") or {}).items()
    ]
    lines += ["", "## Libraries", ""]
    lines += [f"- {name} {v}" for name, v in card["libraries"].items()]
    lines += ["", f"Model inputs ({len(card['features'])}): " + ", ".join(card["features"]), ""]
    feature_set = card.get("feature_set")
    if feature_set:
        left_out = feature_set["columns_left_out"]
        lines += [
            f"Feature set `{feature_set['spec']}` (training/feature_sets.py): the trees split on "
            f"{feature_set['columns_used']} of these; left out ({len(left_out)}): "
            + (", ".join(left_out) or "none"),
            "",
        ]
    lines += _feature_choice_lines(card.get("feature_choice"))
    return "\n".join(lines)


def _warning_lines(warnings: Sequence[str] | None) -> list[str]:
    """The card's warnings, first thing after the title (none: no section)."""
    if not warnings:
        return []
    return ["## Warnings", "", *(f"- **{w}**" for w in warnings), ""]


def _feature_choice_lines(choice: Mapping[str, Any] | None) -> list[str]:
    """``--features auto``: the candidates' validation figures, the rule and the choice."""
    if not choice:
        return []
    lines = [
        f"Chosen by `--features auto` on the validation period ({choice['rule']}); each "
        f"candidate learnt on the {choice['fitted_on']} and stopped early on "
        "validation; the test period played no part:",
        "",
        "| candidate | columns | iterations | ROC AUC | avg precision | recall @1% | chosen |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    if choice.get("fallback"):
        lines[0] = (
            f"Not chosen by the figures: {choice['fallback']}. The candidates' validation "
            f"figures (each learnt on the {choice['fitted_on']}), for reference only:"
        )
    for c in choice["candidates"]:
        v = c["validation"]
        lines.append(
            f"| `{c['spec']}` | {c['columns_used']} | {c['iterations']} | {_fmt(v['roc_auc'])} | "
            f"{_fmt(v['average_precision'])} | {_fmt(v['recall_at_1%_decline'])} | "
            f"{'yes' if c['chosen'] else ''} |"
        )
    return [*lines, ""]
