"""A Batchframe source with its imports renamed: __len__, next() raising StopIteration, persist_failed."""

import json

from batchcli import Param, Source, inject

from .config.abstract_custom_config import AbstractCustomConfig


@inject
class TestSource(Source[int]):
    _curr_count = 0

    def __init__(self, config: AbstractCustomConfig, count: Param[int] = 10) -> None:
        self.config = config
        self.count = count
        self.persist_calls = 0

    def __len__(self) -> int:
        return self.count

    def next(self) -> int:
        self._curr_count += 1
        if self._curr_count <= self.count:
            return self._curr_count
        else:
            raise StopIteration()

    def persist_failed(self, failed: list[int]):
        self.persist_calls += 1
        path = self.config.run_dir / "persisted.json"
        path.write_text(json.dumps({"calls": self.persist_calls, "failed": failed}))
