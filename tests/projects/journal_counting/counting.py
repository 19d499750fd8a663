"""Counts what it processes: every item is appended to a file (one per process) in ``log_dir``."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    """0 .. count-1; raises at ``crash_at`` (when not -1), which crashes the run."""

    def __init__(self, count: Param[int] = 100, crash_at: Param[int] = -1) -> None:
        self.count = count
        self.crash_at = crash_at

    def __iter__(self):
        for n in range(self.count):
            if n == self.crash_at:
                raise RuntimeError(f"the source broke at {n}")
            yield n

    def __len__(self) -> int:
        return self.count


@inject
class Stamp(Service[int]):
    """Sleeps ``delay_s``, appends the item to the log, then fails multiples of ``fail_every`` (when > 0).
    With ``note_bytes``, also logs an info line that long per item (the run's log file grows fast)."""

    def __init__(
        self, log_dir: Param[Path], delay_s: Param[float] = 0.0, fail_every: Param[int] = 0, note_bytes: Param[int] = 0
    ) -> None:
        self.log = log_dir / f"{os.getpid()}.log"
        self.delay_s = delay_s
        self.fail_every = fail_every
        self.note_bytes = note_bytes

    async def process(self, item: int) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        with open(self.log, "a") as out:
            out.write(f"{item}\n")
        if self.note_bytes:
            logging.getLogger("counting").info("item %d: %s", item, "x" * self.note_bytes)
        if self.fail_every and item % self.fail_every == 0:
            raise ValueError(f"{item} is a multiple of {self.fail_every}")
