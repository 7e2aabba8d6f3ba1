"""Training's thread count: the free cores, unless the operator says otherwise."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info

from training import threads
from training.threads import THREADS_ENV, limited_threads, training_threads


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_cpus", lambda: 4)


@pytest.mark.parametrize(
    ("load", "expected"),
    [(0.0, 4), (1.0, 4), (2.0, 3), (3.6, 1), (12.0, 1)],  # this process counts for one
)
def test_the_free_cores_at_least_one(monkeypatch, load: float, expected: int) -> None:
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load))
    assert training_threads() == expected


def test_the_operator_overrides_and_a_bad_value_is_named(monkeypatch) -> None:
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert training_threads() == 2
    monkeypatch.setenv(THREADS_ENV, "3")  # ours first
    assert training_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ValueError, match=THREADS_ENV):
        training_threads()


def _openmp_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]


def test_the_pools_are_limited_inside_the_block_only() -> None:
    import sklearn.ensemble  # noqa: F401  (loads scikit-learn's OpenMP runtime)

    before = _openmp_threads()
    assert before, "scikit-learn's OpenMP pool is loaded"
    with limited_threads(1) as used:
        assert used == 1
        assert _openmp_threads() == [1] * len(before)
    assert _openmp_threads() == before
