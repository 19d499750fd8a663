"""Every ``every``-th item is refused once with ``Throttled()`` (no Retry-After); everything else succeeds at once."""

from __future__ import annotations

from batchcli import Param, Service, Source, Throttled, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 150) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class NowAndThen(Service[int]):
    def __init__(self, every: Param[int] = 50) -> None:
        self.every = every
        self.refused: set[int] = set()

    async def process(self, item: int) -> None:
        if item % self.every == 0 and item not in self.refused:
            self.refused.add(item)
            raise Throttled()
