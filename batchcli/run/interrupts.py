"""SIGINT and SIGTERM during start-up: from the command's first line until the run installs its own handlers.

Python's defaults would kill the process mid-way (-15), possibly halfway through making a run
directory. Instead, a signal during start-up is remembered; while the user's code is being loaded
(imports, constructors, which may block on a network) it also abandons that at once, since nothing
is on disk yet. Once the run directory is being made, it is only remembered, and the run picks it
up as a stop request as soon as its own handlers are in place: it starts nothing and ends
"stopped", resumable.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

from batchcli.executors.signals import STOP_SIGNALS


class StartInterrupted(KeyboardInterrupt):
    """A stop signal arrived while the user's code was being loaded: nothing ran, nothing was written.

    A ``KeyboardInterrupt``, so the user's ``except Exception`` cannot swallow it, and importing
    lets it through as it does Ctrl-C.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        """The signal that arrived."""

    @property
    def name(self) -> str:
        """``SIGINT`` or ``SIGTERM``."""
        return signal.Signals(self.signum).name


class EarlySignals:
    """The stop signals' handler during start-up; remembers the first, raises it only inside ``aborting()``."""

    def __init__(self) -> None:
        self.received: int | None = None
        """The first stop signal that arrived, if any."""
        self._abort = False
        self._previous: dict[int, Any] = {}

    @classmethod
    def install(cls) -> EarlySignals:
        """Handle the stop signals from now on (on the main thread only; elsewhere this does nothing).

        A signal an earlier ``EarlySignals`` (the one ``python -m batchcli`` installs first) remembered
        is carried over.
        """
        early = cls()
        if threading.current_thread() is not threading.main_thread():
            return early
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, early._handle)
            early._previous[signum] = previous
            owner = getattr(previous, "__self__", None)
            if isinstance(owner, EarlySignals) and owner.received is not None and early.received is None:
                early.received = owner.received
        return early

    def uninstall(self) -> None:
        """Put back the handlers ``install`` replaced."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @contextmanager
    def aborting(self) -> Iterator[None]:
        """While the user's code loads: a stop signal (also one already remembered) raises ``StartInterrupted``."""
        if self.received is not None:
            raise StartInterrupted(self.received)
        self._abort = True
        try:
            yield
        finally:
            self._abort = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._abort:
            self._abort = False  # once: a second signal must not interrupt the unwinding
            raise StartInterrupted(signum)
