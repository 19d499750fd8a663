"""A keyed Source whose ``item_key`` returns Enum members that are a str or an int (``StrEnum``, ``IntEnum``), as
the docs allow; ``process`` returns a small dict (the batch path) or a dict holding a list (kept on its own)."""

from __future__ import annotations

import enum

from batchcli import Param, Service, Source, inject


class Region(enum.StrEnum):
    EU = "eu"
    US = "us"
    ASIA = "asia"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@inject
class Regions(Source[object]):
    def __init__(self, keys: Param[str] = "str") -> None:
        self.members: list[object] = list(Region) if keys == "str" else list(Level)

    def __iter__(self):
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def item_key(self, item: object) -> object:
        return item


@inject
class Count(Service[object]):
    def __init__(self, nested: Param[bool] = False) -> None:
        self.nested = nested

    async def process(self, item: object) -> object:
        value = item.value  # type: ignore[attr-defined]
        return {"value": value, "seen": [value]} if self.nested else {"value": value}
