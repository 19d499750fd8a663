"""Returns values that marshal writes as plain data though they are not: a ``bytes`` subclass (alone and in a
dict), an ``array`` nested deeper than a comparison goes; beside them plain values marshal keeps as they are (a
deep list, a complex number, a memoryview of bytes)."""

from __future__ import annotations

from array import array

from batchcli import Param, Service, Source, inject

DEPTH = 1500
"""Deeper than pickle and comparisons go (about 1,000), within marshal's 2,000."""


class Tagged(bytes):
    """A bytes subclass: equal to its bytes, so reading back and comparing did not tell them apart."""


def nested(value: object) -> object:
    for _ in range(DEPTH):
        value = [value]
    return value


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 6) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Lookalikes(Service[int]):
    async def process(self, item: int) -> object:
        kind = item % 6
        if kind == 0:
            return Tagged(b"tag%d" % item)
        if kind == 1:
            return {"n": item, "tag": Tagged(b"tag")}
        if kind == 2:
            return nested(array("q", [item]))
        if kind == 3:
            return nested(item)
        if kind == 4:
            return complex(item, 1)
        return {"n": item, "view": memoryview(b"view")}
