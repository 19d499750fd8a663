"""Item 0 fails once; while it waits out its backoff, the single slot must serve the other items."""

import asyncio
import json

from batchcli import Configuration, Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 6) -> None:
        self.count = count

    def __iter__(self):
        yield from range(self.count)


@inject
class FailFirstOnce(Service[int]):
    def __init__(self, config: Configuration) -> None:
        self.config = config
        self.events: list[str] = []

    async def process(self, item: int) -> None:
        attempt = sum(1 for e in self.events if e.startswith(f"start {item} ")) + 1
        self.events.append(f"start {item} attempt {attempt}")
        await asyncio.sleep(0.001)
        if item == 0 and attempt == 1:
            raise ConnectionError("item 0 drops its first connection")
        self.events.append(f"done {item}")

    def finish(self) -> None:
        (self.config.run_dir / "events.json").write_text(json.dumps(self.events))
