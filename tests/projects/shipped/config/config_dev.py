"""The one environment of the shipped project."""

from __future__ import annotations

from dataclasses import dataclass

from batchcli import Configuration


@dataclass(kw_only=True)
class ConfigDev(Configuration):
    """Three items in flight per worker, so the shipped job runs on the workers' lanes."""

    concurrency: int = 6
    backoff_s: float = 0.0
