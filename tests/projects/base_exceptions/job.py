"""Raises a ``BaseException`` subclass that is not an ``Exception`` (as pytest's ``fail()``, gevent's ``Timeout`` or a
library's own do) from one place (and ``length`` makes ``__len__`` lie): ``where`` is ``process`` (item ``at``), ``sync_process`` (a plain def, run in
threads), ``source`` (before item ``at``), ``setup`` or ``finish``; ``none`` raises nothing. Every success is
appended to ``ledger``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from batchcli import Param, Service, Source, inject


class Abandon(BaseException):
    """Not an Exception: ``except Exception`` lets it through."""


@inject
class Numbers(Source[int]):
    def __init__(
        self, count: Param[int] = 10, where: Param[str] = "none", at: Param[int] = 3, length: Param[int | None] = None
    ) -> None:
        self.count, self.where, self.at, self.length = count, where, at, length

    def __iter__(self):
        for n in range(self.count):
            if self.where == "source" and n == self.at:
                raise Abandon(f"the feed gave up before item {n}")
            yield n

    def __len__(self) -> int:
        if self.length == 0:  # ``length=0``: the count as an integer that is no int (a numpy integer, say)
            return Index(self.count)  # type: ignore[return-value]
        return self.count if self.length is None else self.length  # ``length``: a __len__ that lies


class Index:
    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


@inject
class Work(Service[int]):
    def __init__(self, where: Param[str] = "none", at: Param[int] = 3, ledger: Param[str] = "", chdir: Param[str] = "") -> None:
        self.where, self.at, self.ledger, self.chdir = where, at, ledger, chdir
        if where == "sync_process":
            self.process = self._sync_process  # type: ignore[method-assign]

    def setup(self) -> None:
        if self.chdir:  # a job that works in a directory of its own
            os.chdir(self.chdir)
        if self.where == "setup":
            raise Abandon("setup gave up")

    def finish(self) -> None:
        if self.where == "finish":
            raise Abandon("finish gave up")

    async def process(self, item: int) -> None:
        await asyncio.sleep(0.001)
        self._one(item)

    def _sync_process(self, item: int) -> None:
        self._one(item)

    def _one(self, item: int) -> None:
        if self.where in ("process", "sync_process") and item == self.at:
            raise Abandon(f"item {item} gave up")
        if self.ledger:
            with Path(self.ledger).open("a") as out:
                out.write(f"{item}\n")
