"""Production: the region must be chosen on the command line."""

from __future__ import annotations

from dataclasses import dataclass

from .base import SyncConfig


@dataclass(kw_only=True)
class ProdConfig(SyncConfig):
    """The production cluster."""

    region: str
    """The region to sync (required)."""
