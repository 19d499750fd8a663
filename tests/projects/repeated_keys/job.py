"""Rows whose ids repeat (two rows per id), with ``item_key`` returning the id: keys that do not tell items apart."""

from batchcli import Param, Service, Source, inject


@inject
class Rows(Source[dict]):
    def __init__(self, count: Param[int] = 20) -> None:
        self.count = count

    def __iter__(self):
        return ({"row": n, "id": f"user-{n // 2}"} for n in range(self.count))

    def __len__(self) -> int:
        return self.count

    def item_key(self, item: dict) -> str:
        return item["id"]


@inject
class Touch(Service[dict]):
    async def process(self, item: dict) -> None:
        pass
