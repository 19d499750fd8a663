"""A one-file batchcli job: fetch a fake "user" for every id, with a flaky service.

Run it:  batchcli exec examples/quickstart.py -p count=200
See failures recorded:  batchcli exec examples/quickstart.py -p malformed_every=97
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from batchcli import Param, Service, Source, inject


@dataclass(frozen=True)
class UserId:
    value: int


@inject
class UserIds(Source[UserId]):
    """The ids to fetch.

    Args:
        count: How many ids to yield.
    """

    def __init__(self, count: Param[int] = 100) -> None:
        self.count = count

    def __iter__(self):
        for n in range(1, self.count + 1):
            yield UserId(n)

    def __len__(self) -> int:
        return self.count


@inject
class FetchUser(Service[UserId]):
    """Pretends to call an API that is slow and sometimes drops the connection.

    Args:
        failure_rate: Share of attempts that lose their connection (retried).
        malformed_every: Every Nth user has a malformed record (fails at once); 0 for none.
    """

    def __init__(self, failure_rate: Param[float] = 0.05, malformed_every: Param[int] = 0) -> None:
        self.failure_rate = failure_rate
        self.malformed_every = malformed_every

    async def process(self, item: UserId) -> dict[str, object]:
        await asyncio.sleep(random.uniform(0.005, 0.02))
        if random.random() < self.failure_rate:
            raise ConnectionResetError(f"connection reset while fetching user {item.value}")
        if self.malformed_every and item.value % self.malformed_every == 0:
            raise ValueError(f"user {item.value} has a malformed record")
        return {"id": item.value, "name": f"user-{item.value}"}
