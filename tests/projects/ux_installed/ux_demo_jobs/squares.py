"""Squares numbers and writes them down: an installed demo job.

Registered by the test as ``squares = ux_demo_jobs.squares``.
"""

from __future__ import annotations

from collections.abc import Iterator

from batchcli import Param, Service, Source, inject

from .config.base import SquaresConfig


@inject
class Numbers(Source[int]):
    """The numbers to square.

    Args:
        count: How many numbers.
    """

    def __init__(self, count: Param[int] = 4) -> None:
        self.count = count

    def __iter__(self) -> Iterator[int]:
        yield from range(1, self.count + 1)

    def __len__(self) -> int:
        return self.count


@inject
class Square(Service[int]):
    """Appends ``label: n*n`` to squares.txt in the run directory."""

    def __init__(self, config: SquaresConfig) -> None:
        self.config = config
        self.lines: list[str] = []

    def process(self, item: int) -> None:
        self.lines.append(f"{self.config.label}: {item * item}")

    def finish(self) -> None:
        (self.config.run_dir / "squares.txt").write_text("\n".join(sorted(self.lines)) + "\n")
