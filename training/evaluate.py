"""How well a model (and the rules, and both together) catch fraud on a labelled log.

The metrics answer the questions a risk team asks, all on rows scored point in time:

- ranking, threshold-free: ROC AUC and average precision of the probability;
- at a budget: recall at a 1 % and 5 % decline rate (the share of fraud among the riskiest
  1 % / 5 % of payments);
- for the analysts' queue: daily card precision@k (CP@k), the share of the day's k
  riskiest payers (a payer's risk is its riskiest payment of the day) that had fraud that
  day, averaged over days; the payer is the card, else the payment account, else the
  customer, so UPI and wallet traffic counts too. Days with fewer than k payers use them all;
- per vertical, and per fraud pattern (the share of each pattern's frauds in the riskiest
  1 % and 5 %);
- at the policy's thresholds: decline and review rates, precision and recall.

``evaluate`` scores a log with the registered model, and with the rule set when one is
given, and reports model alone, rules alone and the combined decision (declined when
either declines), with PR and ROC curves saved as PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from service.contract import VERTICALS
from service.decision.policy import (
    STRENGTH,
    Policy,
    decide_history,
    rule_effects_frame,
    threshold_strengths,
)
from service.model.bundle import ModelBundle, load_latest
from service.verticals import Thresholds

DECLINE_RATES: Final = (0.01, 0.05)
CP_K: Final = 100
SECONDS_PER_DAY: Final = 86_400


def recall_at_rate(labels: np.ndarray, risk: np.ndarray, rate: float) -> float | None:
    """Share of frauds among the ``rate`` riskiest rows (ties broken by row order)."""
    frauds = labels.sum()
    if frauds == 0 or len(labels) == 0:
        return None
    k = max(1, int(np.floor(rate * len(labels))))
    top = np.argsort(-risk, kind="stable")[:k]
    return float(labels[top].sum() / frauds)


def ranking_metrics(labels: np.ndarray, risk: np.ndarray) -> dict[str, Any]:
    """Counts, ROC AUC, average precision and recall at each of ``DECLINE_RATES``."""
    labels = np.asarray(labels, dtype=np.int64)
    risk = np.asarray(risk, dtype=np.float64)
    frauds = int(labels.sum())
    both = 0 < frauds < len(labels)
    out: dict[str, Any] = {
        "rows": len(labels),
        "frauds": frauds,
        "fraud_rate": frauds / len(labels) if len(labels) else None,
        "roc_auc": float(roc_auc_score(labels, risk)) if both else None,
        "average_precision": float(average_precision_score(labels, risk)) if both else None,
    }
    for rate in DECLINE_RATES:
        out[f"recall_at_{rate:.0%}_decline"] = recall_at_rate(labels, risk, rate)
    return out


def payer_key(frame: pd.DataFrame) -> pd.Series:
    """The card, else the payment account, else the customer: who paid."""
    key = frame["card_fingerprint"].astype("string")
    for fallback in ("payment_method_account", "customer_key"):
        key = key.fillna(frame[fallback].astype("string"))
    return key


def card_precision_at_k(frame: pd.DataFrame, risk: np.ndarray, k: int = CP_K) -> float | None:
    """Daily CP@k averaged over days (see the module docstring)."""
    if len(frame) == 0:
        return None
    daily = pd.DataFrame(
        {
            "day": np.floor_divide(frame["event_time"].to_numpy(), SECONDS_PER_DAY),
            "payer": payer_key(frame).to_numpy(),
            "risk": risk,
            "fraud": frame["label"].to_numpy() == 1,
        }
    )
    per_payer = daily.groupby(["day", "payer"], sort=False).agg(
        risk=("risk", "max"), fraud=("fraud", "any")
    )
    per_payer = per_payer.sort_values("risk", ascending=False, kind="stable")
    top = per_payer.groupby(level="day", sort=False).head(k)
    return float(top.groupby(level="day")["fraud"].mean().mean())


def decision_metrics(labels: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    """Rate, precision and recall of a yes/no decision (decline, or review and worse)."""
    labels = np.asarray(labels, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    hits = int((labels & flagged).sum())
    return {
        "rate": float(flagged.mean()) if len(flagged) else None,
        "precision": hits / int(flagged.sum()) if flagged.any() else None,
        "recall": hits / int(labels.sum()) if labels.any() else None,
    }


def threshold_metrics(
    frame: pd.DataFrame, scores: np.ndarray, thresholds: Mapping[str, Thresholds]
) -> dict[str, Any]:
    """Decline and review-or-worse by the model's score against each vertical's cut-offs."""
    verticals = frame["vertical"].to_numpy()
    decline = np.zeros(len(frame), dtype=bool)
    review = np.zeros(len(frame), dtype=bool)
    for vertical, cut in thresholds.items():
        rows = verticals == vertical
        decline |= rows & (scores >= cut.decline)
        review |= rows & (scores >= cut.review)
    labels = frame["label"].to_numpy() == 1
    return {
        "decline": decision_metrics(labels, decline),
        "review_or_decline": decision_metrics(labels, review),
    }


def model_metrics(
    frame: pd.DataFrame,
    probabilities: np.ndarray,
    scores: np.ndarray | None = None,
    thresholds: Mapping[str, Thresholds] | None = None,
) -> dict[str, Any]:
    """Every metric of the module docstring for one scored, labelled period."""
    labels = (frame["label"].to_numpy() == 1).astype(np.int64)
    out = ranking_metrics(labels, probabilities)
    out[f"card_precision_at_{CP_K}"] = card_precision_at_k(frame, probabilities)
    verticals = frame["vertical"].to_numpy()
    out["by_vertical"] = {
        v: ranking_metrics(labels[verticals == v], probabilities[verticals == v])
        for v in VERTICALS
        if (verticals == v).any()
    }
    out["by_fraud_pattern"] = pattern_recall(frame, labels, probabilities)
    if scores is not None and thresholds is not None:
        out["at_thresholds"] = threshold_metrics(frame, scores, thresholds)
        for v, metrics in out["by_vertical"].items():
            rows = verticals == v
            metrics["at_thresholds"] = threshold_metrics(frame[rows], scores[rows], thresholds)
    return out


def pattern_recall(frame: pd.DataFrame, labels: np.ndarray, risk: np.ndarray) -> dict[str, Any]:
    """For each fraud pattern: its frauds, and the share of them in the riskiest 1 % / 5 %."""
    if "fraud_pattern" not in frame.columns or len(labels) == 0:
        return {}
    patterns = frame["fraud_pattern"].astype("string").fillna("").to_numpy()
    order = np.argsort(-risk, kind="stable")
    in_top = {}
    for rate in DECLINE_RATES:
        top = np.zeros(len(labels), dtype=bool)
        top[order[: max(1, int(np.floor(rate * len(labels))))]] = True
        in_top[rate] = top
    out: dict[str, Any] = {}
    for pattern in sorted(set(patterns[labels == 1]) - {""}):
        rows = (patterns == pattern) & (labels == 1)
        out[pattern] = {"frauds": int(rows.sum())} | {
            f"recall_at_{rate:.0%}_decline": float(in_top[rate][rows].mean())
            for rate in DECLINE_RATES
        }
    return out


def save_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], out_dir: Path, prefix: str = ""
) -> dict[str, str]:
    """PR and ROC curves of each named (labels, risk) pair, one PNG per kind of curve."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for kind in ("pr", "roc"):
        figure, axes = plt.subplots(figsize=(6, 5), dpi=110)
        for name, (labels, risk) in curves.items():
            if not 0 < labels.sum() < len(labels):
                continue
            if kind == "pr":
                precision, recall, _ = precision_recall_curve(labels, risk)
                ap = average_precision_score(labels, risk)
                axes.plot(recall, precision, label=f"{name} (AP {ap:.3f})")
            else:
                fpr, tpr, _ = roc_curve(labels, risk)
                auc = roc_auc_score(labels, risk)
                axes.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
        if kind == "pr":
            axes.set(xlabel="recall", ylabel="precision", title="Precision–recall")
        else:
            axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
            axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right" if kind == "roc" else "upper right", fontsize=8)
        path = out_dir / f"{prefix}{kind}.png"
        figure.tight_layout()
        figure.savefig(path)
        plt.close(figure)
        paths[kind] = str(path)
    return paths


