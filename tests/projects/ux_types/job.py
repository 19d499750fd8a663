"""A job that takes one param of every type batchcli casts, and writes what it received to values.json."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from batchcli import Configuration, Param, Secret, Service, Source, inject


class Mode(Enum):
    FAST = "fast"
    SLOW = "slow"


def _plain(value: Any) -> Any:
    """A JSON form that keeps the type visible: [type name, value]."""
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [type(value).__name__, [_plain(v) for v in items]]
    if isinstance(value, dict):
        return ["dict", {str(k): _plain(v) for k, v in value.items()}]
    if isinstance(value, Enum):
        return [type(value).__name__, value.name]
    if isinstance(value, timedelta):
        return ["timedelta", value.total_seconds()]
    if value is None or isinstance(value, (bool, int, float)):
        return [type(value).__name__, value]
    return [type(value).__name__, str(value)]


@inject
class Values(Source[str]):
    """Yields one item after recording its params."""

    def __init__(
        self,
        config: Configuration,
        count: Param[int] = 1,
        ratio: Param[float] = 0.5,
        price: Param[Decimal] = Decimal("1.00"),
        flag: Param[bool] = False,
        path: Param[Path | None] = None,
        when: Param[datetime | None] = None,
        day: Param[date | None] = None,
        wait: Param[timedelta] = timedelta(seconds=1),
        mode: Param[Mode] = Mode.FAST,
        level: Param[Literal["low", "high"]] = "low",
        ids: Param[list[int]] = [],  # noqa: B006 - never mutated
        tags: Param[set[str]] = frozenset(),  # type: ignore[assignment]
        pair: Param[tuple[int, str] | None] = None,
        sizes: Param[tuple[float, ...]] = (),
        limits: Param[dict[str, int]] = {},  # noqa: B006 - never mutated
        token: Param[Secret | None] = None,
    ) -> None:
        self.config = config
        self.values = dict(locals())
        del self.values["self"], self.values["config"]

    def __iter__(self) -> Any:
        received = {name: _plain(value) for name, value in self.values.items() if name != "token"}
        received["token"] = None if self.values["token"] is None else type(self.values["token"]).__name__
        (self.config.run_dir / "values.json").write_text(json.dumps(received, indent=1))
        yield "one"


@inject
class Accept(Service[str]):
    """Accepts every item."""

    def process(self, item: str) -> None:
        return None
