"""Rows that hold a live handle (a lock here, a database connection in real life), so they cannot be pickled;
every one fails."""

import threading

from batchcli import Param, Service, Source, inject


class Row:
    def __init__(self, n: int) -> None:
        self.n = n
        self.handle = threading.Lock()

    def __repr__(self) -> str:
        return f"Row({self.n})"


@inject
class Rows(Source[Row]):
    def __init__(self, count: Param[int] = 10) -> None:
        self.count = count

    def __iter__(self):
        return (Row(n) for n in range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Rejecting(Service[Row]):
    async def process(self, item: Row) -> None:
        raise ValueError(f"row {item.n} is rejected")
