"""A CPU-bound job for comparing executors: a few milliseconds of pure-Python work per item.

    batchcli exec benchmarks/cpu_job.py -p count=1000 -p executor=async
    batchcli exec benchmarks/cpu_job.py -p count=1000 -p executor=process

The GIL holds ``async`` (and its threads) to one core; ``process`` spreads the items over
``workers`` processes (one per core by default).
"""

from __future__ import annotations

import hashlib

from batchcli import Param, Service, Source, inject


@inject
class Seeds(Source[int]):
    """The numbers ``0 .. count-1``."""

    def __init__(self, count: Param[int] = 1000) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Crunch(Service[int]):
    """Pure-Python busy work: ``rounds`` rounds of integer arithmetic and a hash (about 3 ms at 15000 here)."""

    def __init__(self, rounds: Param[int] = 15000) -> None:
        self.rounds = rounds

    def process(self, item: int) -> str:
        value = item
        for n in range(self.rounds):
            value = (value * 1_103_515_245 + 12_345 + n) % 2_147_483_648
        return hashlib.sha256(str(value).encode()).hexdigest()
