"""Item 0 opens files until the process has no descriptor left, holds them ``hold_s``, then closes them (a job
that leaks sockets); the others take ``delay_s`` and touch no file. ``ledger`` gets ``exhausted`` and ``released``."""

import asyncio
import os
import time

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 100) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Leaky(Service[int]):
    def __init__(self, ledger: Param[str], hold_s: Param[float] = 2.0, delay_s: Param[float] = 0.02) -> None:
        self.ledger = ledger
        self.hold_s = hold_s
        self.delay_s = delay_s

    def note(self, line: str) -> None:
        with open(self.ledger, "a") as ledger:
            ledger.write(line + "\n")

    async def process(self, item: int) -> None:
        if item == 0:
            held: list[int] = []
            grab(held)
            os.close(held.pop())  # one free, to write the ledger line
            self.note("exhausted")
            end = time.monotonic() + self.hold_s
            while time.monotonic() < end:  # whatever another thread frees is taken again
                grab(held)
                await asyncio.sleep(0.01)
            for fd in held:
                os.close(fd)
            self.note("released")
        else:
            await asyncio.sleep(self.delay_s)


def grab(held: list[int]) -> None:
    """Open files until the process may open no more."""
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
