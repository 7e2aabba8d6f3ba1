"""The shipped rule packs and a model's thresholds on traffic they were not tuned on.

Trains a model on one simulation (``--train-seed``) and decides, with the shipped packs
(or ``--rules DIR``) and that model's per-vertical thresholds, every payment of another
(``--seed``, another start date), through the one decision function
(``service.decision.policy.decide_history``). Prints, as JSON: the share of labelled fraud
declined, sent to review or worse and to challenge or worse; the share of legitimate
payments declined and sent to review or challenge; the same per vertical and against the
simulation's truth (``fraud_pattern``: frauds never labelled count as fraud, friendly
fraud as legitimate); and each rule's false-positive load (its hits on legitimate payments,
as a share of them) with its precision, largest load first.

Targets (issue 16): at least 70 % of fraud stopped, at most 1 % of legitimate payments
declined and at most 5 % sent to review or challenge.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/packs_untuned.py [--rows 200000]
        [--seed 2027] [--train-seed 7] [--rules DIR] [--registry DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from service.decision.policy import STRENGTH, Policy, decide_history
from service.model.bundle import ModelBundle, load_latest
from service.rules.rulebook import load_ruleset
from service.settings import DEFAULT_DEGRADED, DEFAULT_RULES_DIR
from training.dataset import build_dataset
from training.simulate import simulate
from training.train import train


def shares(fraud: np.ndarray, strength: np.ndarray) -> dict[str, Any]:
    """What the decisions did to fraud and to legitimate payments."""
    legit = ~fraud

    def share(mask: np.ndarray, of: np.ndarray) -> float | None:
        return round(float(mask[of].mean()), 4) if of.any() else None

    decline = strength == STRENGTH["decline"]
    review = strength == STRENGTH["review"]
    challenge = strength == STRENGTH["challenge"]
    return {
        "frauds": int(fraud.sum()),
        "legitimate": int(legit.sum()),
        "fraud_declined": share(decline, fraud),
        "fraud_review_or_decline": share(decline | review, fraud),
        "fraud_stopped_any": share(decline | review | challenge, fraud),
        "legit_declined": share(decline, legit),
        "legit_review_or_challenge": share(review | challenge, legit),
    }


def ruleset_rule(ruleset: Any, rule_id: str) -> Any:
    """The rule of ``ruleset`` with this id."""
    return next(r for r in ruleset.rules if r.rule_id == rule_id)


def main() -> None:
    """Train (or load), decide the other simulation, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=2027, help="the traffic decided")
    parser.add_argument("--start", default="2027-01-04", help="its first day")
    parser.add_argument("--train-seed", type=int, default=7, help="the model's training log")
    parser.add_argument("--rules", type=Path, default=Path(DEFAULT_RULES_DIR))
    parser.add_argument("--registry", type=Path, help="use this registry's live model")
    parser.add_argument("--realism", default="hard", choices=("hard", "easy"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.registry:
            bundle = load_latest(args.registry)
        else:
            log = simulate(args.rows, seed=args.train_seed, realism=args.realism)
            bundle = ModelBundle.load(train(log, registry=Path(tmp) / "models").directory)
    if bundle is None:
        raise SystemExit("no model")
    log = simulate(args.rows, seed=args.seed, start=args.start, realism=args.realism)
    frame = build_dataset(log)
    ruleset = load_ruleset(args.rules)
    decided = decide_history(
        frame, ruleset=ruleset, model=bundle, policy=Policy(bundle.thresholds, DEFAULT_DEGRADED)
    )
    strength = decided.strength
    labelled = frame["label"].to_numpy() == 1
    pattern = frame["fraud_pattern"].astype("string").fillna("").to_numpy()
    truth = (pattern != "") & (pattern != "friendly_fraud")
    verticals = frame["vertical"].to_numpy()
    legit = ~labelled
    by_rule = []
    for rule in ruleset.rules:
        fired = decided.hits[rule.rule_id].to_numpy(dtype=bool)
        by_rule.append(
            {
                "rule": rule.rule_id,
                "mode": rule.mode,
                "action": rule.action,
                "hits": int(fired.sum()),
                "legit_hits": int((fired & legit).sum()),
                "false_positive_load": round(float(fired[legit].mean()), 5),
                "precision": round(float(labelled[fired].mean()), 3) if fired.any() else None,
            }
        )
    by_rule.sort(key=lambda r: -r["false_positive_load"])
    # Why legitimate payments were declined: a declining rule, or the (adjusted) score.
    active_declines = [
        r.rule_id for r in ruleset.rules if r.mode == "active" and r.action == "decline"
    ]
    rule_decline = decided.hits[active_declines].to_numpy(dtype=bool).any(axis=1)
    # compliance: rules allow lists cannot override (age checks, licensing)
    compliance = [r.rule_id for r in ruleset.rules if r.rule_id in active_declines]
    compliance = [i for i in compliance if not ruleset_rule(ruleset, i).allowlist_bypass]
    compliance_decline = decided.hits[compliance].to_numpy(dtype=bool).any(axis=1)
    declined = strength == STRENGTH["decline"]
    risk_declined = declined & ~compliance_decline
    cuts = np.array([bundle.thresholds[v].decline for v in verticals])
    attribution = {
        "legit_declined_by_a_rule": round(float((declined & rule_decline)[legit].mean()), 4),
        "legit_declined_by_score_only": round(float((declined & ~rule_decline)[legit].mean()), 4),
        "legit_model_score_over_decline_cut": round(
            float((decided.model_score >= cuts)[legit].mean()), 4
        ),
        "compliance_rules": compliance,
        "legit_declined_by_compliance_rules": round(
            float((declined & compliance_decline)[legit].mean()), 4
        ),
        "legit_declined_for_risk": round(float(risk_declined[legit].mean()), 4),
        "fraud_declined_for_risk": round(float(risk_declined[labelled].mean()), 4),
        "legit_declined_for_risk_by_vertical": {
            v: round(float(risk_declined[legit & (verticals == v)].mean()), 4)
            for v in sorted(set(verticals))
        },
        "fraud_declined_by_score_only": round(
            float((declined & ~rule_decline)[labelled].mean()), 4
        ),
    }
    result = {
        "rows": len(frame),
        "seed": args.seed,
        "train_seed": args.train_seed if not args.registry else None,
        "model_version": bundle.version,
        "ruleset_version": ruleset.version,
        "thresholds": msgspec.to_builtins(bundle.thresholds),
        "labels": shares(labelled, strength),
        "truth": shares(truth, strength),
        "decline_attribution": attribution,
        "by_vertical": {
            v: shares(labelled[verticals == v], strength[verticals == v])
            for v in sorted(set(verticals))
        },
        "by_rule": [r for r in by_rule if r["hits"]],
    }
    print(json.dumps(result, indent=2, default=lambda o: o.item() if hasattr(o, "item") else o))


if __name__ == "__main__":
    main()
