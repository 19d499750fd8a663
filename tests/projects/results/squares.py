"""Returns a result per item: ``{"n": item, "square": item * item}``, or a ``Point`` (pickled), None, or a lock.

Every attempt is appended to a file (one per process) in ``log_dir`` when given, for ledgers.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from batchcli import Param, Service, Source, inject


@dataclass(frozen=True)
class Point:
    """A result JSON cannot hold: it is pickled."""

    x: int
    y: int


@inject
class Numbers(Source[int]):
    """0 .. count-1."""

    def __init__(self, count: Param[int] = 10) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Square(Service[int]):
    """Squares; ``flaky_every``: those items raise ConnectionError on their first attempt (retried);
    ``none_every``: those return None; ``point_every``: those return a Point; ``pair_every``: those return a dict keyed by a tuple (plain data JSON cannot
    hold as it is); ``lock_at``: that one returns a lock."""

    def __init__(
        self,
        log_dir: Param[Path | None] = None,
        delay_s: Param[float] = 0.0,
        flaky_every: Param[int] = 0,
        none_every: Param[int] = 0,
        point_every: Param[int] = 0,
        pair_every: Param[int] = 0,
        lock_at: Param[int] = -1,
    ) -> None:
        self.log = None if log_dir is None else log_dir / f"{os.getpid()}.log"
        self.delay_s = delay_s
        self.flaky_every = flaky_every
        self.none_every = none_every
        self.point_every = point_every
        self.pair_every = pair_every
        self.lock_at = lock_at
        self.tried: set[int] = set()

    async def process(self, item: int) -> object:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.log is not None:
            with open(self.log, "a") as out:
                out.write(f"{item}\n")
        if self.flaky_every and item % self.flaky_every == 0 and item not in self.tried:
            self.tried.add(item)
            raise ConnectionError(f"{item} dropped the connection")
        if item == self.lock_at:
            return threading.Lock()
        if self.none_every and item % self.none_every == 0:
            return None
        if self.point_every and item % self.point_every == 0:
            return Point(item, item * item)
        if self.pair_every and item % self.pair_every == 0:
            return {(item, item): [item, item * item]}
        return {"n": item, "square": item * item}
