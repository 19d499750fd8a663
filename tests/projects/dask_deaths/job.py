"""A job whose process() kills its own worker process at chosen items (first attempt only).

Records go to ``record_dir``: ``<n>.attempts`` (a line per attempt) and ``ok-<pid>`` (an item per line).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 40) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Killer(Service[int]):
    """Kills the worker running item ``kill_first`` and item ``kill_second``, the first time each runs."""

    def __init__(self, record_dir: Param[Path], kill_first: Param[int] = 5, kill_second: Param[int] = 25) -> None:
        self.record_dir = record_dir
        self.kills = {kill_first, kill_second}

    def process(self, item: int) -> None:
        path = self.record_dir / f"{item}.attempts"
        with path.open("a") as file:
            file.write(f"{os.getpid()}\n")
        if item in self.kills and len(path.read_text().splitlines()) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.01)
        with (self.record_dir / f"ok-{os.getpid()}").open("a") as file:
            file.write(f"{item}\n")