def weekly_metrics(frame: pd.DataFrame, risk: np.ndarray) -> dict[str, Any]:
    """Ranking metrics week by week (Monday, UTC), to see drift in time order."""
    weeks = pd.to_datetime(frame["event_time"].to_numpy(), unit="s", utc=True)
    start = (weeks - pd.to_timedelta(weeks.day_of_week, unit="D")).strftime("%Y-%m-%d").to_numpy()
    labels = (frame["label"].to_numpy() == 1).astype(np.int64)
    return {
        week: ranking_metrics(labels[start == week], risk[start == week])
        for week in sorted(set(start))
    }


def rule_outcomes(frame: pd.DataFrame, rules_dir: Path) -> dict[str, Any]:
    """Run a rule set over scored rows: per-row strength and adjustment, per-rule hits.

    The strength and adjustment are the policy's rule step (``policy.rule_effects_frame``).
    """
    from service.rules.rulebook import load_ruleset

    ruleset = load_ruleset(rules_dir)
    hits = ruleset.evaluate_frame(frame)
    strength, adjustment = rule_effects_frame(hits, ruleset.rules)
    return {
        "version": ruleset.version,
        "strength": strength,
        "adjustment": adjustment,
        "by_rule": by_rule(hits, ruleset.rules, frame["label"].to_numpy() == 1),
        "errors": hits.attrs.get("rule_errors", {}),
    }


