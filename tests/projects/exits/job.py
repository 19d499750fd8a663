"""A process() that ends the way a library's command-line main does: ``sys.exit(code)`` (``exit`` the code), or
raises ``KeyboardInterrupt`` itself (``interrupt``); sync with ``sync``, for the thread and process paths."""

import sys

from batchcli import Param, Service, Source, inject


@inject
class Commands(Source[str]):
    def __init__(self, count: Param[int] = 6) -> None:
        self.count = count

    def __iter__(self):
        return (f"cmd-{n}" for n in range(self.count))


@inject
class Main(Service[str]):
    def __init__(self, exit: Param[int] = 2, interrupt: Param[bool] = False, sync: Param[bool] = False) -> None:
        self.exit = exit
        self.interrupt = interrupt
        if sync:
            self.process = self.end  # type: ignore[method-assign]  # a sync process: it runs in a thread

    async def process(self, item: str) -> None:
        self.end(item)

    def end(self, item: str) -> None:
        if item.endswith("0"):
            return  # the first one succeeds
        if self.interrupt:
            raise KeyboardInterrupt
        sys.exit(self.exit)
