"""A directory project for the Dask test against separately started workers: batchcli ships its files."""

from __future__ import annotations

import os
from pathlib import Path

from batchcli import Param, Service, Source, inject
from shipped.helpers import square


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 20) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Squares(Service[int]):
    """Writes ``n n*n`` per item to ``ok-<pid>``; ``setup()`` notes where this module was loaded from."""

    def __init__(self, record_dir: Param[Path], factor: Param[int] = 1) -> None:
        self.record_dir = record_dir
        self.factor = factor

    def setup(self) -> None:
        (self.record_dir / f"setup-{os.getpid()}").write_text(__file__)

    def process(self, item: int) -> None:
        with (self.record_dir / f"ok-{os.getpid()}").open("a") as file:
            file.write(f"{item} {square(item) * self.factor}\n")
