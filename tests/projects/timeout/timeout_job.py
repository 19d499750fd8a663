"""One item hangs: item_timeout_s must cancel each attempt of it."""

import asyncio
import json
from collections import Counter

from batchcli import Configuration, Service, Source, inject


@inject
class Items(Source[str]):
    def __iter__(self):
        yield from ["quick", "hangs", "quick-too"]


@inject
class Slow(Service[str]):
    def __init__(self, config: Configuration) -> None:
        self.config = config
        self.attempts: Counter[str] = Counter()
        self.cancelled = 0

    async def process(self, item: str) -> None:
        self.attempts[item] += 1
        if item == "hangs":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise

    def finish(self) -> None:
        result = {"attempts": self.attempts, "cancelled": self.cancelled}
        (self.config.run_dir / "timeout.json").write_text(json.dumps(result))
