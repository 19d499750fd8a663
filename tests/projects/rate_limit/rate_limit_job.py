"""Records when each item starts, as seen inside the service, to check the rate limit."""

import json
import time

from batchcli import Configuration, Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 20) -> None:
        self.count = count

    def __iter__(self):
        yield from range(self.count)


@inject
class Stamp(Service[int]):
    def __init__(self, config: Configuration) -> None:
        self.config = config
        self.starts: list[float] = []

    async def process(self, item: int) -> None:
        self.starts.append(time.monotonic())

    def finish(self) -> None:
        (self.config.run_dir / "starts.json").write_text(json.dumps(self.starts))
