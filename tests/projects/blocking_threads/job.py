"""A sync ``process`` that blocks on some items, with a ledger of every attempt and of its threads.

Each attempt logs ``start N running=K thread=NAME`` (K: attempts running at that moment, counted by
the Service itself) and ``done N``; an item with ``N % block_every == 0`` sleeps ``block_s`` seconds
as a stuck network call would, the others ``delay`` seconds.
"""

from __future__ import annotations

import os
import threading
import time

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    """0 .. count-1."""

    def __init__(self, count: Param[int] = 40) -> None:
        self.count = count

    def __iter__(self):
        yield from range(self.count)

    def __len__(self) -> int:
        return self.count


@inject
class Blocking(Service[int]):
    """Blocks on every ``block_every``-th item (0: never); logs each attempt to ``log_file``."""

    def __init__(
        self,
        log_file: Param[str],
        block_every: Param[int] = 0,
        block_s: Param[float] = 1000,
        delay: Param[float] = 0.01,
    ) -> None:
        self.log_file = log_file
        self.block_every = block_every
        self.block_s = block_s
        self.delay = delay
        self.lock = threading.Lock()
        self.running = 0

    def _log(self, line: str) -> None:
        with open(self.log_file, "a", encoding="utf-8") as file:
            file.write(line + "\n")

    def process(self, item: int) -> None:
        with self.lock:
            self.running += 1
            self._log(f"start {item} running={self.running} thread={os.getpid()}/{threading.current_thread().name}")
        try:
            blocks = self.block_every and item % self.block_every == 0
            time.sleep(self.block_s if blocks else self.delay)
        finally:
            with self.lock:
                self.running -= 1
        self._log(f"done {item}")
