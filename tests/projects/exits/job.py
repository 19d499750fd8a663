"""Code that ends the way a library's command-line main does: ``sys.exit(code)`` (``exit`` the code) where ``where``
says (``process``, ``setup`` or ``source``), or a ``KeyboardInterrupt`` it raises itself (``interrupt``); ``sync``
makes process() sync, so it runs in a thread; ``delay_s`` is how long an async process() takes first."""

import asyncio
import sys

from batchcli import Param, Service, Source, inject


def end(exit: int, interrupt: bool) -> None:
    if interrupt:
        raise KeyboardInterrupt
    sys.exit(exit)


@inject
class Commands(Source[str]):
    def __init__(self, count: Param[int] = 6, where: Param[str] = "process") -> None:
        self.count = count
        self.where = where

    def __iter__(self):
        for n in range(self.count):
            if self.where == "source" and n == 3:
                end(4, False)
            yield f"cmd-{n}"


@inject
class Main(Service[str]):
    def __init__(
        self,
        where: Param[str] = "process",
        exit: Param[int] = 2,
        interrupt: Param[bool] = False,
        sync: Param[bool] = False,
        delay_s: Param[float] = 0.0,
    ) -> None:
        self.where = where
        self.delay_s = delay_s
        self.exit = exit
        self.interrupt = interrupt
        if sync:
            self.process = self.end  # type: ignore[method-assign]  # a sync process: it runs in a thread

    async def setup(self) -> None:
        if self.where == "setup":
            end(self.exit, self.interrupt)

    async def process(self, item: str) -> None:
        await asyncio.sleep(self.delay_s)
        self.end(item)

    def end(self, item: str) -> None:
        if self.where == "process" and not item.endswith("0"):  # cmd-0, cmd-10, ... succeed
            end(self.exit, self.interrupt)
