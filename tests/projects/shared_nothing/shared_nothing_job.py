"""Module-level state and instances, to check that two runs in one process share nothing."""

import json

from batchcli import Configuration, Service, Source, inject

INSTANCES: list[object] = []
PROCESSED = 0


@inject
class Numbers(Source[int]):
    def __init__(self) -> None:
        INSTANCES.append(self)

    def __iter__(self):
        yield from range(4)


@inject
class Count(Service[int]):
    def __init__(self, config: Configuration, source: Source) -> None:
        self.config = config
        self.source = source

    async def process(self, item: int) -> None:
        global PROCESSED
        PROCESSED += 1

    def finish(self) -> None:
        state = {"processed": PROCESSED, "instances": len(INSTANCES), "source_id": id(self.source)}
        (self.config.run_dir / "state.json").write_text(json.dumps(state))
