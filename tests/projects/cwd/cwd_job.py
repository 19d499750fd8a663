"""Each item appends its number to ``out`` (a relative path by default) and returns the worker's working directory."""

from __future__ import annotations

import os
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 4) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))


@inject
class Write(Service[int]):
    def __init__(self, out: Param[Path] = Path("written.txt")) -> None:
        self.out = out

    def process(self, item: int) -> str:
        with open(self.out, "a", encoding="utf-8") as file:
            file.write(f"{item}\n")
        return os.getcwd()