def by_rule(hits: pd.DataFrame, rules: Sequence[Any], labels: np.ndarray) -> dict[str, Any]:
    """Each rule's mode, action, hits, and the precision and recall of its hits."""
    out: dict[str, Any] = {}
    for rule in rules:
        fired = hits[rule.rule_id].to_numpy(dtype=bool)
        out[rule.rule_id] = {
            "mode": rule.mode,
            "action": rule.action,
            "hits": int(fired.sum()),
            "precision": float(labels[fired].mean()) if fired.any() else None,
            "recall": float(fired[labels].mean()) if labels.any() else None,
        }
    return out


def _decisions(labels: np.ndarray, strength: np.ndarray) -> dict[str, Any]:
    return {
        "decline": decision_metrics(labels, strength >= STRENGTH["decline"]),
        "review_or_decline": decision_metrics(labels, strength >= STRENGTH["review"]),
        "challenge_or_worse": decision_metrics(labels, strength >= STRENGTH["challenge"]),
    }


def evaluate(
    log: pd.DataFrame,
    *,
    registry: Path | str | None = None,
    bundle: ModelBundle | None = None,
    rules_dir: Path | str | None = None,
    include_rules: bool = True,
    out_dir: Path | str | None = None,
    since: float | None = None,
    secret: bytes | None = None,
    fx: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score a labelled log point in time: model alone, rules alone, and combined.

    The model is ``bundle`` or the latest in ``registry``; the rules come from
    ``rules_dir`` (the service's packs by default; ``include_rules=False`` skips them).
    The combined decision is the policy's without lists: the score plus the active score
    rules' adjustments against the vertical's thresholds, and the strongest of that and
    the active rules' actions. PR and ROC curves go to ``out_dir`` when given.
    """
    from service.rules.rulebook import load_ruleset
    from service.settings import DEFAULT_DEGRADED, DEFAULT_RULES_DIR
    from training.dataset import build_dataset

    if bundle is None:
        if registry is None:
            raise ValueError("give a registry or a bundle")
        bundle = load_latest(registry)
        if bundle is None:
            raise ValueError(f"no model is registered in {registry}")
    dataset = build_dataset(log, secret=secret, fx=fx, progress=progress)
    time_ = dataset["event_time"].to_numpy(dtype=np.float64)
    keep = dataset["label"].notna().to_numpy()
    if since is not None:
        keep = keep & (time_ >= since)
    frame = dataset.loc[keep]
    if frame.empty:
        raise ValueError("the log holds no labelled rows to evaluate on")
    probabilities, scores = bundle.predict_frame(frame)
    labels = frame["label"].to_numpy() == 1
    result: dict[str, Any] = {
        "model_version": bundle.version,
        "rows": len(dataset),
        "evaluated_rows": len(frame),
        "period": {
            "start": pd.Timestamp(float(time_[keep].min()), unit="s", tz="UTC").isoformat(),
            "end": pd.Timestamp(float(time_[keep].max()), unit="s", tz="UTC").isoformat(),
        },
        "model": model_metrics(frame, probabilities, scores, bundle.thresholds),
    }
    result["model"]["by_week"] = weekly_metrics(frame, probabilities)
    curves = {"model": (labels.astype(np.int64), probabilities)}

    if include_rules:
        ruleset = load_ruleset(Path(rules_dir or DEFAULT_RULES_DIR))
        decided = decide_history(
            frame,
            ruleset=ruleset,
            model=bundle,
            policy=Policy(bundle.thresholds, DEFAULT_DEGRADED),
        )
        strength = decided.rule_strength
        rules = ranking_metrics(labels, strength.astype(np.float64))
        rules |= _decisions(labels, strength)
        rules |= {
            "version": ruleset.version,
            "by_rule": by_rule(decided.hits, ruleset.rules, labels),
        }
        rules["errors"] = decided.rule_errors
        verticals = frame["vertical"].to_numpy()
        combined_strength, adjusted = decided.strength, decided.score
        by_score = threshold_strengths(adjusted, verticals, bundle.thresholds)
        # Ranks by decision first, then by score within a decision.
        combined_risk = combined_strength * 1000.0 + adjusted + probabilities
        combined = ranking_metrics(labels, combined_risk) | _decisions(labels, combined_strength)
        combined[f"card_precision_at_{CP_K}"] = card_precision_at_k(frame, combined_risk)
        result["model"] |= {"decisions": _decisions(labels, by_score)}
        result["rules"] = rules
        result["combined"] = combined
        curves["rules"] = (labels.astype(np.int64), strength.astype(np.float64))
        curves["combined"] = (labels.astype(np.int64), combined_risk)
    if out_dir is not None:
        result["plots"] = save_curves(curves, Path(out_dir))
    return result
