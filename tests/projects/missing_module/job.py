"""A job that imports a package this Python does not have (as examples/flaky_api needs httpx)."""

import batchcli_test_absent_package  # noqa: F401

from batchcli import Service, Source, inject


@inject
class Numbers(Source[int]):
    def __iter__(self):
        yield from range(3)


@inject
class Nothing(Service[int]):
    async def process(self, item: int) -> None:
        pass
