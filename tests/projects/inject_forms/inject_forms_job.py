"""Every form of @inject, an aliased abstract helper, and a Service asking for Source[int]."""

import json
from abc import ABC, abstractmethod

from batchcli import Configuration, Service, Source, inject


class Store(ABC):
    """An interface the service depends on; the project provides the implementation."""

    @abstractmethod
    def put(self, item: int) -> None: ...


@inject(alias=Store)
class MemoryStore(Store):
    def __init__(self) -> None:
        self.items: list[int] = []

    def put(self, item: int) -> None:
        self.items.append(item)


@inject()
class Numbers(Source[int]):
    def __iter__(self):
        yield from range(4)


@inject
class Save(Service[int]):
    def __init__(self, store: Store, source: Source[int], config: Configuration, memory: MemoryStore) -> None:
        self.store = store
        self.source = source
        self.config = config
        self.memory = memory

    async def process(self, item: int) -> None:
        self.store.put(item)

    def finish(self) -> None:
        wiring = {
            "store": type(self.store).__name__,
            "source": type(self.source).__name__,
            "one_store": self.store is self.memory,
            "stored": sorted(self.store.items),
        }
        (self.config.run_dir / "wiring.json").write_text(json.dumps(wiring))
