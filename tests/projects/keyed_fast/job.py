"""A keyed Source of no-op items, as fast as the run goes: each success is one line of the ledger (``ledger``)."""

from __future__ import annotations

import os

from batchcli import Param, Service, Source, inject


@inject
class Keys(Source[int]):
    def __init__(self, count: Param[int] = 1000) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count

    def item_key(self, item: int) -> str:
        return f"key-{item}"


@inject
class Ledger(Service[int]):
    def __init__(self, ledger: Param[str]) -> None:
        self.ledger = ledger
        self.fd = -1

    def setup(self) -> None:
        self.fd = os.open(self.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def process(self, item: int) -> None:
        os.write(self.fd, b"%d\n" % item)

    def finish(self) -> None:
        os.close(self.fd)
