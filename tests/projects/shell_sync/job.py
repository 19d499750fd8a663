"""A job whose ``process`` is a plain ``def`` (runs in worker threads) and blocks for ``delay`` seconds."""

from __future__ import annotations

import time

from batchcli import Param, Service, Source, inject


def append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


@inject
class Numbers(Source[int]):
    """0 .. 19."""

    def __iter__(self):
        yield from range(20)

    def __len__(self) -> int:
        return 20


@inject
class BlockingService(Service[int]):
    """Sleeps in its thread; logs ``start N``, ``done N`` and ``finish``."""

    def __init__(self, log_file: Param[str], delay: Param[float] = 60) -> None:
        self.log_file = log_file
        self.delay = delay

    def process(self, item: int) -> None:
        append(self.log_file, f"start {item}")
        time.sleep(self.delay)
        append(self.log_file, f"done {item}")

    def finish(self) -> None:
        append(self.log_file, "finish")
