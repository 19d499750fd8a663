"""Params of many types, cast into constructors; a Param in a helper class; config fields set by -p."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Literal, Optional

from batchcli import Configuration, Param, Service, Source, inject


class Color(Enum):
    RED = "red"
    GREEN = "green"


@dataclass(kw_only=True)
class JobConfig(Configuration):
    """The project's only configuration: used without -c."""

    region: str = "us"
    batch_size: int = 100


@inject
class Greeter:
    """Neither a Source nor a Service, yet it takes a param."""

    def __init__(self, greeting: Param[str] = "hello") -> None:
        self.greeting = greeting


@inject
class Items(Source[int]):
    def __init__(self, count: Param[int], dry_run: Param[bool] = False) -> None:
        self.count = count
        self.dry_run = dry_run

    def __iter__(self):
        yield from range(self.count)


@inject
class Record(Service[int]):
    def __init__(
        self,
        config: JobConfig,
        greeter: Greeter,
        source: Source,
        target: Param[Path],
        since: Param[datetime],
        color: Param[Color],
        mode: Param[Literal["fast", "slow"]] = "fast",
        limit: Param[Optional[int]] = None,
        price: Param[Decimal] = Decimal("1.50"),
        tags: Param[list[str]] = ["Smith, J", "plain"],  # noqa: B006 - never mutated
    ) -> None:
        self.values = {
            "count": (source.count, type(source.count).__name__),
            "dry_run": (source.dry_run, type(source.dry_run).__name__),
            "greeting": (greeter.greeting, type(greeter.greeting).__name__),
            "target": (str(target), type(target).__name__),
            "since": (since.isoformat(), type(since).__name__),
            "color": (color.name, type(color).__name__),
            "mode": (mode, type(mode).__name__),
            "limit": (limit, type(limit).__name__),
            "price": (str(price), type(price).__name__),
            "tags": (tags, type(tags).__name__),
            "config_class": (type(config).__name__, "str"),
            "region": (config.region, type(config.region).__name__),
            "batch_size": (config.batch_size, type(config.batch_size).__name__),
            "concurrency": (config.concurrency, type(config.concurrency).__name__),
            "backoff_s": (config.backoff_s, type(config.backoff_s).__name__),
        }
        self.config = config

    def process(self, item: int) -> None:
        pass

    def finish(self) -> None:
        (self.config.run_dir / "values.json").write_text(json.dumps(self.values))
