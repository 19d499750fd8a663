"""Copies rows to a database (pretend): a job whose configuration nests dataclasses two levels deep."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from batchcli import Param, Service, Source, inject

from .config.base import SyncConfig


@inject
class Rows(Source[int]):
    """The rows to copy.

    Args:
        rows: How many rows to copy.
        table: The table to read them from,
            spelled as in the database.
    """

    def __init__(self, table: Param[str], rows: Param[int] = 3) -> None:
        self.table = table
        self.rows = rows

    def __iter__(self) -> Iterator[int]:
        yield from range(self.rows)

    def __len__(self) -> int:
        return self.rows


@inject
class Copy(Service[int]):
    """Records the configuration it was given, then accepts every row."""

    def __init__(self, config: SyncConfig) -> None:
        self.config = config

    def setup(self) -> None:
        def plain(value: Any) -> Any:
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)

        settings = plain(self.config)
        settings["type"] = type(self.config).__name__
        (self.config.run_dir / "config.json").write_text(json.dumps(settings, indent=1))

    def process(self, item: int) -> None:
        return None
