"""A slow job for the pause shell and stop tests: every start and completion goes to a log file.

The tests read the log to see what ran: ``start N`` when item N starts, ``done N`` when it succeeds,
``setup`` and ``finish`` when those are called. ``persist_failed`` writes the failed inputs as JSON.
"""

from __future__ import annotations

import asyncio
import json
import time

from batchcli import Param, Service, Source, inject


def append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


@inject
class Numbers(Source[int]):
    """0, 1, 2, ... count - 1."""

    def __init__(self, count: Param[int] = 40, persisted: Param[str] = "") -> None:
        self.count = count
        self.persisted = persisted

    def __iter__(self):
        yield from range(self.count)

    def __len__(self) -> int:
        return self.count

    def persist_failed(self, failed: list[int]) -> None:
        if self.persisted:
            with open(self.persisted, "w", encoding="utf-8") as file:
                json.dump(failed, file)


@inject
class SlowService(Service[int]):
    """Sleeps ``delay`` seconds per item; items divisible by ``fail_every`` fail (until ``fixed``)."""

    def __init__(
        self,
        log_file: Param[str],
        delay: Param[float] = 0.05,
        fail_every: Param[int] = 0,
        setup_s: Param[float] = 0,
        setup_blocks: Param[bool] = False,
        finish_s: Param[float] = 0,
    ) -> None:
        self.log_file = log_file
        self.delay = delay
        self.fail_every = fail_every
        self.setup_s = setup_s
        self.setup_blocks = setup_blocks
        self.finish_s = finish_s
        self.fixed = False

    async def setup(self) -> None:
        append(self.log_file, "setup")
        if self.setup_blocks:  # a sync connect without a timeout: it holds the loop
            time.sleep(self.setup_s)
        else:
            await asyncio.sleep(self.setup_s)

    async def process(self, item: int) -> str:
        append(self.log_file, f"start {item}")
        await asyncio.sleep(self.delay)
        if self.fail_every and item % self.fail_every == 0 and not self.fixed:
            raise ValueError(f"item {item} is bad")
        append(self.log_file, f"done {item}")
        return f"processed {item}"

    def finish(self) -> None:
        append(self.log_file, "finish")
        time.sleep(self.finish_s)  # a flush that hangs
