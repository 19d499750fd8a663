"""Items 0 .. 19; the odd ones fail until ``fix``. Each attempt is appended to ``ledger``; ``sleep_s`` slows each one,
and with ``stop_at`` the run stops itself as a Ctrl-C does after that item (once)."""

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


@inject
class OddFail(Service[int]):
    def __init__(
        self, ledger: Param[str], fix: Param[bool] = False, sleep_s: Param[float] = 0.0, stop_at: Param[int] = -1
    ) -> None:
        self.ledger, self.fix, self.sleep_s, self.stop_at = ledger, fix, sleep_s, stop_at

    async def process(self, item: int) -> None:
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        with open(self.ledger, "a") as out:
            out.write(f"{item} {'ok' if self.fix or item % 2 == 0 else 'failed'}\n")
        if item % 2 and not self.fix:
            raise ValueError(f"item {item} is odd")
        if item == self.stop_at and not os.path.exists(f"{self.ledger}.stopped"):  # stop as a Ctrl-C does, once
            open(f"{self.ledger}.stopped", "w").close()
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.5)  # the stop's handler runs on the main thread: not after the next item
