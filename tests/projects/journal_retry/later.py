"""Items 0 .. 19; the odd ones fail until ``fix``. Each attempt is appended to ``ledger``; ``sleep_s`` slows each one."""

from __future__ import annotations

import asyncio

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __iter__(self):
        return iter(range(20))

    def __len__(self) -> int:
        return 20


@inject
class OddFail(Service[int]):
    def __init__(self, ledger: Param[str], fix: Param[bool] = False, sleep_s: Param[float] = 0.0) -> None:
        self.ledger, self.fix, self.sleep_s = ledger, fix, sleep_s

    async def process(self, item: int) -> None:
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        with open(self.ledger, "a") as out:
            out.write(f"{item} {'ok' if self.fix or item % 2 == 0 else 'failed'}\n")
        if item % 2 and not self.fix:
            raise ValueError(f"item {item} is odd")
