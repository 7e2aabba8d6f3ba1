"""The decision path's own CPU, without Redis: what a change to it costs.

Validates, normalises, digests, computes request features, decides (rules, model and
policy, ``decide_payment``), builds the response and the decision record and encodes both,
for ``N`` payments of ``micro.py``'s traffic mix (velocity features made up, no list
matches). Without ``--model`` no model scores (as a service without one); ``--model DIR``
scores with that registered model and ``--shadow DIR`` adds a shadow model beside it (the
cost of a shadow is the difference between the two). Deterministic, so that instruction
counts compare across revisions on a shared machine:

    valgrind --tool=callgrind .venv/bin/python benchmarks/decision_path.py 200 [--model DIR]
    valgrind --tool=callgrind .venv/bin/python benchmarks/decision_path.py 1200 [--model DIR]

and take (the second total - the first) / 1000 as the instructions per payment.

``--ab ROUNDS`` (with ``--model`` and ``--shadow``) measures the shadow's cost in one
process: the same payments are decided with the shadow off and on, in alternating order
(off-on, on-off, ...) for ROUNDS rounds, and the CPU per payment of each arm, the
difference per round and its median are printed (``--json``: one object). Both arms share
the process, its caches and the machine's load of the moment, so the difference is fair
on a loaded machine where two processes' or two services' figures are not.

    .venv/bin/python benchmarks/decision_path.py 2000 --model M --shadow S --ab 15 [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

import micro

from service.api.schemas import decode_score
from service.decision.policy import Policy, decide_row
from service.decision.record import decision_record, encode_record
from service.decision.scoring import response_of
from service.features.catalog import VELOCITY_FEATURES, feature_row
from service.features.request import request_values
from service.model.bundle import ModelBundle
from service.normalisation.normalise import normalise
from service.normalisation.pseudonymise import Pseudonymiser
from service.reference.tables import FxTable
from service.rules.packfile import RuleLimits
from service.rules.rulebook import load_ruleset
from service.settings import DEFAULT_FX_RATES, DEFAULT_RULES_DIR, Settings


@dataclass
class DecisionPath:
    """Everything the decision path needs but the payments: built once, run many times."""

    model: ModelBundle | None
    shadow: ModelBundle | None

    def __post_init__(self) -> None:
        self.settings = Settings()
        self.fx = FxTable.load(DEFAULT_FX_RATES)
        self.pseudonymiser = Pseudonymiser(b"benchmark-secret-0123456789abcdef")
        # no compile deadline: under callgrind on a loaded machine the packs take over 5 s
        self.ruleset = load_ruleset(DEFAULT_RULES_DIR, RuleLimits(seconds=3600))
        self.policy = Policy.of(self.settings, self.model)
        self.encoder = msgspec.json.Encoder()
        self.velocity = {f.name: float(i % 5) for i, f in enumerate(VELOCITY_FEATURES)}

    def run(self, bodies: list[bytes], shadow: ModelBundle | None) -> float:
        """Decide every body (with ``shadow`` in shadow, or none); CPU seconds spent."""
        model, ruleset, fx, policy = self.model, self.ruleset, self.fx, self.policy
        started = time.process_time()
        for body in bodies:
            valid = decode_score(body, currencies=fx.currencies)
            payment = normalise(
                valid.request,
                fx=fx,
                pseudonymiser=self.pseudonymiser,
                now=1.8e9,
                clock="server",
                max_skew_seconds=300,
                ip=valid.ip,
                digest_key=b"digest-key",
            ).payment
            row = feature_row(request_values(payment), self.velocity)
            verdict = decide_row(
                row,
                list_matches=[],
                ruleset=ruleset,
                model=model,
                policy=policy,
                shadow=shadow,
            )
            decision = response_of(
                payment.transaction_id,
                verdict,
                ruleset_version=ruleset.version,
                model_version=model.version if model is not None else None,
                degraded=[] if model is not None else ["model"],
            )
            record = decision_record(
                payment,
                row,
                verdict.rules,
                decision,
                1.5,
                shadow_model_version=shadow.version if shadow is not None else None,
                shadow_model_probability=verdict.shadow_probability,
            )
            encode_record(record)
            self.encoder.encode(decision)
        return time.process_time() - started


def payments(n: int) -> list[bytes]:
    """``n`` request bodies of ``micro.py``'s traffic mix, the same on every run."""
    rng = random.Random(5)
    return [micro.body(rng, f"p{i}") for i in range(n)]


