"""Item ``bad_at`` pickles fine but raises when it is loaded back (its ``__reduce__`` rebuilds it through code
that raises); every item fails until ``ok``."""

from __future__ import annotations

from typing import Any

from batchcli import Param, Service, Source, inject


class LoadsBadly:
    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, (self.n,))


def _refuse(n: int) -> LoadsBadly:
    raise RuntimeError(f"input {n} cannot be rebuilt")


@inject
class Items(Source[Any]):
    def __init__(self, count: Param[int] = 6, bad_at: Param[int] = 3) -> None:
        self.count, self.bad_at = count, bad_at

    def __iter__(self):
        for n in range(self.count):
            yield LoadsBadly(n) if n == self.bad_at else n


@inject
class Work(Service[Any]):
    def __init__(self, ok: Param[bool] = False) -> None:
        self.ok = ok

    def process(self, item: Any) -> None:
        if isinstance(item, LoadsBadly):
            raise KeyError("loads badly")
        if not self.ok:
            raise ValueError(f"item {item} is refused")
