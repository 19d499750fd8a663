"""``raise_in`` (setup, iter or finish) raises an exception whose ``__str__`` raises too; ``label`` is echoed in
every result (a ``-p`` value, which may hold bytes that are not UTF-8)."""

from __future__ import annotations

from collections.abc import Iterator

from batchcli import Param, Service, Source, inject


class Broken(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ of Broken raised")


@inject
class Numbers(Source[int]):
    def __init__(self, raise_in: Param[str] = "") -> None:
        self.raise_in = raise_in

    def __iter__(self) -> Iterator[int]:
        for n in range(3):
            if self.raise_in == "iter" and n == 1:
                raise Broken()
            yield n


@inject
class Echo(Service[int]):
    def __init__(self, raise_in: Param[str] = "", label: Param[str] = "") -> None:
        self.raise_in, self.label = raise_in, label

    def setup(self) -> None:
        if self.raise_in == "setup":
            raise Broken()

    async def process(self, item: int) -> None:
        pass

    def finish(self) -> None:
        if self.raise_in == "finish":
            raise Broken()
