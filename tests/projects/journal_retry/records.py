"""Records 0 .. count-1 that fail until ``fix``, each a picklable object that knows how many of its kind are alive.

With ``fix``, each attempt appends "N ok LIVE" to ``ledger``: LIVE counts the Records alive in this process at that
moment, so a test sees how many failed inputs a retry held at once. With ``stop_at``, the run stops itself as a
Ctrl-C does (once: ``ledger`` + ".stopped" marks it) when it reaches that record, which it still stores.
"""

from __future__ import annotations

import os
import signal
import weakref
from pathlib import Path

from batchcli import Param, Service, Source, inject

ALIVE: weakref.WeakSet[Record] = weakref.WeakSet()


class Record:
    def __init__(self, n: int) -> None:
        self.n = n
        self.payload = "x" * 100
        ALIVE.add(self)

    def __setstate__(self, state: dict) -> None:  # unpickled by a retry
        self.__dict__.update(state)
        ALIVE.add(self)


@inject
class Records(Source[Record]):
    def __init__(self, count: Param[int] = 3000) -> None:
        self.count = count

    def __iter__(self):
        return (Record(n) for n in range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Store(Service[Record]):
    def __init__(self, ledger: Param[str], fix: Param[bool] = False, stop_at: Param[int] = -1) -> None:
        self.ledger, self.fix, self.stop_at = ledger, fix, stop_at

    def process(self, item: Record) -> None:
        if not self.fix:
            raise ValueError(f"record {item.n} is not stored")
        stopped = Path(self.ledger + ".stopped")
        if item.n == self.stop_at and not stopped.exists():
            stopped.touch()
            os.kill(os.getpid(), signal.SIGINT)  # this record is still stored: the run stops after it
        with open(self.ledger, "a") as out:
            out.write(f"{item.n} ok {len(ALIVE)}\n")
