"""Item ``at`` raises an exception that breaks when batchcli reads it; ``how``:

- ``overflow``: ``Throttled(retry_after=10**400)`` on its first attempt (an ``int()`` of a header gone wrong; no
  float holds it: read as a wait for ever, clamped),
- ``response``: an exception whose ``response`` property raises,
- ``str``: an exception whose ``__str__`` raises;
- ``str_interrupt``: an exception whose ``__str__`` raises ``KeyboardInterrupt`` (a BaseException);
- ``refused``: ``Throttled(retry_after=0)`` at every attempt (an API that always answers 503 for that record);
- ``refused_unsaid``: ``Throttled()`` at every attempt, without a Retry-After.

Every success is appended to ``ledger``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from batchcli import Param, Service, Source, Throttled, inject


class ApiError(Exception):
    @property
    def response(self) -> object:
        raise RuntimeError("the response was already closed")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


class Interrupting(Exception):
    def __str__(self) -> str:
        raise KeyboardInterrupt


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 30) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Call(Service[int]):
    def __init__(self, how: Param[str] = "overflow", at: Param[int] = 5, ledger: Param[str] = "") -> None:
        self.how, self.at, self.ledger = how, at, ledger
        self.tried: set[int] = set()

    async def process(self, item: int) -> None:
        await asyncio.sleep(0.001)
        if item == self.at:
            first = item not in self.tried
            self.tried.add(item)
            if self.how == "overflow" and first:
                raise Throttled(retry_after=10**400)
            if self.how == "response":
                raise ApiError("the API answered 500")
            if self.how == "str":
                raise Unprintable()
            if self.how == "str_interrupt":
                raise Interrupting()
            if self.how == "refused":
                raise Throttled(retry_after=0)
            if self.how == "refused_unsaid":
                raise Throttled()  # no Retry-After: the run's own exponential cool-down
        if self.ledger:
            with Path(self.ledger).open("a") as out:
                out.write(f"{item}\n")
