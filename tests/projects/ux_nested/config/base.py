"""The settings every environment of the sync job shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from batchcli import Configuration


@dataclass(frozen=True)
class Pool:
    """Connection pool settings."""

    size: int = 5
    """Connections kept open."""
    timeout: timedelta = timedelta(seconds=30)  # how long to wait for a free connection


@dataclass(frozen=True)
class Database:
    """Where rows go."""

    host: str = "localhost"
    """The database server."""
    port: int = 5432
    pool: Pool = field(default_factory=Pool)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be between 1 and 65535, got {self.port!r}")


@dataclass(frozen=True)
class Cache:
    """An optional cache in front of the database."""

    url: str
    """Where the cache listens."""
    ttl_s: int = 60


@dataclass(kw_only=True)
class SyncConfig(Configuration):
    """What every environment sets."""

    db: Database = field(default_factory=lambda: Database(host="db.internal"))
    """The target database."""
    cache: Cache | None = None
    label: str = "sync"  # stored with every copied row
