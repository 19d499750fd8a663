"""A job where a SIGTERM can only be delivered to the loop thread, never to the main thread.

The kernel gives a process-directed signal to any thread that does not block it. The Source's
constructor (main thread, before the run's threads exist, which inherit its mask) blocks SIGTERM, and
``setup()`` (on the run's loop thread) unblocks it there: so the signal always lands on the loop
thread, while Python runs its handler on the main thread. Each processed item goes to the ledger.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    """0 .. count-1."""

    def __init__(self, count: Param[int] = 400) -> None:
        self.count = count
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Slow(Service[int]):
    """Appends each item to the ledger after 20 ms."""

    def __init__(self, ledger: Param[Path]) -> None:
        self.ledger = ledger

    def setup(self) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    async def process(self, item: int) -> None:
        await asyncio.sleep(0.02)
        with open(self.ledger, "a") as out:
            out.write(f"{item}\n")
