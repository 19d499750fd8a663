"""A source with nothing to process its items."""

from batchcli import Source, inject


@inject
class Numbers(Source[int]):
    def __iter__(self):
        yield from range(3)
