"""Development: a small, fast index and quick retries."""

from __future__ import annotations

from dataclasses import dataclass

from batchcli import inject

from .base import ReindexConfig


@inject
@dataclass(kw_only=True)
class DevConfig(ReindexConfig):
    """Settings for a developer's machine."""

    index_name: str = "records-dev"
    concurrency: int = 20
    backoff_s: float = 0.05
