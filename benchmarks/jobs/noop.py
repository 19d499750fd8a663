"""Benchmark job: ``count`` items that do nothing (``sleep_ms`` > 0 makes each wait that long)."""

from __future__ import annotations

import asyncio

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 1, sleep_ms: Param[float] = 0.0) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Noop(Service[int]):
    def __init__(self, sleep_ms: Param[float] = 0.0) -> None:
        self.delay = sleep_ms / 1000

    async def process(self, item: int) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
