"""Benchmark job: ``count`` items whose ``process`` raises at once (a failure flood)."""

from __future__ import annotations

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 1) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Failing(Service[int]):
    async def process(self, item: int) -> None:
        raise ValueError(f"item {item} is rejected")
