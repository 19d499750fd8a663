"""A plain ``def process`` that returns its client's coroutine instead of awaiting it, for item 2."""

from __future__ import annotations

import asyncio
from typing import Any

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 4) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))


@inject
class Fetch(Service[int]):
    def process(self, item: int) -> Any:
        if item == 2:
            return asyncio.sleep(0, result=item)  # the mistake: a coroutine, never awaited
        return {"n": item}
