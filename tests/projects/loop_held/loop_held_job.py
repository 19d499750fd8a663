"""An async ``process`` that blocks the event loop with a sync call for item ``at`` (``block_s`` seconds); every
item done is appended to ``ledger``; with ``returns``, each returns a small dict."""

from __future__ import annotations

import time

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 5) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Blocking(Service[int]):
    def __init__(
        self, ledger: Param[str], at: Param[int] = 2, block_s: Param[float] = 2.0, returns: Param[bool] = False,
        setup_s: Param[float] = 0.0,
    ) -> None:
        self.ledger, self.at, self.block_s, self.returns = ledger, at, block_s, returns
        self.setup_s = setup_s

    def setup(self) -> None:  # a sync hook: it runs on the event loop
        time.sleep(self.setup_s)

    async def process(self, item: int) -> dict[str, int] | None:
        if item == self.at:
            time.sleep(self.block_s)  # a sync call inside async code
        with open(self.ledger, "a", encoding="utf-8") as out:
            out.write(f"{item}\n")
        return {"item": item} if self.returns else None
