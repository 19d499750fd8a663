"""Every fourth item fails at once, for good (too few to trip the breaker); from ``bad_from`` on every item fails
slowly, so that the breaker's window holds failures already journaled when it trips."""

import asyncio

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 100) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Picky(Service[int]):
    def __init__(self, bad_from: Param[int] = 1_000_000, slow_s: Param[float] = 0.1) -> None:
        self.bad_from = bad_from
        self.slow_s = slow_s

    async def process(self, item: int) -> None:
        if item >= self.bad_from:
            await asyncio.sleep(self.slow_s)
            raise ConnectionError(f"the service is down (item {item})")
        if item % 4 == 0:
            raise ValueError(f"item {item} is not a valid record")
