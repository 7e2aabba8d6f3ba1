r"""The store reply's Python side: ``Plan.values`` and the model's ``encode_one``, per payment.

What a catalogue change costs the scoring path after Redis has answered: the feature
values made from ``begin``'s window sums, then the model vector. Deterministic (made-up
sums, the garbage collector off while measuring), so that instruction counts compare
across revisions on a shared machine; ``--root`` runs another tree's ``service/`` (e.g.
``git archive REV service | tar -x -C /tmp/base``):

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python benchmarks/plan_values.py 200 [--root DIR] [--values-only]
    ... the same with 4200

and take (the second total - the first) / 4000 as the instructions per payment.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
from pathlib import Path


def main() -> None:
    """Make ``n`` payments' feature values (and model vectors) from made-up window sums."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=2000, help="payments (2000)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--values-only", action="store_true", help="without encode_one")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))
    from service.features.catalog import REQUEST_FEATURES
    from service.model.encoding import encode_one
    from service.stores.plan import PLAN

    rng = random.Random(5)
    raws = [[float(rng.randrange(0, 50)) for _ in range(PLAN.slot_count)] for _ in range(10)]
    request = {f.name: 1.0 for f in REQUEST_FEATURES}
    request.update(
        vertical="ecommerce", three_ds="none", payment_method_type="card", card_funding="debit"
    )
    gc.collect()
    gc.disable()
    for k in range(args.n):
        values = PLAN.values(raws[k % 10], 1234, 567)
        if not args.values_only:
            values.update(request)
            encode_one(values)


if __name__ == "__main__":
    main()
