"""A service with nothing to feed it."""

from batchcli import Service, inject


@inject
class Lonely(Service[int]):
    async def process(self, item: int) -> None:
        pass
