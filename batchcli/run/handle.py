"""The narrow view of a live run that the pause shell, the controller and the signal handlers work through.

The driver (``run.driver.Run``) implements it. State that crosses threads is a ``threading.Event``
(set from a signal handler or the shell on the main thread, read on the loop thread), never a
shared boolean; whatever touches the executor is marshalled onto the run's event loop.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from batchcli.executors.base import Executor
    from batchcli.load.wiring import Job
    from batchcli.outcome import Tally


class RunHandle(Protocol):
    """What the pause shell and ``self`` in it (the controller) may read and do to a live run."""

    job: Job
    """The live job: its ``service``, ``source`` and ``config`` (the shell's names)."""
    tally: Tally
    """The run's counts and failures, updated by the executor."""
    run_dir: Path
    """The run directory."""
    display: Any
    """The progress display, hidden while the shell owns the terminal."""
    paused: threading.Event
    """Set between ``pause()`` and ``resume()``."""
    stop_requested: threading.Event
    """Set once a stop was asked for (a signal, the shell, a run directory that cannot be written)."""
    breaker_reason: str
    """Why the circuit breaker opened the pause shell ("50 of the last 50 items failed: ..."), else ""."""
    retrying_failed: threading.Lock
    """Held while failures are retried live: one retry-failed at a time, whoever asks."""
    retries_closed: bool
    """Set once the run is ending (its items settled, its shells closed): no live retry starts then."""
    retries_running: set[asyncio.Future[Any]]
    """Outcomes of retried calls that a Ctrl-C gave up while a thread or a worker ran them (loop thread only): each
    settles its failure when it ends, and the next live retry and the run's end wait for them."""

    @property
    def fatal(self) -> BaseException | None:
        """The error that ended the run early, if any (the emergency shell shows it)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The run's event loop, where a shell cell that awaits runs; None before it starts."""

    @property
    def executor(self) -> Executor | None:
        """The started executor (its limits, its items in flight); None until it has started."""

    def pause(self) -> None:
        """Start no new item until ``resume()`` (thread-safe); in-flight items finish."""

    def resume(self) -> None:
        """Undo ``pause()`` (thread-safe)."""

    def stop(self) -> None:
        """Stop gracefully (thread-safe): nothing new starts, in-flight items finish."""

    def call_in_loop(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` on the loop thread soon; before the loop runs, nothing."""

    def shell_open(self, leave: Callable[[], None]) -> AbstractContextManager[None]:
        """While a shell is open: ``leave`` (thread-safe) closes it when a stop times out or a second stop comes."""
