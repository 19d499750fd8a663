"""A failure flood: every item fails at once; with ``mix`` every third fails with another error."""

from __future__ import annotations

from batchcli import Param, Service, Source, inject


@inject
class Records(Source[int]):
    def __init__(self, count: Param[int] = 5000) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Reject(Service[int]):
    def __init__(self, mix: Param[bool] = False) -> None:
        self.mix = mix

    async def process(self, item: int) -> None:
        if self.mix and item % 3 == 0:
            raise KeyError(f"region {item % 7}")
        raise ValueError(f"record {item} is malformed")
