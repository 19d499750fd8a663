"""Two unrelated sources: batchcli cannot guess which one to run."""

from batchcli import Service, Source, inject


@inject
class Customers(Source[int]):
    def __iter__(self):
        yield from range(3)


@inject
class Invoices(Source[int]):
    def __iter__(self):
        yield from range(3)


@inject
class Print(Service[int]):
    async def process(self, item: int) -> None:
        pass
