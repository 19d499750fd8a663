"""Items of known durations for the attempt-duration histogram: even ones take ``fast_s``, odd ones ``slow_s``.

The last ``failing`` items raise (after their sleep). With ``hold`` set, ``finish()`` writes ``HOLD.waiting``
and waits for ``HOLD`` to exist, so a test can scrape /metrics after every item and before the run ends.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    """0 .. count-1."""

    def __init__(self, count: Param[int] = 8) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Sleeper(Service[int]):
    """Sleeps ``fast_s`` or ``slow_s`` (asyncio), then fails if the item is among the last ``failing``."""

    def __init__(
        self, count: Param[int] = 8, fast_s: Param[float] = 0.03, slow_s: Param[float] = 0.6,
        failing: Param[int] = 1, hold: Param[str] = "",
    ) -> None:
        self.count, self.fast_s, self.slow_s, self.failing, self.hold = count, fast_s, slow_s, failing, hold

    async def process(self, item: int) -> None:
        await asyncio.sleep(self.slow_s if item % 2 else self.fast_s)
        if item >= self.count - self.failing:
            raise ValueError(f"item {item} fails")

    def finish(self) -> None:
        if self.hold:
            hold = Path(self.hold)
            hold.with_suffix(".waiting").touch()
            deadline = time.monotonic() + 60
            while not hold.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
