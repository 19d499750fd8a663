"""File names as os.listdir gives them on Linux: undecodable bytes become lone surrogates (``surrogateescape``).

Items are keyed by their name; ``bad`` names the item whose ``process`` raises, with the name in the message;
the others return a named tuple holding the name (kept as JSON, not marshal).
"""

from __future__ import annotations

from typing import NamedTuple

from batchcli import Param, Service, Source, inject


class Opened(NamedTuple):
    name: str

NAMES = ["plain.txt", b"caf\xe9.txt".decode("utf-8", "surrogateescape"), b"na\xefve.txt".decode("utf-8", "surrogateescape")]


@inject
class Files(Source[str]):
    def __iter__(self):
        return iter(NAMES)

    def __len__(self) -> int:
        return len(NAMES)

    def item_key(self, item: str) -> str:
        return item


@inject
class Open(Service[str]):
    def __init__(self, bad: Param[int] = 1) -> None:
        self.bad = bad

    async def process(self, item: str) -> Opened:
        if item == NAMES[self.bad]:
            raise OSError(f"cannot open {item}")
        return Opened(item)
