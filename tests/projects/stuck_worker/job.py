"""An ``async def process`` that blocks its worker's loop (``time.sleep``) on some items: no timeout can cancel it.

Logs ``start N`` and ``done N`` for each attempt.
"""

from __future__ import annotations

import time

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    """0 .. count-1."""

    def __init__(self, count: Param[int] = 8) -> None:
        self.count = count

    def __iter__(self):
        yield from range(self.count)


@inject
class Stuck(Service[int]):
    """Blocks the event loop for ``block_s`` on items listed in ``stuck`` (comma-separated)."""

    def __init__(self, log_file: Param[str], stuck: Param[list[int]] = [0], block_s: Param[float] = 1000) -> None:
        self.log_file = log_file
        self.stuck = stuck
        self.block_s = block_s

    def _log(self, line: str) -> None:
        with open(self.log_file, "a", encoding="utf-8") as file:
            file.write(line + "\n")

    async def process(self, item: int) -> None:
        self._log(f"start {item}")
        if item in self.stuck:
            time.sleep(self.block_s)  # the mistake: a blocking call in an async def holds the loop
        self._log(f"done {item}")
