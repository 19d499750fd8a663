"""A sync process that refills one dict (and a list inside it) per thread, as a job reusing a buffer per thread does."""

from __future__ import annotations

import threading
import time

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 400) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))


@inject
class Refill(Service[int]):
    def __init__(self) -> None:
        self.local = threading.local()

    def process(self, item: int) -> dict[str, object]:
        row = getattr(self.local, "row", None)
        if row is None:
            row = self.local.row = {"n": -1, "seen": []}
        row["n"] = item
        row["seen"][:] = [item]
        time.sleep(0.001)  # the thread takes its next item at once: the value returned is refilled then
        return row
