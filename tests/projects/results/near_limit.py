"""Returns an int of 4,250 digits (under the interpreter's 4,300-digit limit on writing ints as text), alone, in a
dict, and in a dict beside bytes (whose export takes the other JSON path)."""

from __future__ import annotations

from batchcli import Service, Source, inject

BIG = 10**4250


@inject
class Three(Source[int]):
    def __iter__(self):
        return iter(range(3))


@inject
class NearLimit(Service[int]):
    async def process(self, item: int) -> object:
        return [BIG + item, {"n": BIG + item}, {"n": BIG + item, "b": b"x"}][item]
