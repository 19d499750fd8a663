"""A generator source without __len__ that records how far ahead of the service it has been read."""

import asyncio
import json

from batchcli import Configuration, Param, Service, Source, inject


@inject
class Stream(Source[int]):
    def __init__(self, count: Param[int] = 50) -> None:
        self.count = count
        self.yielded = 0

    def __iter__(self):
        for n in range(self.count):
            self.yielded += 1
            yield n


@inject
class Echo(Service[int]):
    def __init__(self, config: Configuration, source: Stream) -> None:
        self.config = config
        self.source = source
        self.processed = 0
        self.max_ahead = 0

    async def process(self, item: int) -> None:
        # How many items were taken from the source but not yet finished: bounded by concurrency
        # when the source is streamed, the whole count if it were materialised.
        self.max_ahead = max(self.max_ahead, self.source.yielded - self.processed)
        await asyncio.sleep(0.001)
        self.processed += 1

    def finish(self) -> None:
        result = {"processed": self.processed, "max_ahead": self.max_ahead}
        (self.config.run_dir / "stream.json").write_text(json.dumps(result))
