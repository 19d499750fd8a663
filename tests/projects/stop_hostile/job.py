"""Services that make a run hard to stop, for the stop tests; each keeps a ledger of what it did.

``mode`` picks the Service's behaviour:

- ``ok``: ``async def process`` that never awaits (the loop never gets a turn from it), spinning
  ``spin_us`` microseconds of CPU per item so a large source runs far longer than any test waits;
- ``raise``: the same, raising at once (a flood of failures); ``retryable=true`` raises a ``TimeoutError``,
  which is retried;
- ``swallow``: awaits a long sleep and swallows every ``CancelledError`` thrown into it.

The ledger (``log_file``) gets ``done N`` after each success, ``fail N`` before each raise and
``start N`` when a swallowing item starts, then ``finish``. It is written through a buffer of
``buffer`` bytes that ``finish()`` flushes (a line per item must stay cheap at a million items);
``buffer=1`` writes each line at once.
"""

from __future__ import annotations

import asyncio
import time

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    """0, 1, 2, ... count - 1."""

    def __init__(self, count: Param[int] = 1_000_000) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Hostile(Service[int]):
    """Never awaits (``ok``, ``raise``) or swallows cancellation (``swallow``)."""

    def __init__(
        self,
        log_file: Param[str],
        mode: Param[str] = "ok",
        spin_us: Param[float] = 0.0,
        buffer: Param[int] = 1 << 16,
        retryable: Param[bool] = False,
    ) -> None:
        self.error = TimeoutError if retryable else ValueError
        self.ledger_path = log_file
        self.buffer = buffer
        self.mode = mode
        self.spin_s = spin_us / 1e6

    def setup(self) -> None:
        self.ledger = open(self.ledger_path, "a", encoding="utf-8", buffering=self.buffer)

    async def process(self, item: int) -> int:
        if self.spin_s:
            until = time.perf_counter() + self.spin_s
            while time.perf_counter() < until:
                pass
        if self.mode == "raise":
            self.ledger.write(f"fail {item}\n")
            raise self.error(f"item {item} is bad")
        if self.mode == "swallow":
            self.ledger.write(f"start {item}\n")
            while True:
                try:
                    await asyncio.sleep(1000)
                except asyncio.CancelledError:
                    continue
        self.ledger.write(f"done {item}\n")
        return item

    def finish(self) -> None:
        self.ledger.write("finish\n")
        self.ledger.close()
