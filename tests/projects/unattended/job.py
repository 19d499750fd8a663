"""A slow job for running unattended: each item sleeps, writes start/done lines and the most items seen at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from batchcli import Param, Service, Source, Throttled, inject


@inject
class Numbers(Source[int]):
    """0 .. count-1."""

    def __init__(self, count: Param[int] = 100) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Slow(Service[int]):
    """Sleeps ``delay_s`` per item; items divisible by ``fail_every`` fail with a ConnectionError (0: none) until ``ledger``.fixed exists,
    and then take ``fixed_delay_s`` longer; item ``throttle_at`` is throttled once, for ``throttle_s``; logs to ``ledger``."""

    def __init__(
        self, ledger: Param[str] = "ledger.txt", delay_s: Param[float] = 0.05, fail_every: Param[int] = 0, fixed_delay_s: Param[float] = 0.0,
        throttle_at: Param[int] = -1, throttle_s: Param[float] = 600.0,
    ) -> None:
        self.ledger = Path(ledger)
        self.throttle_at = throttle_at
        self.throttle_s = throttle_s
        self.delay_s = delay_s
        self.fail_every = fail_every
        self.fixed_delay_s = fixed_delay_s
        self.now = 0
        self.peak = 0

    def _write(self, line: str) -> None:
        with self.ledger.open("a") as f:
            f.write(line + "\n")

    async def process(self, item: int) -> None:
        self.now += 1
        if self.now > self.peak:
            self.peak = self.now
            self._write(f"peak {self.peak}")
        self._write(f"start {item}")
        try:
            await asyncio.sleep(self.delay_s)
            if item == self.throttle_at:
                self.throttle_at = -1
                self._write(f"throttled {item}")
                raise Throttled(self.throttle_s)
            if self.fail_every and item % self.fail_every == 0:
                if not self.ledger.with_suffix(".fixed").exists():
                    self._write(f"fail {item}")
                    raise ConnectionError(f"item {item} is bad")
                await asyncio.sleep(self.fixed_delay_s)
            self._write(f"done {item}")
        finally:
            self.now -= 1
