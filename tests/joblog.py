"""Reading the log that the ``shell_*`` test projects write, and waiting for it to change."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class JobLog:
    """``start N`` / ``done N`` / ``setup`` / ``finish`` lines, one per event."""

    path: Path

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def numbers(self, event: str) -> list[int]:
        """The items of every ``event N`` line, in order (repeats kept)."""
        return [int(line.split()[1]) for line in self.lines() if line.startswith(event + " ")]

    def started(self) -> list[int]:
        return self.numbers("start")

    def done(self) -> list[int]:
        return self.numbers("done")

    def count(self, line: str) -> int:
        return self.lines().count(line)

    def done_twice(self) -> list[int]:
        """Items that completed more than once."""
        return sorted(n for n, times in Counter(self.done()).items() if times > 1)

    def in_flight_peak(self, after: int = 0) -> int:
        """The most items in flight at once from line ``after`` on, counting those already in flight then."""
        now = peak = 0
        for index, line in enumerate(self.lines()):
            if line.startswith("start "):
                now += 1
            elif line.startswith("done ") or line.startswith("fail "):
                now -= 1
            if index >= after:
                peak = max(peak, now)
        return peak


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll until ``condition()`` holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