def main(n: int, model_dir: Path | None = None, shadow_dir: Path | None = None) -> None:
    """Decide ``n`` payments (with the model and shadow given) and print the CPU per payment."""
    model = ModelBundle.load(model_dir) if model_dir is not None else None
    shadow = ModelBundle.load(shadow_dir) if shadow_dir is not None else None
    spent = DecisionPath(model, shadow).run(payments(n), shadow)
    parts = " + ".join(
        ["rules"] + ["model"] * (model is not None) + ["shadow"] * (shadow is not None)
    )
    print(f"{n} payments ({parts}), {spent / max(n, 1) * 1e6:.1f} µs of CPU each")


def shadow_ab(n: int, model_dir: Path, shadow_dir: Path, rounds: int) -> dict[str, object]:
    """The shadow off and on over the same ``n`` payments, alternating, for ``rounds`` rounds.

    Returns the CPU µs per payment of each arm per round, the differences (on - off) and
    their median, after one unmeasured run of each arm (warm caches, compiled kernels).
    """
    model, shadow = ModelBundle.load(model_dir), ModelBundle.load(shadow_dir)
    path = DecisionPath(model, shadow)
    bodies = payments(n)
    path.run(bodies, None)
    path.run(bodies, shadow)
    off: list[float] = []
    on: list[float] = []
    for round_ in range(rounds):
        arms = [(off, None), (on, shadow)]
        for spent, arm in arms if round_ % 2 == 0 else arms[::-1]:
            spent.append(path.run(bodies, arm) / n * 1e6)
    added = [b - a for a, b in zip(off, on, strict=True)]
    return {
        "payments": n,
        "rounds": rounds,
        "model": model.version,
        "shadow": shadow.version,
        "cpu_us_per_payment_off": [round(x, 2) for x in off],
        "cpu_us_per_payment_on": [round(x, 2) for x in on],
        "added_us_per_round": [round(x, 2) for x in added],
        "median_off_us": round(statistics.median(off), 2),
        "median_on_us": round(statistics.median(on), 2),
        "median_added_us": round(statistics.median(added), 2),
        "rounds_on_dearer": sum(x > 0 for x in added),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=2000, help="payments (2000)")
    parser.add_argument("--model", type=Path, help="a registered model's directory")
    parser.add_argument("--shadow", type=Path, help="a second model's directory, in shadow")
    parser.add_argument(
        "--ab", type=int, metavar="ROUNDS", help="shadow off and on, interleaved, in one process"
    )
    parser.add_argument("--json", action="store_true", help="--ab: print one JSON object")
    args = parser.parse_args()
    if args.ab is None:
        main(args.n, args.model, args.shadow)
    elif args.model is None or args.shadow is None or args.ab < 1:
        parser.error("--ab ROUNDS needs ROUNDS >= 1, --model and --shadow")
    else:
        result = shadow_ab(args.n, args.model, args.shadow, args.ab)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(
                f"{args.n} payments x {args.ab} rounds, shadow off / on interleaved: "
                f"median {result['median_off_us']} / {result['median_on_us']} µs of CPU each, "
                f"shadow adds {result['median_added_us']} µs per payment (median of the rounds' "
                f"differences: {result['added_us_per_round']}; "
                f"dearer with it in {result['rounds_on_dearer']} of {args.ab} rounds)"
            )
