"""How many threads training's fits use.

scikit-learn's ``HistGradientBoostingClassifier`` parallelises with OpenMP over every core.
On a machine other processes share, OpenMP threads spin-wait for each other and a fit gets
several times slower than on one thread (``benchmarks/README.md``, "train on a million
rows"). So training takes the cores that are free: the CPUs this process may run on less
the load the others put on them (the one-minute load average less this process itself),
at least one. ``RISKSCORE_TRAIN_THREADS`` (or ``OMP_NUM_THREADS``, if set) overrides it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

THREADS_ENV = "RISKSCORE_TRAIN_THREADS"


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def training_threads() -> int:
    """The thread count for training's fits (module docstring)."""
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(f"{name} must be a whole number, not {value!r}") from None
    cpus = _cpus()
    try:
        others = max(0.0, os.getloadavg()[0] - 1.0)
    except OSError:
        others = 0.0
    return max(1, min(cpus, round(cpus - others)))


@contextmanager
def limited_threads(threads: int | None = None) -> Iterator[int]:
    """Run the block with OpenMP and BLAS pools limited to ``threads`` (by default as above)."""
    threads = threads if threads is not None else training_threads()
    with threadpool_limits(limits=threads):
        yield threads
