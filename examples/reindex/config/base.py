"""Settings shared by every environment of the reindex job."""

from __future__ import annotations

from abc import ABCMeta
from dataclasses import dataclass

from batchcli import Configuration


@dataclass(kw_only=True)
class ReindexConfig(Configuration, metaclass=ABCMeta):
    """What every environment of the job sets."""

    index_name: str = "records"
    """The search index to write to."""
    batch_label: str = "manual"
    """A label stored with every re-indexed record."""
