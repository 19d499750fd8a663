"""Benchmark job: ``count`` items that return a small dict when ``keep`` (kept in the journal), else None."""

from __future__ import annotations

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 1) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Keep(Service[int]):
    def __init__(self, keep: Param[bool] = False) -> None:
        self.keep = keep

    async def process(self, item: int) -> dict[str, object] | None:
        if self.keep:
            return {"item": item, "ok": True}
        return None
