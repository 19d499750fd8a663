"""Returns values that lend out their memory, which marshal writes as plain bytes: an ``array.array`` alone, or
in a dict nothing else holds (the batch path), every other item a dict holding a bytearray."""

from __future__ import annotations

from array import array

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 10) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Buffers(Service[int]):
    async def process(self, item: int) -> object:
        if item % 3 == 0:
            return array("d", [item, item + 0.5])
        if item % 3 == 1:
            return {"n": item, "values": array("q", [item])}
        return {"n": item, "raw": bytearray(b"%d" % item)}
