"""The job's classes, in a sibling module of a directory without __init__.py."""

from batchcli import Service, Source, inject


@inject
class Numbers(Source[int]):
    def __iter__(self):
        yield from range(5)

    def __len__(self) -> int:
        return 5


@inject
class Double(Service[int]):
    async def process(self, item: int) -> int:
        return item * 2
