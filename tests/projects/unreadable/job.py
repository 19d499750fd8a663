"""Items that pickle in the driver but do not unpickle in a worker process: every 100th (from 50) is a ``Pair``
whose ``__reduce__`` leaves out an argument its ``__init__`` needs. Every processed item is appended to ``ledger``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from batchcli import Param, Service, Source, inject


class Pair:
    def __init__(self, a: int, b: int) -> None:
        self.a, self.b = a, b

    def __reduce__(self) -> Any:
        return (Pair, (self.a,))  # unpickled as Pair(a): TypeError, missing 'b'

    def __repr__(self) -> str:
        return f"Pair({self.a}, {self.b})"


@inject
class Items(Source[Any]):
    def __init__(self, count: Param[int] = 300) -> None:
        self.count = count

    def __iter__(self):
        return (Pair(n, 2) if n % 100 == 50 else n for n in range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Record(Service[Any]):
    def __init__(self, ledger: Param[Path]) -> None:
        self.ledger = ledger

    def process(self, item: Any) -> None:
        fd = os.open(self.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{item}\n".encode())
        finally:
            os.close(fd)
