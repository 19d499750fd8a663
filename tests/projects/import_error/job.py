"""A job whose settings module fails while being imported."""

from batchcli import Service, Source, inject

from .settings import ENDPOINT


@inject
class Numbers(Source[int]):
    def __iter__(self):
        yield from range(3)


@inject
class Call(Service[int]):
    async def process(self, item: int) -> None:
        print(ENDPOINT, item)
