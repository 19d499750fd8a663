"""Numbered items from an async source for the shard tests, shared by position; a ledger line per item done."""

from __future__ import annotations

import os
import time
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    """0 .. count-1, in order."""

    def __init__(self, count: Param[int] = 30) -> None:
        self.count = count

    async def __aiter__(self):
        for n in range(self.count):
            yield n

    def __len__(self) -> int:
        return self.count


@inject
class Ledger(Service[int]):
    """Writes ``done N`` to ``log_dir/<pid>.log`` per item (after ``sleep_s``); fails every ``fail_every``-th item."""

    def __init__(self, log_dir: Param[Path], sleep_s: Param[float] = 0.0, fail_every: Param[int] = 0) -> None:
        self.log = log_dir / f"{os.getpid()}.log"
        self.sleep_s = sleep_s
        self.fail_every = fail_every

    def process(self, item: int) -> None:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail_every and item % self.fail_every == 0:
            raise ValueError(f"item {item} is a multiple of {self.fail_every}")
        with open(self.log, "a") as out:
            out.write(f"done {item}\n")
