"""A job that dies: its Source raises after a few items, or its ``setup()`` raises (``-p broken=setup``)."""

from __future__ import annotations

import asyncio

from batchcli import Param, Service, Source, inject


def append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


@inject
class BreakingSource(Source[int]):
    """Yields 0..4, then raises."""

    def __iter__(self):
        yield from range(5)
        raise RuntimeError("the source broke after 5 items")


@inject
class Recorder(Service[int]):
    """Logs each item and ``finish()`` to ``log_file``."""

    def __init__(self, log_file: Param[str], broken: Param[str] = "source") -> None:
        self.log_file = log_file
        self.broken = broken

    async def setup(self) -> None:
        if self.broken == "setup":
            raise ConnectionRefusedError("the database refused the connection")

    async def process(self, item: int) -> str:
        await asyncio.sleep(0.01)
        append(self.log_file, f"done {item}")
        return f"processed {item}"

    def finish(self) -> None:
        append(self.log_file, "finish")
