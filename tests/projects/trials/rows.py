"""Rows of a text file, keyed by their name; every hook appends a line to the ledger, and some rows fail on purpose.

``down-*`` rows raise ``Unreachable`` (the user's own ``ConnectionError``), ``bad-*`` rows a ``ValueError``.
"""

from __future__ import annotations

from pathlib import Path

from batchcli import Param, Secret, Service, Source, inject


def note(ledger: Path, line: str) -> None:
    with open(ledger, "a") as out:
        out.write(line + "\n")


class Unreachable(ConnectionError):
    """A user's own error type: a subclass of a built-in one."""


@inject
class Rows(Source[str]):
    """One item per whitespace-separated word of ``input``; raises at ``crash_at`` (a row name) to end a session."""

    def __init__(self, input: Param[Path], ledger: Param[Path], crash_at: Param[str] = "") -> None:
        self.rows = input.read_text().split()
        self.ledger = ledger
        self.crash_at = crash_at
        note(ledger, "source built")

    def __iter__(self):
        for row in self.rows:
            if row == self.crash_at:
                raise RuntimeError(f"the source broke at {row}")
            yield row

    def __len__(self) -> int:
        return len(self.rows)

    def item_key(self, item: str) -> str:
        return item

    def persist_failed(self, failed: list[str]) -> None:
        note(self.ledger, "persist_failed")


@inject
class Handle(Service[str]):
    """Notes each row in the ledger; fails ``down-*`` and ``bad-*`` rows unless ``fixed``."""

    def __init__(self, ledger: Param[Path], token: Param[Secret] = Secret("none"), fixed: Param[bool] = False) -> None:
        self.ledger = ledger
        self.fixed = fixed
        note(ledger, "service built")

    def setup(self) -> None:
        note(self.ledger, "setup")

    def process(self, item: str) -> None:
        note(self.ledger, f"process {item}")
        if not self.fixed and item.startswith("down"):
            raise Unreachable(f"host {item} unreachable")
        if not self.fixed and item.startswith("bad"):
            raise ValueError(f"row {item} is malformed")

    def finish(self) -> None:
        note(self.ledger, "finish")
