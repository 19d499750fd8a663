"""A job for the pause shell's counts: which items fail, and for how long, is steered from the shell.

Every attempt writes ``start N`` to the log file and every success ``done N``, so the tests measure what
ran. Items divisible by ``fail_every`` fail until the shell adds their remainder modulo ``fixed_mod`` to
``service.fixed``; with ``flaky`` every item's first attempt fails (a retry after ``backoff_s`` succeeds).
``sync=true`` makes ``process`` a plain ``def`` (run in threads); ``break_at`` makes the source raise
there, which opens the emergency shell.
"""

from __future__ import annotations

import asyncio
import time

from batchcli import Param, Service, Source, inject


def append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


@inject
class Numbers(Source[int]):
    """0 .. count - 1; raises at ``break_at`` (when not -1)."""

    def __init__(self, count: Param[int] = 40, break_at: Param[int] = -1) -> None:
        self.count = count
        self.break_at = break_at

    def __iter__(self):
        for n in range(self.count):
            if n == self.break_at:
                raise RuntimeError(f"the source broke at {n}")
            yield n

    def __len__(self) -> int:
        return self.count


class Steered:
    """What both services share: the log, and which items fail."""

    def __init__(
        self,
        log_file: Param[str],
        delay: Param[float] = 0.02,
        fail_every: Param[int] = 0,
        fixed_mod: Param[int] = 2,
        flaky: Param[bool] = False,
    ) -> None:
        self.log_file = log_file
        self.delay = delay
        self.fail_every = fail_every
        self.fixed_mod = fixed_mod
        self.fixed: set[int] = set()
        """Remainders modulo ``fixed_mod`` of the failing items that succeed now."""
        self.flaky = flaky
        self.tried: set[int] = set()

    def outcome(self, item: int) -> str:
        append(self.log_file, f"start {item}")
        if self.flaky and item not in self.tried:
            self.tried.add(item)
            raise ConnectionError(f"item {item}: first attempt fails")
        if self.fail_every and item % self.fail_every == 0 and item % self.fixed_mod not in self.fixed:
            raise ValueError(f"item {item} is bad")
        append(self.log_file, f"done {item}")
        return f"processed {item}"


@inject
class Counted(Steered, Service[int]):
    """An async ``process``, or a plain ``def`` one with ``sync=true``."""

    def __init__(
        self,
        log_file: Param[str],
        delay: Param[float] = 0.02,
        fail_every: Param[int] = 0,
        fixed_mod: Param[int] = 2,
        flaky: Param[bool] = False,
        sync: Param[bool] = False,
    ) -> None:
        super().__init__(log_file, delay, fail_every, fixed_mod, flaky)
        if sync:
            self.process = self.process_sync  # type: ignore[method-assign]

    async def process(self, item: int) -> str:
        await asyncio.sleep(self.delay)
        return self.outcome(item)

    def process_sync(self, item: int) -> str:
        time.sleep(self.delay)
        return self.outcome(item)
