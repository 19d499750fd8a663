"""Development settings."""

from __future__ import annotations

from dataclasses import dataclass

from .base import SquaresConfig


@dataclass(kw_only=True)
class DevConfig(SquaresConfig):
    """A developer's machine."""

    label: str = "dev"
