"""One item awaits a future that a library cancelled: a CancelledError from the user's code, not a stop."""

import asyncio

from batchcli import Service, Source, inject


@inject
class Numbers(Source[int]):
    def __iter__(self):
        yield from range(5)


@inject
class AwaitsCancelled(Service[int]):
    async def process(self, item: int) -> None:
        if item == 1:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future
