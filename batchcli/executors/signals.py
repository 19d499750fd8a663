"""Worker processes are stopped by the driver, never by a signal meant for the driver.

A terminal sends Ctrl-C (and SIGHUP when it hangs up), and systemd, Kubernetes or ``kill -TERM -PGID``
send SIGTERM, to every process of the group (systemd even to every process of the service). Only the
driver decides what such a signal means (pause, graceful stop, stop at once, going on without the
terminal) and then stops its workers itself: through their pipe, or by the Dask nanny's stop message,
with SIGKILL as the last resort. A worker killed by the group's SIGTERM would lose the items it had
done but not yet reported, which the resume then does twice.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""The signals a worker leaves to the driver: its stop signals, and the hang-up of its terminal."""


@contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block the stop signals in this thread for the block; a thread started inside keeps them blocked for good.

    For batchcli's own threads (the recorder, the display, the signal and control servers, IPython's history
    saver). The kernel gives a process's signal to any thread that does not block it, and a C-level wait
    (``time.sleep`` in a pause-shell cell) is cut short only in the thread that got it: a Ctrl-C that landed on
    one of those threads waited for the call to end. Never the loop thread: the threads that run ``process`` and
    the hooks start from it, and a program the job starts keeps the signal mask of the thread that started it
    (blocked, it would ignore Ctrl-C and ``terminate()``).
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def spawning() -> Iterator[None]:
    """Block the stop signals in this thread while it starts worker processes (or the threads that will).

    A child starts with its parent thread's signal mask, so a signal that reaches the group before
    the worker installs its own handlers (``shield_worker``) stays pending instead of killing it.
    Threads started inside the block keep the mask, so Dask's nanny threads pass it on to restarted
    workers too. Signals still reach the driver: its main thread never blocks them.
    """
    # multiprocessing starts its resource tracker with the first process, and *unblocks* these very
    # signals in the calling thread afterwards; started beforehand, it leaves our mask alone.
    from multiprocessing import resource_tracker  # not at import: the CLI installs its signal handlers first

    resource_tracker.ensure_running()
    with stop_signals_blocked():
        yield


def shield_worker() -> None:
    """In a worker process's main thread: the stop signals do nothing here, then unblock them.

    A Python handler rather than ``SIG_IGN``: an ignored disposition survives ``exec``, so every
    program the user's Service starts (a subprocess) would ignore Ctrl-C and SIGTERM too; a handler
    is reset to the default there. A signal that arrived while blocked is delivered to it and dropped.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, _leave_to_driver)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _leave_to_driver(signum: int, frame: FrameType | None) -> None:
    """The driver got the same signal and will stop this worker when its chunks are done."""
