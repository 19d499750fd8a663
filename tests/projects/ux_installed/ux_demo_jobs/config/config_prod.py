"""Production settings."""

from __future__ import annotations

from dataclasses import dataclass

from .base import SquaresConfig


@dataclass(kw_only=True)
class ProdConfig(SquaresConfig):
    """Production."""

    label: str = "prod"
