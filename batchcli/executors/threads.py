"""The daemon threads a sync ``process`` runs in: sized to the concurrency, and a stuck thread is replaced.

``concurrent.futures.ThreadPoolExecutor`` does not fit: the interpreter joins its threads at exit (a
``time.sleep(1000)`` in ``process`` kept the process alive after "Finished"), a thread stuck past
``item_timeout_s`` keeps its place in the pool (the pool shrank by one per stuck attempt, and items
queued behind them timed out without ever starting), and it cannot say when an attempt starts running.
Here every thread is a daemon, an attempt reports when it starts, and ``abandon`` gives up on a thread
whose attempt outlived its timeout: a new thread takes its place, and the old one ends when its call returns.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import types
from typing import Any, Callable

log = logging.getLogger("batchcli")


class Attempt:
    """One call of ``process`` handed to a thread; its state is guarded by the pool's lock."""

    __slots__ = ("item", "loop", "future", "started", "thread", "cancelled", "done", "abandoned")

    def __init__(self, item: Any, loop: asyncio.AbstractEventLoop, started: asyncio.Future[None] | None) -> None:
        self.item = item
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        """Resolved on the loop with what ``process`` returned or raised."""
        self.started = started
        """Resolved on the loop when a thread starts the call (asked for only when a timeout needs it)."""
        self.thread: threading.Thread | None = None
        self.cancelled = False
        """The caller gave up before a thread took it: no thread runs it."""
        self.done = False
        self.abandoned = False


class ItemThreads:
    """At most ``size`` daemon threads running ``process``, started only when an attempt waits for one."""

    def __init__(self, process: Callable[[Any], Any], size: int, keep: Callable[[Any], Any] | None = None) -> None:
        self._process = process
        self._keep = keep
        """Applied to a value ``process`` returned (not None) in its thread, before the thread takes another item:
        the result's encoding, while the value is still the one returned (an error from it fails the attempt)."""
        self._size = size
        self._jobs: queue.SimpleQueue[Attempt | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0
        """Threads started, not abandoned and not ended."""
        self._idle = 0
        """Threads waiting for an attempt."""
        self._waiting = 0
        """Attempts queued that no thread took yet."""
        self._names = 0
        self.abandoned = 0
        """Threads given up on so far because their attempt outlived its timeout."""

    def resize(self, size: int) -> None:
        """Follow the concurrency: more threads may start; threads beyond ``size`` end once idle."""
        with self._lock:
            self._size = size
            surplus = self._live - size
            self._live -= max(0, surplus)
        for _ in range(surplus):
            self._jobs.put(None)  # taken by threads when idle: each one that takes it ends
        self._more()

    def submit(self, item: Any, loop: asyncio.AbstractEventLoop, started: asyncio.Future[None] | None) -> Attempt:
        """Queue one call of ``process(item)``; await ``attempt.future`` for its outcome."""
        attempt = Attempt(item, loop, started)
        with self._lock:
            self._waiting += 1
        self._jobs.put(attempt)
        self._more()
        return attempt

    def abandon(self, attempt: Attempt) -> types.TracebackType | None:
        """Give up on a running attempt (it outlived its timeout): another thread takes its thread's place.

        Returns the traceback of where the call is now, for the user to see where it was stuck.
        """
        with self._lock:
            if attempt.done or attempt.abandoned:
                return None
            attempt.abandoned = True
            self._live -= 1
            self.abandoned += 1
            count = self.abandoned
        attempt.future.add_done_callback(_retrieve)
        # The first one on the console; every one in the log file, with the count so far.
        log.log(
            logging.WARNING if count == 1 else logging.INFO,
            "An attempt outlived item_timeout_s and its thread is abandoned (it ends when the call returns); "
            "a new thread takes its place. Threads abandoned so far: %d.",
            count,
        )
        self._more()
        thread = attempt.thread
        frame = None if thread is None or thread.ident is None else sys._current_frames().get(thread.ident)
        return _traceback_of(frame)

    def close(self) -> None:
        """End idle threads and drop attempts no thread took; running calls finish unobserved."""
        with self._lock:
            live, self._live, self._size = self._live, 0, 0
        while True:
            try:
                attempt = self._jobs.get_nowait()
            except queue.Empty:
                break
            if attempt is not None:
                attempt.cancelled = True
        for _ in range(live):
            self._jobs.put(None)

    def _more(self) -> None:
        """Start a thread when an attempt waits and no idle thread is there to take it."""
        with self._lock:
            if self._waiting <= self._idle or self._live >= self._size:
                return
            self._live += 1
            self._names += 1
            name = f"batchcli-item-{self._names}"
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        process, keep, lock, jobs = self._process, self._keep, self._lock, self._jobs
        me = threading.current_thread()
        while True:
            with lock:
                self._idle += 1
            attempt = jobs.get()
            with lock:
                self._idle -= 1
                if attempt is None:
                    return
                self._waiting -= 1
                if attempt.cancelled:
                    continue
                attempt.thread = me
            loop = attempt.loop
            try:
                if attempt.started is not None:
                    loop.call_soon_threadsafe(_resolve, attempt.started, None, None)
                try:
                    value = process(attempt.item)
                except BaseException as error:
                    loop.call_soon_threadsafe(_resolve, attempt.future, None, error)
                else:
                    unkept: BaseException | None = None
                    if value is not None and keep is not None:
                        try:
                            value = keep(value)
                        except Exception as cannot:  # UnkeepableResult: the attempt fails, by the retry rules
                            value, unkept = None, cannot
                    loop.call_soon_threadsafe(_resolve, attempt.future, value, unkept)
            except RuntimeError:  # the loop is closed: the run is over and nobody waits for this outcome
                pass
            with lock:
                attempt.done = True
                if attempt.abandoned:  # a replacement took this thread's place
                    return


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the caller stopped waiting (cancelled)
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Nobody awaits an abandoned attempt's outcome; retrieve it so asyncio does not log it as lost.
    if not future.cancelled():
        future.exception()


def _traceback_of(frame: types.FrameType | None) -> types.TracebackType | None:
    """A traceback of ``frame`` and its callers, outermost first, as if an exception were raised there."""
    frames = []
    while frame is not None and frame.f_code is not _SERVE:  # the user's frames only, not the thread's machinery
        frames.append(frame)
        frame = frame.f_back
    tb = None
    for frame in frames:  # innermost first: each outer frame's traceback entry points to the inner one
        tb = types.TracebackType(tb, frame, frame.f_lasti, frame.f_lineno)
    return tb


_SERVE = ItemThreads._serve.__code__
