"""Orders as dataclasses; some fail while ``strict``. The service logs each item's type and its settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from batchcli import Configuration, Param, Service, Source, inject


@dataclass(frozen=True)
class Order:
    id: int
    sku: str


@inject
class Orders(Source[Order]):
    """Orders 1 .. count."""

    def __init__(self, count: Param[int] = 20) -> None:
        self.count = count
        self.persisted: list[Order] = []

    def __iter__(self):
        for n in range(1, self.count + 1):
            yield Order(n, f"SKU-{n % 3}")

    def __len__(self) -> int:
        return self.count

    def persist_failed(self, failed: list[Order]) -> None:
        (Path(os.environ.get("ORDERS_PERSIST_DIR", ".")) / f"persisted-{os.getpid()}.txt").write_text(
            "".join(f"{order!r}\n" for order in failed)
        )


@inject
class Ship(Service[Order]):
    """While ``strict``: orders divisible by 4 are out of stock, order 10 has an unknown warehouse."""

    def __init__(self, config: Configuration, log_dir: Param[Path], strict: Param[bool] = True) -> None:
        self.config = config
        self.log = log_dir / f"{os.getpid()}.log"
        self.strict = strict

    def process(self, item: Order) -> None:
        with open(self.log, "a") as out:
            out.write(f"{type(item).__module__}.{type(item).__qualname__} {item!r} strict={self.strict} "
                      f"timeout={self.config.item_timeout_s}\n")
        if self.strict and item.id % 4 == 0:
            raise ValueError("out of stock")
        if self.strict and item.id == 10:
            raise KeyError("warehouse")
