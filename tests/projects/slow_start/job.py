"""A job whose start-up takes a while, to stop it there: its import and its Source's constructor can wait.

``SLOW_START_IMPORT_S`` (environment: params do not exist yet at import) makes the import sleep;
``init_s`` makes the Source's constructor sleep (after a finaliser that sleeps ``del_s``, if given). Each writes a marker to ``ledger_dir`` first, so a
test knows where start-up is. Every processed item is appended to ``ledger_dir/ledger`` (one line
per processing), the ledger the tests count duplicates in.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from batchcli import Param, Service, Source, inject

_import_s = float(os.environ.get("SLOW_START_IMPORT_S", "0"))
if _import_s:
    Path(os.environ["SLOW_START_MARKERS"], "importing").touch()
    time.sleep(_import_s)


class _Finaliser:
    """Sleeps in ``__del__``: a signal handled there has its exception printed and dropped by Python."""

    def __init__(self, ledger_dir: Path, seconds: float) -> None:
        self.ledger_dir, self.seconds = ledger_dir, seconds

    def __del__(self) -> None:
        (self.ledger_dir / "finalising").touch()
        time.sleep(self.seconds)


@inject
class Numbers(Source[int]):
    """0 .. count-1, after ``init_s`` seconds in the constructor (a slow connection, say)."""

    def __init__(
        self, ledger_dir: Param[Path], count: Param[int] = 20, init_s: Param[float] = 0.0, del_s: Param[float] = 0.0
    ) -> None:
        self.count = count
        if del_s:
            _Finaliser(ledger_dir, del_s)  # dropped at once: its __del__ runs here, then the sleep below
        if init_s:
            (ledger_dir / "constructing").touch()
            try:
                time.sleep(init_s)
            except Exception:  # a user's broad except must not swallow the stop
                pass

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Ledger(Service[int]):
    """Appends each item to the ledger."""

    def __init__(self, ledger_dir: Param[Path]) -> None:
        self.ledger = ledger_dir / "ledger"

    def process(self, item: int) -> None:
        with open(self.ledger, "a") as out:
            out.write(f"{item}\n")
