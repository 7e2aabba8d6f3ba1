"""One or two registered models side by side on the same labelled period (``evaluate --model``).

``compare_models`` builds the log's features once, point in time, keeps the labelled rows
of one period, and scores them with each model through the service's own decision
function (``service.decision.policy.decide_history``, model alone, no rules or lists):
the same rows, the same labels, for every model. The period is by default the first
model's held-out test period as its card records it; ``since``/``until`` choose another.

A model judged on rows it was fitted on looks far better than it is (a near-perfect ROC
AUC). The fitted range of each model (its card's train and validation periods, and the
final refit's rows, which include the held-out period of a refitted model) is compared
with the evaluated rows, and every overlap is a warning that says
how many rows the model has seen.

The figures per model are ``training.evaluate.model_metrics``'s (ROC AUC, average
precision, recall at 1 % and 5 % decline, CP@100, per vertical and fraud pattern, decline
and review at the model's thresholds). ``save_comparison_plots`` draws ROC (false-positive
rate on a log axis, where a fraud team works), precision-recall and calibration curves
with scikit-learn's display classes, each titled with the versions, the period and the
row counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from service.decision.policy import Policy, decide_history
from service.model.bundle import ModelBundle
from service.settings import DEFAULT_DEGRADED
from training.evaluate import model_metrics

# The card periods whose rows a model was fitted on (or calibrated, or had its
# thresholds chosen on): evaluating over them flatters it.
FITTED_PERIODS: Final = ("train", "validation", "final_fit")


def _stamp(value: Any) -> float | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.timestamp()


def _iso(seconds: float) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()


def held_out_period(bundle: ModelBundle) -> tuple[float, float]:
    """The model card's test period (first and last payment, Unix seconds)."""
    test = (bundle.card.get("periods") or {}).get("test") or {}
    start, end = _stamp(test.get("start")), _stamp(test.get("end"))
    if start is None or end is None:
        raise ValueError(
            f"the card of {bundle.version} names no held-out test period: give --since/--until"
        )
    return start, end


def fitted_ranges(bundle: ModelBundle) -> list[tuple[str, float, float]]:
    """(period name, start, end) of every card period whose rows the model was fitted on."""
    periods = bundle.card.get("periods") or {}
    out = []
    for name in FITTED_PERIODS:
        period = periods.get(name)
        if isinstance(period, dict):
            start, end = _stamp(period.get("start")), _stamp(period.get("end"))
            if start is not None and end is not None:
                out.append((name, start, end))
    return out


def overlap_warning(bundle: ModelBundle, event_time: np.ndarray) -> str | None:
    """A warning when some of the evaluated rows lie in a period the model was fitted on."""
    seen = np.zeros(len(event_time), dtype=bool)
    names = []
    for name, start, end in fitted_ranges(bundle):
        inside = (event_time >= start) & (event_time <= end)
        if inside.any():
            seen |= inside
            names.append(f"{name} {_iso(start)[:16]} to {_iso(end)[:16]}")
    if not seen.any():
        return None
    return (
        f"{bundle.version} was fitted on {int(seen.sum()):,} of the {len(event_time):,} "
        f"evaluated payments ({'; '.join(names)}): its figures here are optimistic, "
        "not a measure of how it will do on new payments"
    )


def period_overlap_warning(bundle: ModelBundle, start: Any, end: Any) -> str | None:
    """A warning when the period ``start``..``end`` reaches into the model's fitted rows."""
    first, last = _stamp(start), _stamp(end)
    if first is None or last is None:
        return None
    names = [
        f"{name} {_iso(a)[:16]} to {_iso(b)[:16]}"
        for name, a, b in fitted_ranges(bundle)
        if a <= last and b >= first
    ]
    if not names:
        return None
    return (
        f"the evaluated period {_iso(first)[:16]} to {_iso(last)[:16]} includes payments "
        f"{bundle.version} was fitted on ({'; '.join(names)}): its figures are optimistic; "
        f"compare on its held-out test period instead (evaluate --model {bundle.version})"
    )


