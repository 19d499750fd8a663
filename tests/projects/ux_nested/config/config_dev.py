"""Development: a local database."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Database, SyncConfig


@dataclass(kw_only=True)
class DevConfig(SyncConfig):
    """A developer's machine."""

    db: Database = field(default_factory=lambda: Database(host="localhost", port=6543))
