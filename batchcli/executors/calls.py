"""How one attempt at an item is awaited, the same in the driver and in every worker.

``process`` itself when it is a coroutine function; otherwise in daemon threads sized to the
concurrency (``threads.ItemThreads``). Either way under ``item_timeout_s`` when one is set: for a
thread, the clock starts when the attempt starts running, not when it was queued, and a thread that
outlives it is abandoned and replaced. With neither a thread hop nor a timeout, the call is
``process`` itself: the success path gets no wrapper. Only while metrics are on is every attempt
timed (``durations.timed``), around all of that.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Awaitable, Callable, TypeVar

from batchcli.durations import Durations, timed
from batchcli.executors.threads import ItemThreads
from batchcli.load.service import maybe_await

T = TypeVar("T")

USER_ERRORS = BaseException
"""What the user's code may raise that is its error (an item's failure; the Source's or a hook's fatal error), not
the end of batchcli: anything. ``SystemExit`` too: a library that calls ``sys.exit()`` on an error (a CLI's main
called as a function) ended the worker task with asyncio's "Task exception was never retrieved" and our traceback,
and the run as "stopped" without a word of why. ``KeyboardInterrupt``: only the user's code raises it there
(signals reach the main thread's handlers). And every other ``BaseException`` subclass (pytest's ``fail()``,
gevent's ``Timeout``, a library's own): one from ``process()`` ended its worker task with the item in flight for
ever (the run hung), one from the Source ended the source, and the run "finished" without its other items.
Where a call is awaited, a handler asks ``ours(error)`` first: the task's own cancel or close is not the user's."""


def ours(error: BaseException) -> bool:
    """True when ``error``, caught around an await, is the end of the running task itself, not the user's code
    raising: a cancel of this task (a hard stop), or the close of its coroutine outside any task (the interpreter
    shutting down). The user's own ``CancelledError`` (a future it awaited was cancelled) is theirs."""
    if not isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a close from outside it
        return True
    if isinstance(error, GeneratorExit):
        return task is None
    return task is not None and task.cancelling() > 0


