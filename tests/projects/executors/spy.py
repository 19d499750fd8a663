"""A spy job for the executor tests: records every attempt on disk and fails on purpose by item number.

Records go to ``record_dir`` (shared by every process on this machine): one file per item with a
line per attempt (``<n>.attempts``), one file per process for successes (``ok-<pid>``), and
``setup-<pid>`` / ``finish-<pid>`` markers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from batchcli import Configuration, Param, Service, Source, inject


@dataclass(frozen=True)
class Item:
    n: int
    payload: object = None


class Transient(ConnectionResetError):
    """A subclass of a retryable type (ConnectionError): retried because matching is by isinstance."""


@dataclass(kw_only=True)
class SpyConfig(Configuration):
    """Tests set every knob with -p."""


@inject
class Numbers(Source[Item]):
    def __init__(
        self,
        record_dir: Param[Path],
        count: Param[int] = 20,
        source_fails_at: Param[int] = -1,
        unpicklable_at: Param[int] = -1,
        source_s: Param[float] = 0.0,
    ) -> None:
        self.record_dir = record_dir
        self.source_s = source_s  # a slow source: a page of an API, a query per item
        self.count = count
        self.source_fails_at = source_fails_at
        self.unpicklable_at = unpicklable_at

    def __iter__(self):
        for n in range(self.count):
            if self.source_s:
                time.sleep(self.source_s)
            if n == self.source_fails_at:
                raise OSError(f"the source broke at {n}")
            yield Item(n, payload=(lambda: None) if n == self.unpicklable_at else None)

    def __len__(self) -> int:
        return self.count

    def persist_failed(self, failed: list[Item]) -> None:
        (self.record_dir / "persisted").write_text(" ".join(str(i.n) for i in failed))


@inject
class Spy(Service[Item]):
    def __init__(
        self,
        record_dir: Param[Path],
        style: Param[str] = "sync",
        flaky: Param[int] = 0,
        flaky_times: Param[int] = 1,
        bad: Param[int] = 0,
        slow: Param[int] = 0,
        slow_times: Param[int] = 1,
        slow_s: Param[float] = 1.0,
        sleep_s: Param[float] = 0.0,
        cpu_ms: Param[float] = 0.0,
        kill_on: Param[int] = -1,
        kill_always: Param[int] = -1,
        warn_on: Param[int] = -1,
        setup_fails: Param[bool] = False,
        finish_fails: Param[bool] = False,
        finish_s: Param[float] = 0.0,
        setup_crashes: Param[bool] = False,
    ) -> None:
        self.record_dir = record_dir
        self.flaky, self.flaky_times, self.bad = flaky, flaky_times, bad
        self.slow, self.slow_times, self.slow_s = slow, slow_times, slow_s
        self.sleep_s, self.cpu_ms, self.kill_on, self.warn_on = sleep_s, cpu_ms, kill_on, warn_on
        self.setup_fails, self.finish_fails, self.finish_s = setup_fails, finish_fails, finish_s
        self.setup_crashes = setup_crashes
        self.kill_always = kill_always  # that item kills its worker at every attempt
        if style == "async":
            self.process = self.process_async  # type: ignore[method-assign]

    def setup(self) -> None:
        self._mark("setup", __file__)
        if self.setup_fails:
            raise RuntimeError("the database is down")
        if self.setup_crashes:  # a native library crashing while it loads its model
            os._exit(70)

    def finish(self) -> None:
        self._mark("finish", "")
        if self.finish_s:  # a finish() that takes a while: flushing a buffer, closing a connection
            time.sleep(self.finish_s)
            self._mark("finished", "")
        if self.finish_fails:
            raise RuntimeError("could not flush the output")

    def process(self, item: Item) -> None:
        attempt = self._before(item)
        if self.slow and item.n % self.slow == 0 and attempt <= self.slow_times:
            time.sleep(self.slow_s)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        self._after(item, attempt)

    async def process_async(self, item: Item) -> None:
        attempt = self._before(item)
        if self.slow and item.n % self.slow == 0 and attempt <= self.slow_times:
            await asyncio.sleep(self.slow_s)
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        self._after(item, attempt)

    def _before(self, item: Item) -> int:
        path = self.record_dir / f"{item.n}.attempts"
        with path.open("a") as file:
            file.write(f"{os.getpid()} {time.time()}\n")
        attempt = len(path.read_text().splitlines())
        if item.n == self.warn_on:
            logging.getLogger("spy").warning("item %d looks odd", item.n)
            warnings.warn(f"item {item.n} uses a deprecated field")
        if (item.n == self.kill_on and attempt == 1) or item.n == self.kill_always:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.cpu_ms:
            end = time.process_time() + self.cpu_ms / 1000
            while time.process_time() < end:
                sum(i * i for i in range(200))
        return attempt

    def _after(self, item: Item, attempt: int) -> None:
        if self.bad and item.n % self.bad == 0:
            raise ValueError(f"item {item.n} is malformed")
        if self.flaky and item.n % self.flaky == 0 and attempt <= self.flaky_times:
            raise Transient(f"connection reset on item {item.n}, attempt {attempt}")
        with (self.record_dir / f"ok-{os.getpid()}").open("a") as file:
            file.write(f"{item.n}\n")

    def _mark(self, what: str, text: str) -> None:
        with (self.record_dir / f"{what}-{os.getpid()}").open("a") as file:
            file.write(text + "\n")
