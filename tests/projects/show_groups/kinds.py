"""Items 0 .. count-1 all fail, with a kind of message for each run of them: item 0 "kind a went wrong", items 1-2
"kind b ...", items 3-5 "kind c ...", and so on (kind k has k + 1 items, so each kind has its own count). With
concurrency of at least ``count`` they fail in the reverse of their order: the journal's rows are not in ordinal
order."""

from __future__ import annotations

import asyncio

from batchcli import Param, Service, Source, inject


@inject
class Items(Source[int]):
    def __init__(self, count: Param[int] = 78) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Fail(Service[int]):
    def __init__(self, count: Param[int] = 78) -> None:
        self.count = count

    async def process(self, item: int) -> None:
        await asyncio.sleep(0.005 * (self.count - item))
        kind = 0
        while (kind + 1) * (kind + 2) // 2 <= item:
            kind += 1
        raise ValueError(f"kind {chr(ord('a') + kind % 26) * (1 + kind // 26)} went wrong")