class Escaped(Exception):
    """A ``SystemExit`` or ``KeyboardInterrupt`` the user's code raised in a task of its own on the run's loop,
    carried out of it as an ordinary exception: asyncio raises those two again out of the loop itself, which ended
    the run's loop (a ``setup()`` that called ``sys.exit()``: the run ended "stopped" without a word)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


async def held(awaitable: Awaitable[T]) -> T:
    """``await awaitable``, a ``SystemExit`` or ``KeyboardInterrupt`` from it raised as ``Escaped``: for a task."""
    try:
        return await awaitable
    except (SystemExit, KeyboardInterrupt) as error:
        raise Escaped(error) from error


class ItemCalls:
    """Builds the awaitable call of one attempt; owns the threads a sync ``process`` runs in."""

    def __init__(
        self,
        process: Callable[[Any], Any],
        threads: int,
        timeout_s: float | None,
        durations: Durations | None = None,
        keep: Callable[[Any], Any] | None = None,
    ) -> None:
        self.is_async = inspect.iscoroutinefunction(process)
        self.timeout_s = timeout_s
        self._process = process
        self.threads: ItemThreads | None = None if self.is_async else ItemThreads(process, threads, keep)
        """The threads of a sync ``process`` (None for an async one); ``keep`` turns what it returns (not None)
        into what the call returns, in the thread (``ItemThreads``)."""
        call = self._build()
        self.call: Callable[[Any], Awaitable[Any]] = call if durations is None else timed(call, durations)
        """Await ``call(item)`` to make one attempt; counted into ``durations`` when given (metrics on)."""

    def _build(self) -> Callable[[Any], Awaitable[Any]]:
        timeout = self.timeout_s
        threads = self.threads
        if threads is not None:
            return _threaded(threads) if timeout is None else _threaded_timed(threads, timeout)
        call: Callable[[Any], Awaitable[Any]] = self._process
        if timeout is None:
            return call
        inner = call

        async def timed(item: Any) -> Any:
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    return await inner(item)
            except TimeoutError as error:
                if not deadline.expired():
                    raise  # the user's own TimeoutError
                # asyncio's TimeoutError has no message and only our frames; say what happened
                # and keep the traceback of where the user's code was when it was cancelled.
                where = error.__context__.__traceback__ if error.__context__ else error.__traceback__
                raise _timed_out(timeout).with_traceback(where) from None

        return timed

    def resize(self, threads: int) -> None:
        """Follow the concurrency: up to ``threads`` sync attempts may run at once."""
        if self.threads is not None:
            self.threads.resize(threads)

    def close(self) -> None:
        """End the idle threads; attempts not started yet are dropped, running ones finish unobserved."""
        if self.threads is not None:
            self.threads.close()


Unfinished = Callable[["asyncio.Future[Any]"], None]
"""Given the outcome of a call that a cancel could not stop (it runs in a thread or a worker process): the caller
settles it when it ends (``Executor.process_one``)."""


async def process_once(process: Callable[[Any], Any], item: Any, unfinished: Unfinished | None = None) -> Any:
    """``process(item)`` once, outside the run's workers (the pause shell's and ``ctl``'s retries): awaited on
    the running loop when it is async, in a thread when it is not, so the loop goes on.

    A cancel ends an async call. A sync one it drops only while no thread has taken it; once one runs it, nothing
    can stop it, and ``unfinished`` (when given) gets the future of its outcome, for the caller to settle it."""
    if inspect.iscoroutinefunction(process):
        return await process(item)
    if unfinished is None:
        return await maybe_await(await asyncio.to_thread(process, item))  # a plain def may return an awaitable
    return await _settled_in_thread(process, item, unfinished)


async def _settled_in_thread(process: Callable[[Any], Any], item: Any, unfinished: Unfinished) -> Any:
    lock = threading.Lock()
    state = {"started": False, "dropped": False}  # guarded by lock: the thread and a cancel decide in turn

    def call() -> Any:
        with lock:
            if state["dropped"]:
                return None  # given up before it ran: nobody waits for this outcome
            state["started"] = True
        return process(item)

    def running() -> bool:
        with lock:
            state["dropped"] = not state["started"]
            return state["started"]

    async def outcome_of() -> Any:
        return await maybe_await(await asyncio.to_thread(call))

    return await settled_later(asyncio.ensure_future(outcome_of()), running, unfinished)


async def settled_later(outcome: asyncio.Future[T], running: Callable[[], bool], unfinished: Unfinished) -> T:
    """Await ``outcome``. On a cancel, hand it to ``unfinished`` when ``running()`` says a thread or a worker runs
    its call, which nothing stops (its outcome is settled when it ends), else cancel it, and cancel the caller."""
    try:
        return await asyncio.shield(outcome)  # a cancel must not drop the outcome of a call that runs on
    except asyncio.CancelledError:
        if running():
            unfinished(outcome)
        else:
            outcome.cancel()
        raise


def _threaded(threads: ItemThreads) -> Callable[[Any], Awaitable[Any]]:
    async def call(item: Any) -> Any:
        attempt = threads.submit(item, asyncio.get_running_loop(), None)
        try:
            return await attempt.future
        except asyncio.CancelledError:
            attempt.cancelled = True  # not started yet: no thread will; running: it finishes unobserved
            raise

    return call


def _threaded_timed(threads: ItemThreads, timeout: float) -> Callable[[Any], Awaitable[Any]]:
    async def timed(item: Any) -> Any:
        loop = asyncio.get_running_loop()
        attempt = threads.submit(item, loop, loop.create_future())
        assert attempt.started is not None
        deadline = asyncio.timeout(timeout)
        try:
            await attempt.started  # the clock starts when a thread runs the attempt: one never started never times out
            async with deadline:
                return await asyncio.shield(attempt.future)
        except TimeoutError:
            if not deadline.expired():
                raise  # the user's own TimeoutError
            where = threads.abandon(attempt)
            raise _timed_out(timeout).with_traceback(where) from None
        except asyncio.CancelledError:
            attempt.cancelled = True
            raise

    return timed


def _timed_out(timeout: float) -> TimeoutError:
    return TimeoutError(f"The attempt took longer than item_timeout_s={timeout:g}s and was cancelled.")
