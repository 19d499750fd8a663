"""Enum params whose spelling once differed between casting, --help and completion; records what arrived."""

from __future__ import annotations

import json
from enum import Enum

from batchcli import Configuration, Param, Service, Source, inject


class Ratio(Enum):
    """Float values: plain, so written by value (casting listed 0.5, 1.0; help and completion said HALF, FULL)."""

    HALF = 0.5
    FULL = 1.0


class Shape(Enum):
    """One value -p cannot type: written by name (completion offered 'point' for POINT but LINE for LINE)."""

    POINT = "point"
    LINE = (1, 0)


@inject
class Received(Source[str]):
    """Yields one item after writing the members it was given to received.json in the run directory."""

    def __init__(self, config: Configuration, ratio: Param[Ratio] = Ratio.HALF, shape: Param[Shape] = Shape.POINT) -> None:
        self.config = config
        self.received = {"ratio": ratio.name, "shape": shape.name}

    def __iter__(self):  # type: ignore[no-untyped-def]
        (self.config.run_dir / "received.json").write_text(json.dumps(self.received))
        yield "one"


@inject
class Accept(Service[str]):
    """Accepts every item."""

    def process(self, item: str) -> None:
        return None
