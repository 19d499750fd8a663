"""Writes one record to the index (here: a file per index, standing in for a search service)."""

from __future__ import annotations

import json
import threading
from typing import Any

from batchcli import Service, inject

from .config.base import ReindexConfig
from .records import RecordFile


@inject
class Indexer(Service[dict[str, Any]]):
    """Indexes records; a plain ``def process`` runs in worker threads."""

    def __init__(self, config: ReindexConfig, source: RecordFile) -> None:
        self.config = config
        self.source = source
        self._lock = threading.Lock()
        self._out: Any = None

    def setup(self) -> None:
        path = self.config.run_dir / f"{self.config.index_name}.jsonl"
        self._out = path.open("a", encoding="utf-8")  # "a": a resumed run keeps what it wrote

    def process(self, item: dict[str, Any]) -> None:
        if "id" not in item:
            raise KeyError(f"record has no id: {item!r}")
        line = json.dumps({**item, "label": self.config.batch_label})
        with self._lock:
            self._out.write(line + "\n")

    def finish(self) -> None:
        if self._out is not None:
            self._out.close()
