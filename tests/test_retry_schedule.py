"""The one retry scheduler shared by every executor: how long it holds a failed item before the next attempt."""

from __future__ import annotations

import random
from typing import Any

from batchcli.executors.retries import Attempts, RetryPolicy, RetryScheduler
from batchcli.load.configuration import Configuration
from batchcli.outcome import Tally


class _Timer:
    def cancel(self) -> None:
        pass


class RecordingLoop:
    """Stands in for the run's loop: records each retry's delay and hands the item back at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def call_later(self, delay: float, callback: Any, *args: Any) -> _Timer:
        self.delays.append(delay)
        self.due = (callback, args)
        return _Timer()


def delays_until_final(config: Configuration) -> tuple[list[float], Tally]:
    """Fail one item on every attempt; the delays the scheduler waited between them, and the tally."""
    tally = Tally()
    loop = RecordingLoop()
    scheduler = RetryScheduler(RetryPolicy(config, [ConnectionError]), tally, clock=lambda: 0.0)
    scheduler.bind(loop)  # type: ignore[arg-type]
    handed_back: list[Attempts] = []
    attempts: Attempts | None = None
    while not scheduler.failed(0, "item", attempts, ConnectionError("down"), lambda o, i, a: handed_back.append(a), False):
        callback, args = loop.due
        callback(*args)
        attempts = handed_back.pop()
        scheduler.started()  # as an executor does when it starts the item again
    return loop.delays, tally


def test_no_delay_exceeds_backoff_max_s_over_random_settings() -> None:
    """Over hundreds of random backoff_s/backoff_max_s/max_retries settings, every delay stays within backoff_max_s."""
    rng = random.Random(11)
    for _ in range(400):
        backoff_s = rng.choice([0.0, rng.uniform(0.01, 10), float(rng.randint(1, 30))])
        backoff_max_s = backoff_s + rng.choice([0.0, rng.uniform(0, 5), rng.uniform(0, 100)])
        max_retries = rng.randint(0, 15)
        config = Configuration(backoff_s=backoff_s, backoff_max_s=backoff_max_s, max_retries=max_retries)
        delays, tally = delays_until_final(config)
        settings = f"backoff_s={backoff_s}, backoff_max_s={backoff_max_s}, max_retries={max_retries}"
        assert len(delays) == max_retries, settings
        assert all(0 <= d <= backoff_max_s for d in delays), f"{settings}: {delays}"
        assert tally.failed == 1 and tally.retrying == 0, settings


def test_the_reported_case_stays_under_its_cap() -> None:
    """backoff_s=8, backoff_max_s=10 (which once waited 13.97 s) never waits longer than 10 s."""
    random.seed(3)
    for _ in range(200):
        delays, _ = delays_until_final(Configuration(backoff_s=8, backoff_max_s=10, max_retries=4))
        assert max(delays) <= 10
        assert delays[0] >= 8  # the first delay is still backoff_s plus jitter


def test_zero_backoff_means_no_wait() -> None:
    """backoff_s=0 retries at once: every delay is exactly zero."""
    delays, _ = delays_until_final(Configuration(backoff_s=0, backoff_max_s=0, max_retries=5))
    assert delays == [0.0] * 5
