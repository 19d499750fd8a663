"""``later.py`` with an ``item_key``: items 0 .. 19 keyed ``item-N``; the odd ones fail until ``fix``; ``stop_at``
as in ``later.py``."""

from __future__ import annotations

import asyncio
import os
import signal

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __iter__(self):
        return iter(range(20))

    def __len__(self) -> int:
        return 20

    def item_key(self, item: int) -> str:
        return f"item-{item}"


@inject
class OddFail(Service[int]):
    def __init__(self, ledger: Param[str], fix: Param[bool] = False, stop_at: Param[int] = -1) -> None:
        self.ledger, self.fix, self.stop_at = ledger, fix, stop_at

    async def process(self, item: int) -> None:
        with open(self.ledger, "a") as out:
            out.write(f"{item} {'ok' if self.fix or item % 2 == 0 else 'failed'}\n")
        if item % 2 and not self.fix:
            raise ValueError(f"item {item} is odd")
        if item == self.stop_at and not os.path.exists(f"{self.ledger}.stopped"):  # stop as a Ctrl-C does, once
            open(f"{self.ledger}.stopped", "w").close()
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.5)  # the stop's handler runs on the main thread: not after the next item
