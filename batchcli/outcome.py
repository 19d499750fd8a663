"""What happened to the items: the counters and failure records a run keeps, fed by its executor."""

from __future__ import annotations

import logging
import reprlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("batchcli")
tracebacks = logging.getLogger("batchcli.traceback")


@dataclass(frozen=True)
class Failure:
    """One item that finally failed, with its reason."""

    ordinal: int
    """Position of the item in the source (0-based)."""
    item: Any
    """The input itself, exactly as the source yielded it."""
    error_type: str
    """Qualified name of the exception class."""
    error_message: str
    """``str()`` of the exception."""
    traceback: str
    """The user's traceback, batchcli's frames trimmed."""
    attempts: int
    """How many attempts were made."""
    first_failed_at: float
    """Epoch seconds of the first failed attempt."""
    failed_at: float
    """Epoch seconds of the last failed attempt."""


class Tally:
    """The live counts of a run; executors update them, the display and the journal read them.

    The success path touches only ``succeeded``, ``in_flight`` and ``done``: plain attributes and a
    deque append, cheap and safe to read from other threads under the GIL.
    """

    def __init__(self, total: int | None = None, clock: Any = time.monotonic) -> None:
        self.total = total
        """Items in the source: from ``len()``, or counted once the source is exhausted."""
        self.succeeded = 0
        self.failed = 0
        self.retrying = 0
        """Items waiting out a backoff delay."""
        self.in_flight = 0
        self.skipped = 0
        """Items a resumed run did not redo because an earlier run settled them."""
        self.done: deque[int] = deque()
        """Ordinals that succeeded and are not yet journaled."""
        self.failures: list[Failure] = []
        """Every final failure, in order."""
        self.new_failures: deque[Failure] = deque()
        """Final failures not yet written to ``failed.jsonl`` and the journal."""
        self.exhausted = False
        """True once the source has yielded its last item."""
        self.started = clock()
        self._clock = clock

    @property
    def settled(self) -> int:
        """Items that succeeded or finally failed."""
        return self.succeeded + self.failed

    def fail(self, failure: Failure) -> None:
        """Record a final failure (called on the executor's loop; failures are the slow path)."""
        self.failed += 1
        self.failures.append(failure)
        self.new_failures.append(failure)
        log.error(
            "Item #%d (%s) failed after %d attempt%s: %s: %s",
            failure.ordinal,
            reprlib.repr(failure.item),
            failure.attempts,
            "" if failure.attempts == 1 else "s",
            failure.error_type,
            failure.error_message,
        )
        tracebacks.error("Item %d:\n%s", failure.ordinal, failure.traceback)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return float(self._clock() - self.started)
