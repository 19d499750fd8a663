"""Item ``large`` returns a string of ``size`` characters (of ``char``); the others return their number."""

from __future__ import annotations

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 5) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))


@inject
class Large(Service[int]):
    def __init__(self, large: Param[int] = 2, size: Param[int] = 10, char: Param[str] = "x") -> None:
        self.large, self.size, self.char = large, size, char

    async def process(self, item: int) -> object:
        if item == self.large:
            return self.char * self.size
        return {"n": item}
