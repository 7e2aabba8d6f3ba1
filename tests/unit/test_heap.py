"""The serving process's collector settings (``service.app.settle_heap``)."""

from __future__ import annotations

import gc

from service.app import YOUNG_COLLECTION_THRESHOLD, settle_heap


def test_settled_heap_is_frozen_and_a_burst_of_calls_collects_nothing() -> None:
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
        # what some 30 score calls in flight hold at once: at CPython's threshold of 700
        # this burst alone would start several young collections
        young = gc.get_stats()[0]["collections"]
        burst = [{"features": [i], "reasons": []} for i in range(3_000)]
        assert gc.get_stats()[0]["collections"] == young
        del burst
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
