"""When a run stopped at once stops waiting for its event loop thread, whatever the user's code does.

A second signal (or ``stop_timeout_s`` running out) cancels the items in flight, but a ``process``
may swallow ``CancelledError``, and asyncio's own shutdown then waits for it for ever; an async
``process`` that blocks in a sync call holds the loop itself. The main thread, which only waits,
reads this clock and leaves the loop thread behind: the journal and the summary are written
without it, and the CLI exits without joining it.
"""

from __future__ import annotations

import time
from typing import Callable

GRACE_S = 1.5
"""After a hard stop, the most the main thread waits for the loop thread to end."""

WIND_UP_S = 0.25
"""Once the loop has run ``finish()`` and ``persist_failed``, how long asyncio's own shutdown may take
after a hard stop (it waits for every task, those that refused to be cancelled included)."""


class HardStop:
    """The clock of a hard stop; ``begin`` and ``wound_up`` may be called from any thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._began: float | None = None
        self._wound_up: float | None = None

    @property
    def begun(self) -> bool:
        """True once the run was told to stop at once."""
        return self._began is not None

    @property
    def hooks_ran(self) -> bool:
        """True once the loop ran its last hooks (``finish()``, ``persist_failed``)."""
        return self._wound_up is not None

    def begin(self) -> None:
        """The run stops at once from now (the first call counts)."""
        if self._began is None:
            self._began = self._clock()

    def wound_up(self) -> None:
        """The loop ran its last hooks; what is left is asyncio's shutdown."""
        if self._wound_up is None:
            self._wound_up = self._clock()

    def overdue(self) -> bool:
        """True when the main thread should stop waiting for the loop thread."""
        began = self._began
        if began is None:
            return False
        limit = began + GRACE_S
        if self._wound_up is not None:
            limit = min(limit, max(began, self._wound_up) + WIND_UP_S)
        return self._clock() >= limit
