"""Settings shared by the squares job's configurations."""

from __future__ import annotations

from dataclasses import dataclass

from batchcli import Configuration


@dataclass(kw_only=True)
class SquaresConfig(Configuration):
    """What every environment sets."""

    label: str = "square"
    """Written before each square."""
