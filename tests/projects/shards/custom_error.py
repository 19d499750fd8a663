"""Item 0 fails with an exception class of this module's own, item 1 with a ValueError: by position, shard 0 of 2
records only the first and shard 1 only the second."""

from __future__ import annotations

from batchcli import Param, Service, Source, inject


class Boom(Exception):
    """Named by `--error-type Boom`: not a built-in, recorded as custom_error.Boom."""


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 6) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Work(Service[int]):
    def process(self, item: int) -> None:
        if item == 0:
            raise Boom("zero")
        if item == 1:
            raise ValueError("one")
