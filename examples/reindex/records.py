"""Where the records come from: a JSON-lines file, streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchcli import Param, Source, inject


@inject
class RecordFile(Source[dict[str, Any]]):
    """Streams records from a JSON-lines file (or generates some when none is given).

    Args:
        records: A JSON-lines file with one record per line.
        generate: How many records to make up when no file is given.
    """

    def __init__(self, records: Param[Path | None] = None, generate: Param[int] = 500) -> None:
        self.records = records
        self.generate = generate

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.records is None:
            for n in range(self.generate):
                yield {"id": n, "title": f"record {n}"}
            return
        with self.records.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)
