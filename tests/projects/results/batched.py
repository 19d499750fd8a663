"""Results the async executor encodes a batch at a time: a dict the job reuses, a run that waits with one result
in hand, and values that are not plain data (a ``Point``, pickled) or cannot be kept at all (a lock) among them.

Every attempt is appended to ``log_dir/attempts.log`` when given, for ledgers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from batchcli import Param, Service, Source, inject


@dataclass(frozen=True)
class Point:
    """A result marshal and JSON refuse: it is pickled."""

    x: int


class HalfPickled:
    """Pickles, but does not unpickle: its ``__reduce__`` leaves out what ``__init__`` needs."""

    def __init__(self, a: int, b: int) -> None:
        self.a, self.b = a, b

    def __reduce__(self) -> object:
        return (HalfPickled, (self.a,))


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
class Batched(Service[int]):
    """``reuse``: returns one dict, updated for each item; ``recent``: a new dict holding one list the job keeps
    changing (the last three items); ``gate``: items from ``gate_from`` on wait for that file;
    ``point_every``/``lock_every``: those items (not 0) return a Point / a lock, and so does ``lock_at``;
    ``half_pickled_at``: that item returns a value whose pickle does not load; ``big_kb``: each returns a string of that many KiB (from ``big_from`` on); ``block_s``: each item holds the
    event loop that long (``time.sleep`` in async code), and with ``blocking`` the gate is waited for that way too;
    ``jitter_ms``: each item sleeps up to that long (its own share of it), so items settle out of source order."""

    def __init__(
        self,
        reuse: Param[bool] = False,
        recent: Param[bool] = False,
        gate: Param[Path | None] = None,
        gate_from: Param[int] = 1,
        point_every: Param[int] = 0,
        lock_every: Param[int] = 0,
        lock_at: Param[int] = -1,
        log_dir: Param[Path | None] = None,
        big_kb: Param[int] = 0,
        big_from: Param[int] = 0,
        block_s: Param[float] = 0.0,
        blocking: Param[bool] = False,
        half_pickled_at: Param[int] = -1,
        jitter_ms: Param[float] = 0.0,
    ) -> None:
        self.reuse, self.gate, self.gate_from = reuse, gate, gate_from
        self.point_every, self.lock_every, self.lock_at = point_every, lock_every, lock_at
        self.log = None if log_dir is None else log_dir / "attempts.log"
        self.row: dict[str, int] = {}
        self.recent, self.last = recent, [-1, -1, -1]
        self.big_kb, self.big_from = big_kb, big_from
        self.block_s, self.blocking = block_s, blocking
        self.half_pickled_at = half_pickled_at
        self.jitter_s = jitter_ms / 1000

    async def process(self, item: int) -> object:
        if self.log is not None:
            with open(self.log, "a") as out:
                out.write(f"{item}\n")
        if self.gate is not None and item >= self.gate_from:
            while not self.gate.exists():
                if self.blocking:
                    time.sleep(0.02)  # holds the event loop: a mistake jobs make, which batchcli must survive
                else:
                    await asyncio.sleep(0.02)
        elif self.block_s:
            time.sleep(self.block_s)
        elif self.jitter_s:
            await asyncio.sleep(self.jitter_s * (item * 7919 % 13) / 12)
        if item == self.half_pickled_at:
            return HalfPickled(item, 2)
        if item == self.lock_at or (self.lock_every and item and item % self.lock_every == 0):
            return threading.Lock()
        if self.point_every and item and item % self.point_every == 0:
            return Point(item)
        if self.big_kb and item >= self.big_from:
            return f"{item}:".ljust(self.big_kb * 1024, "x")
        if self.recent:
            self.last[:] = [*self.last[1:], item]  # the same list each time, changed in place
            return {"n": item, "last": self.last}
        if self.reuse:
            self.row["n"] = item  # the same dict each time: what it held when returned must be what is kept
            return self.row
        return {"n": item}
