"""A job whose import can be made slow (SLOW_IMPORT_S), so a resume holds the run's lock for a while before its session starts."""

from __future__ import annotations

import asyncio
import os
import time

from batchcli import Param, Service, Source, inject

# A resume takes the run directory's lock, then loads the project: this sleep is that window, made wide.
time.sleep(float(os.environ.get("SLOW_IMPORT_S", "0")))


@inject
class Numbers(Source[int]):
    """0 .. count-1; raises at ``crash_at`` (when not -1), which crashes the run."""

    def __init__(self, count: Param[int] = 10, crash_at: Param[int] = -1) -> None:
        self.count = count
        self.crash_at = crash_at

    def __iter__(self):
        for n in range(self.count):
            if n == self.crash_at:
                raise RuntimeError(f"the source broke at {n}")
            yield n

    def __len__(self) -> int:
        return self.count


@inject
class Nothing(Service[int]):
    """Succeeds, after ``sleep_s``."""

    def __init__(self, sleep_s: Param[float] = 0.0) -> None:
        self.sleep_s = sleep_s

    async def process(self, item: int) -> None:
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
