"""An async source whose order changes with ``seed``: items are identified by key, not position."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Shuffled(Source[str]):
    """``item-0`` .. ``item-{count-1}`` in an order set by ``seed``; raises after ``crash_after`` items (when >= 0)."""

    def __init__(self, count: Param[int] = 50, seed: Param[int] = 1, crash_after: Param[int] = -1) -> None:
        self.names = [f"item-{n}" for n in range(count)]
        random.Random(seed).shuffle(self.names)
        self.crash_after = crash_after

    async def __aiter__(self):
        for position, name in enumerate(self.names):
            if position == self.crash_after:
                raise RuntimeError(f"the source broke after {position} items")
            yield name

    def __len__(self) -> int:
        return len(self.names)

    def item_key(self, item: str) -> str:
        return item


@inject
class Note(Service[str]):
    """Appends each item to the log, after ``delay_s``; fails ``item-7``."""

    def __init__(self, log_dir: Param[Path], delay_s: Param[float] = 0.0) -> None:
        self.log = log_dir / f"{os.getpid()}.log"
        self.delay_s = delay_s

    def process(self, item: str) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        with open(self.log, "a") as out:
            out.write(f"{item}\n")
        if item == "item-7":
            raise ValueError("seven is unlucky")
