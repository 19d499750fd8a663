"""Sync setup()/process()/finish() that log their calls; the source or setup can be told to raise."""

import json
from typing import Literal

from batchcli import Configuration, Param, Service, Source, inject

Failure = Literal["none", "source", "setup"]


@inject
class Numbers(Source[int]):
    def __init__(self, fail: Param[Failure] = "none") -> None:
        self.fail = fail

    def __iter__(self):
        for n in range(6):
            if self.fail == "source" and n == 3:
                raise RuntimeError("the database went away")
            yield n


@inject
class Recorder(Service[int]):
    def __init__(self, config: Configuration, source: Numbers) -> None:
        self.config = config
        self.source = source
        self.events: list[str] = []

    def setup(self) -> None:
        self.events.append("setup")
        if self.source.fail == "setup":
            raise PermissionError("cannot open the output bucket")

    def process(self, item: int) -> None:
        self.events.append(f"process {item}")

    def finish(self) -> None:
        self.events.append("finish")
        (self.config.run_dir / "events.json").write_text(json.dumps(self.events))
