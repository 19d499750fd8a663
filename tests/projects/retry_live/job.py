"""Every 10th item fails until the file ``fix`` exists; retried after that, it notes ``retrying N`` and waits for the
file ``release`` before it succeeds, so a test decides when a live retry ends. Each failure appends ``fail N`` to
``ledger``, each success ``done N`` (the ledger, not memory, says what failed: worker processes share it)."""

from __future__ import annotations

import time
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 300) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Flaky(Service[int]):
    def __init__(self, fix: Param[str], release: Param[str], ledger: Param[str], delay_s: Param[float] = 0.02) -> None:
        self.fix, self.release, self.ledger, self.delay_s = Path(fix), Path(release), Path(ledger), delay_s

    def process(self, item: int) -> None:
        time.sleep(self.delay_s)
        if item % 10 == 0:
            if not self.fix.exists():
                self.note(f"fail {item}")
                raise ValueError(f"item {item} is not fixed yet")
            if self.ledger.exists() and f"fail {item}" in self.ledger.read_text().splitlines():  # a retry
                self.note(f"retrying {item}")
                while not self.release.exists():
                    time.sleep(0.05)
        self.note(f"done {item}")

    def note(self, line: str) -> None:
        with self.ledger.open("a") as ledger:
            ledger.write(line + "\n")
