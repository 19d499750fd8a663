"""Benchmark job: ``count`` no-op items with an ``item_key``; the process kills itself (SIGKILL) at item ``stop_at``."""

from __future__ import annotations

import os
import signal

from batchcli import Param, Service, Source, inject


@inject
class Rows(Source[int]):
    def __init__(self, count: Param[int] = 1) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count

    def item_key(self, item: int) -> str:
        return f"row-{item:012d}"


@inject
class Work(Service[int]):
    def __init__(self, stop_at: Param[int] = -1) -> None:
        self.stop_at = stop_at

    async def process(self, item: int) -> None:
        if item == self.stop_at:
            os.kill(os.getpid(), signal.SIGKILL)
