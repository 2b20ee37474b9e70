"""The timing helper shared by the benchmark scripts (run them from any folder)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call.

    Calls that take seconds (POT unrolled, networkx references) get at most three
    timed calls.
    """
    start = time.perf_counter()
    fn()
    if time.perf_counter() - start > 2.0:
        repeats = min(repeats, 3)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
