"""Production: the real index, gentler on the service."""

from __future__ import annotations

from dataclasses import dataclass

from batchcli import inject

from .base import ReindexConfig


@inject
@dataclass(kw_only=True)
class ProdConfig(ReindexConfig):
    """Settings for the production cluster."""

    index_name: str = "records"
    concurrency: int = 50
    rate_limit: float | None = 500.0
