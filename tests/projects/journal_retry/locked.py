"""Items 0 .. count-1; those not divisible by 3 fail until ``fix``. Every seventh holds a lock (a live handle, as a
database connection in real life), so its input cannot be pickled when it fails and a retry cannot have it.

Loaded back by a retry or a resume, an item does what the environment asks: ``RESTORE_FAILS=N`` makes item N's
unpickling raise (its class changed since it was saved), ``MOVE_AWAY=DIR`` renames DIR to DIR.moved as the
item ``MOVE_AT`` is loaded (the run being retried is moved away while the retry starts), and ``WAIT_AT=N`` holds
item N's loading until the file ``WAIT_FOR`` exists (touching WAIT_FOR.waiting meanwhile). Each success appends
the item's number to ``ledger``; with ``stop_at``, the run stops itself as a Ctrl-C does after that item, and with
``hold_at`` the run holds that item until the file ``gate`` exists (touching ``gate``.waiting meanwhile).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from batchcli import Param, Service, Source, inject


class Item:
    def __init__(self, n: int) -> None:
        self.n = n
        self.lock = threading.Lock() if n % 7 == 0 else None

    def __getstate__(self) -> dict:
        if self.lock is not None:
            raise TypeError(f"cannot pickle the lock of item {self.n}")
        return {"n": self.n}

    def __setstate__(self, state: dict) -> None:
        n = state["n"]
        if os.environ.get("RESTORE_FAILS") == str(n):
            raise RuntimeError(f"item {n} cannot be restored")
        if os.environ.get("WAIT_AT") == str(n):  # held here (a long check) until the file WAIT_FOR appears
            wait_for = Path(os.environ["WAIT_FOR"])
            Path(f"{wait_for}.waiting").touch()
            for _ in range(600):
                if wait_for.exists():
                    break
                time.sleep(0.05)
        away = os.environ.get("MOVE_AWAY")
        if away and os.environ.get("MOVE_AT") == str(n) and os.path.isdir(away):
            os.rename(away, away + ".moved")
        self.n, self.lock = n, None

    def __repr__(self) -> str:
        return f"Item({self.n})"


@inject
class Items(Source[Item]):
    def __init__(self, count: Param[int] = 60) -> None:
        self.count = count

    def __iter__(self):
        return (Item(n) for n in range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Work(Service[Item]):
    def __init__(
        self, ledger: Param[str], fix: Param[bool] = False, stop_at: Param[int] = -1, hold_at: Param[int] = -1,
        gate: Param[str] = "",
    ) -> None:
        self.ledger, self.fix, self.stop_at = ledger, fix, stop_at
        self.hold_at, self.gate = hold_at, gate

    def process(self, item: Item) -> None:
        if item.n == self.hold_at:  # the run is under way, held here until the file ``gate`` appears
            Path(f"{self.gate}.waiting").touch()
            for _ in range(1200):
                if os.path.exists(self.gate):
                    break
                time.sleep(0.05)
        if item.n % 3 and not self.fix:
            raise ValueError(f"item {item.n} is bad")
        with open(self.ledger, "a") as out:
            out.write(f"{item.n}\n")
        stopped = Path(self.ledger + ".stopped")
        if item.n == self.stop_at and not stopped.exists():
            stopped.touch()
            os.kill(os.getpid(), signal.SIGINT)  # this item is stored: the run stops after it
            time.sleep(0.5)  # the stop's handler runs on the main thread: on a loaded machine, not before the next item
