"""Half the items fail at once, with messages that JSON and SQLite must carry exactly; successes go to a ledger.

Odd items fail: ``ValueError`` with quotes, a backslash, non-ASCII, a NUL and a second line when ``item % 4 == 1``,
``KeyError`` otherwise. Each success appends ``done N`` to ``ledger`` (an append-only file, kept across processes).
"""

from __future__ import annotations

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 100) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class HalfFail(Service[int]):
    def __init__(self, ledger: Param[str] = "ledger.txt") -> None:
        self.ledger = open(ledger, "a", buffering=1)

    async def process(self, item: int) -> None:
        if item % 4 == 1:
            raise ValueError(f'record {item} says "no" \\ naïve\x00\nsecond line')
        if item % 2:
            raise KeyError(f"region {item % 7}")
        self.ledger.write(f"done {item}\n")
