"""Async setup()/process()/finish() over an async-iterable source; the source or setup can raise."""

import asyncio
import json
from typing import Literal

from batchcli import Configuration, Param, Service, Source, inject

Failure = Literal["none", "source", "setup"]


@inject
class Pages(Source[int]):
    """A paginated API: every page is awaited."""

    def __init__(self, fail: Param[Failure] = "none", pages: Param[int] = 3) -> None:
        self.fail = fail
        self.pages = pages

    async def __aiter__(self):
        for page in range(self.pages):
            await asyncio.sleep(0.001)
            if self.fail == "source" and page == 1:
                raise RuntimeError("page 2 returned HTTP 500")
            for n in range(page * 4, page * 4 + 4):
                yield n


@inject
class Recorder(Service[int]):
    def __init__(self, config: Configuration, source: Pages) -> None:
        self.config = config
        self.source = source
        self.events: list[str] = []

    async def setup(self) -> None:
        await asyncio.sleep(0)
        self.events.append("setup")
        if self.source.fail == "setup":
            raise PermissionError("cannot open the output bucket")

    async def process(self, item: int) -> None:
        await asyncio.sleep(0.001)
        self.events.append(f"process {item}")

    async def finish(self) -> None:
        await asyncio.sleep(0)
        self.events.append("finish")
        (self.config.run_dir / "events.json").write_text(json.dumps(self.events))
