"""Inputs of every JSON form fail, to check failed.jsonl, persist_failed and summary.json."""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from batchcli import Configuration, Service, Source, inject


@dataclass(frozen=True)
class Order:
    id: int
    sku: str


class Point(NamedTuple):
    x: int
    y: int


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


def inputs() -> list:
    return [
        1,
        Order(2, "sku-2"),
        "fine",
        Point(3, 4),
        datetime(2024, 1, 31, 12, 30),
        {"fine": True},
        Opaque(),
        ["a", 1],
    ]


FAILING = {1, 3, 4, 6, 7}  # positions in inputs() that fail


@inject
class Mixed(Source[object]):
    def __init__(self, config: Configuration) -> None:
        self.config = config
        self.items = inputs()
        self.persisted: list[list[object]] = []

    def __iter__(self):
        yield from self.items

    def __len__(self) -> int:
        return len(self.items)

    def persist_failed(self, failed: list[object]) -> None:
        self.persisted.append(failed)
        positions = sorted(self.items.index(f) for f in failed)
        identical = all(any(f is i for i in self.items) for f in failed)
        (self.config.run_dir / "persisted.json").write_text(
            json.dumps({"calls": len(self.persisted), "positions": positions, "identical": identical})
        )


def check(item: object) -> None:
    if isinstance(item, (Order, Point, datetime, Opaque, list)):
        raise LookupError(f"no record for {item!r}")


@inject
class Strict(Service[object]):
    async def process(self, item: object) -> None:
        check(item)
