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
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

import micro

from service.api.schemas import decode_score
from service.decision.policy import Policy, decide_payment
from service.decision.record import decision_record, encode_record
from service.decision.scoring import response_of
from service.features.catalog import VELOCITY_FEATURES
from service.features.request import request_features
from service.model.bundle import ModelBundle
from service.normalisation.normalise import normalise
from service.normalisation.pseudonymise import Pseudonymiser
from service.reference.tables import FxTable
from service.rules.rulebook import load_ruleset
from service.settings import DEFAULT_FX_RATES, DEFAULT_RULES_DIR, Settings


def main(n: int, model_dir: Path | None = None, shadow_dir: Path | None = None) -> None:
    """Decide ``n`` payments (with the model and shadow given) and print the CPU per payment."""
    settings = Settings()
    fx = FxTable.load(DEFAULT_FX_RATES)
    pseudonymiser = Pseudonymiser(b"benchmark-secret-0123456789abcdef")
    ruleset = load_ruleset(DEFAULT_RULES_DIR)
    model = ModelBundle.load(model_dir) if model_dir is not None else None
    shadow = ModelBundle.load(shadow_dir) if shadow_dir is not None else None
    policy = Policy.of(settings, model)
    encoder = msgspec.json.Encoder()
    rng = random.Random(5)
    bodies = [micro.body(rng, f"p{i}") for i in range(n)]
    velocity = {f.name: float(i % 5) for i, f in enumerate(VELOCITY_FEATURES)}
    started = time.process_time()
    for body in bodies:
        valid = decode_score(body, currencies=fx.currencies)
        payment = normalise(
            valid.request,
            fx=fx,
            pseudonymiser=pseudonymiser,
            now=1.8e9,
            clock="server",
            max_skew_seconds=300,
            ip=valid.ip,
            digest_key=b"digest-key",
        ).payment
        features = request_features(payment)
        features.update(velocity)
        verdict = decide_payment(
            features, list_matches=[], ruleset=ruleset, model=model, policy=policy, shadow=shadow
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
            features,
            verdict.rules,
            decision,
            1.5,
            shadow_model_version=shadow.version if shadow is not None else None,
            shadow_model_probability=verdict.shadow_probability,
        )
        encode_record(record)
        encoder.encode(decision)
    spent = time.process_time() - started
    parts = " + ".join(
        ["rules"] + ["model"] * (model is not None) + ["shadow"] * (shadow is not None)
    )
    print(f"{n} payments ({parts}), {spent / max(n, 1) * 1e6:.1f} µs of CPU each")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=2000, help="payments (2000)")
    parser.add_argument("--model", type=Path, help="a registered model's directory")
    parser.add_argument("--shadow", type=Path, help="a second model's directory, in shadow")
    args = parser.parse_args()
    main(args.n, args.model, args.shadow)
