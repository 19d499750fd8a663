"""The attempt-duration histogram of ``/metrics``: kept only while metrics are on.

Timing an attempt costs two clock reads and a bucket count, so nothing here is on the success path
unless ``metrics_port`` is set: the executor decides once, when it is built, whether its call is
wrapped by ``timed`` (``ItemCalls``), and a worker process times a chunk only when the chunk says so
(``Chunk.timed``) and sends the counts back with its result (``ChunkResult.durations``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, Awaitable, Callable

BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Upper bounds (seconds, inclusive) of the buckets: items from a millisecond to ten minutes; longer ones count in +Inf."""

OUTCOMES = ("succeeded", "failed")
"""The ``outcome`` label: whether ``process`` returned or raised (a throttle or a timeout is a failed attempt)."""

SUCCEEDED, FAILED = 0, 1


class Durations:
    """How long attempts took, by outcome: a count per bucket and a sum, plain ints and floats.

    Counted on one thread (the run's loop, or a worker's); a scrape reads it from another, so it may
    see the sum of one attempt more than the counts: Prometheus tolerates that.
    """

    def __init__(self) -> None:
        self.counts = [[0] * (len(BOUNDS) + 1) for _ in OUTCOMES]
        """Per outcome, attempts in each bucket (not cumulative); the last is above every bound."""
        self.sums: list[float] = [0.0 for _ in OUTCOMES]
        """Per outcome, the seconds all attempts took."""

    def count(self, outcome: int, seconds: float) -> None:
        """Count one attempt of ``outcome`` (``SUCCEEDED`` or ``FAILED``) that took ``seconds``."""
        self.counts[outcome][bisect_left(BOUNDS, seconds)] += 1
        self.sums[outcome] += seconds

    def add(self, other: Durations) -> None:
        """Add the attempts ``other`` counted (a worker's chunk) to these."""
        for mine, theirs in zip(self.counts, other.counts):
            for index, count in enumerate(theirs):
                mine[index] += count
        for index, seconds in enumerate(other.sums):
            self.sums[index] += seconds


def timed(call: Callable[[Any], Awaitable[Any]], durations: Durations) -> Callable[[Any], Awaitable[Any]]:
    """``call`` counting how long each attempt takes into ``durations``; a cancelled attempt is not counted."""
    clock = time.perf_counter
    count = durations.count

    async def timed_call(item: Any) -> Any:
        start = clock()
        try:
            result = await call(item)
        except Exception:
            count(FAILED, clock() - start)
            raise
        count(SUCCEEDED, clock() - start)
        return result

    return timed_call


def timed_sync(process: Callable[[Any], Any], durations: Durations) -> Callable[[Any], Any]:
    """``timed`` for a sync ``process`` called inline (a worker running one item at a time)."""
    clock = time.perf_counter
    count = durations.count

    def timed_process(item: Any) -> Any:
        start = clock()
        try:
            result = process(item)
        except Exception:
            count(FAILED, clock() - start)
            raise
        count(SUCCEEDED, clock() - start)
        return result

    return timed_process
