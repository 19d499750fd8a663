"""Multiples of 5 fail; the Source's ``persist_failed`` appends each input it is handed to ``persisted``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, persisted: Param[Path], count: Param[int] = 200) -> None:
        self.persisted = persisted
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count

    def persist_failed(self, failed: list[int]) -> None:
        with self.persisted.open("a") as out:
            out.writelines(f"{item}\n" for item in failed)


@inject
class EveryFifthFails(Service[int]):
    def __init__(self, delay_s: Param[float] = 0.02) -> None:
        self.delay_s = delay_s

    async def process(self, item: int) -> None:
        await asyncio.sleep(self.delay_s)
        if item % 5 == 0:
            raise ValueError(f"{item} is a multiple of 5")