def compare_models(
    log: pd.DataFrame | None,
    bundles: Sequence[ModelBundle],
    *,
    dataset: pd.DataFrame | None = None,
    since: float | None = None,
    until: float | None = None,
    plots_dir: Path | str | None = None,
    secret: bytes | None = None,
    fx: Any = None,
    progress: bool = False,
    keep_scores: bool = False,
) -> dict[str, Any]:
    """Score the same labelled period with each model; their figures side by side.

    ``log`` is a transaction log (or give ``dataset``, a ``build_dataset`` frame, to skip
    the feature build). The period is ``since``..``until`` (Unix seconds, either open),
    else the first model's held-out test period. Plots go to ``plots_dir`` when given.
    ``keep_scores`` adds ``scores``: the labels and each model's probabilities (arrays, for
    ``comparison_figures`` in a notebook; not JSON).
    """
    from training.dataset import build_dataset

    if not bundles:
        raise ValueError("give at least one model")
    if dataset is None:
        if log is None:
            raise ValueError("give a log or a dataset")
        dataset = build_dataset(log, secret=secret, fx=fx, progress=progress)
    if since is None and until is None:
        since, until = held_out_period(bundles[0])
        source = f"the held-out test period of {bundles[0].version}'s model card"
    else:
        source = "--since/--until"
    time_ = dataset["event_time"].to_numpy(dtype=np.float64)
    keep = dataset["label"].notna().to_numpy(copy=True)
    if since is not None:
        keep &= time_ >= since
    if until is not None:
        keep &= time_ <= until
    frame = dataset.loc[keep]
    labels = (frame["label"].to_numpy() == 1).astype(np.int64)
    if frame.empty:
        raise ValueError(
            f"the log holds no labelled payments in {source} "
            f"({_iso(since) if since else '…'} to {_iso(until) if until else '…'})"
        )
    event_time = time_[keep]
    period = {
        "source": source,
        "start": _iso(float(event_time.min())),
        "end": _iso(float(event_time.max())),
        "rows": len(frame),
        "frauds": int(labels.sum()),
        "log_rows": len(dataset),
    }
    models = []
    warnings = []
    probabilities: dict[str, np.ndarray] = {}
    for bundle in bundles:
        decided = decide_history(
            frame, ruleset=None, model=bundle, policy=Policy(bundle.thresholds, DEFAULT_DEGRADED)
        )
        metrics = model_metrics(
            frame, decided.model_probability, decided.model_score, bundle.thresholds
        )
        warning = overlap_warning(bundle, event_time)
        if warning:
            warnings.append(warning)
        models.append({"version": bundle.version, "warning": warning} | metrics)
        probabilities[bundle.version] = decided.model_probability
    result: dict[str, Any] = {"period": period, "models": models, "warnings": warnings}
    if plots_dir is not None:
        result["plots"] = save_comparison_plots(labels, probabilities, period, Path(plots_dir))
    if keep_scores:
        result["scores"] = {"labels": labels, "probabilities": probabilities}
    return result


def _title(kind: str, period: dict[str, Any], versions: Sequence[str]) -> str:
    return (
        f"{kind}: {' vs '.join(versions)}\n{period['start'][:16]} to {period['end'][:16]} UTC, "
        f"{period['rows']:,} payments, {period['frauds']:,} frauds"
    )


def comparison_figures(
    labels: np.ndarray, probabilities: dict[str, np.ndarray], period: dict[str, Any]
) -> dict[str, Any]:
    """ROC (log FPR), precision-recall and calibration figures of each model's probabilities.

    Drawn with scikit-learn's ``RocCurveDisplay``, ``PrecisionRecallDisplay`` and
    ``CalibrationDisplay``; each titled with the versions, the period and its row counts.
    """
    from matplotlib.figure import Figure
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    versions = list(probabilities)
    both = 0 < labels.sum() < len(labels)
    figures: dict[str, Any] = {}
    for kind in ("roc", "pr", "calibration"):
        figure = Figure(figsize=(7, 5.5), dpi=110)
        axes = figure.subplots()
        for version, probability in probabilities.items():
            if not both:
                break
            if kind == "roc":
                RocCurveDisplay.from_predictions(labels, probability, name=version, ax=axes)
            elif kind == "pr":
                PrecisionRecallDisplay.from_predictions(labels, probability, name=version, ax=axes)
            else:
                CalibrationDisplay.from_predictions(
                    labels, probability, n_bins=10, strategy="uniform", name=version, ax=axes
                )
        if kind == "roc":
            negatives = max(int((labels == 0).sum()), 1)
            axes.set_xscale("log")
            axes.set_xlim(max(1.0 / negatives, 1e-5), 1.0)
            axes.set(xlabel="false positive rate (log scale)", ylabel="true positive rate")
            axes.set_title(_title("ROC", period, versions), fontsize=9)
        elif kind == "pr":
            axes.axhline(labels.mean(), color="grey", linestyle=":", linewidth=0.8)
            axes.set_title(_title("Precision-recall", period, versions), fontsize=9)
        else:
            title = _title("Calibration (10 equal-width bins)", period, versions)
            axes.set_title(title, fontsize=9)
        axes.set_aspect("auto")  # the display classes make the axes square; fill the figure
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7, loc="upper right" if kind == "pr" else "lower right")
        figure.tight_layout()
        figures[kind] = figure
    return figures


def save_comparison_plots(
    labels: np.ndarray,
    probabilities: dict[str, np.ndarray],
    period: dict[str, Any],
    out_dir: Path,
) -> dict[str, str]:
    """``comparison_figures`` as ``roc.png``, ``pr.png`` and ``calibration.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for kind, figure in comparison_figures(labels, probabilities, period).items():
        path = out_dir / f"{kind}.png"
        figure.savefig(path)
        paths[kind] = str(path)
    return paths
