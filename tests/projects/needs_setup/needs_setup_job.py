"""A Service whose ``process`` needs what its ``setup()`` opened; items divisible by ``fail_every`` fail until the file
``fixed`` exists. Each result names the process that made it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 2000) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class NeedsSetup(Service[int]):
    def __init__(self, fixed: Param[Path], fail_every: Param[int] = 10, delay_s: Param[float] = 0.02) -> None:
        self.fixed, self.fail_every, self.delay_s = fixed, fail_every, delay_s
        self.conn: str | None = None

    def setup(self) -> None:
        self.conn = f"conn-{os.getpid()}"

    def process(self, item: int) -> str:
        time.sleep(self.delay_s)
        if item % self.fail_every == 0 and not self.fixed.exists():
            raise ValueError(f"item {item} is refused")
        assert self.conn is not None, "process() before setup()"
        return f"{item} via {self.conn}"
