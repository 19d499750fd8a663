"""How one attempt at an item is awaited, the same in the driver and in every worker.

``process`` itself when it is a coroutine function; otherwise in a pool of threads sized to the
concurrency. Either way under ``item_timeout_s`` when one is set. With neither a thread hop nor a
timeout, the call is ``process`` itself: the success path gets no wrapper.
"""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable


class ItemCalls:
    """Builds the awaitable call of one attempt; owns the thread pool a sync ``process`` runs in."""

    def __init__(self, process: Callable[[Any], Any], threads: int, timeout_s: float | None) -> None:
        self.is_async = inspect.iscoroutinefunction(process)
        self.timeout_s = timeout_s
        self._process = process
        self._threads: list[ThreadPoolExecutor] = []
        """The current pool, in a one-slot box the call reads, so ``grow`` can replace it under running workers."""
        self._size = 0
        self.call: Callable[[Any], Awaitable[Any]] = self._build(threads)
        """Await ``call(item)`` to make one attempt."""

    def _build(self, threads: int) -> Callable[[Any], Awaitable[Any]]:
        if self.is_async:
            call: Callable[[Any], Awaitable[Any]] = self._process
        else:
            # The pool's size caps how many run at once, even when a timed-out attempt's thread is
            # still finishing.
            self.grow(threads)
            process, box = self._process, self._threads

            async def call(item: Any) -> Any:
                return await asyncio.get_running_loop().run_in_executor(box[0], process, item)

        timeout = self.timeout_s
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
                raise TimeoutError(
                    f"The attempt took longer than item_timeout_s={timeout:g}s and was cancelled."
                ).with_traceback(where) from None

        return timed

    def grow(self, threads: int) -> None:
        """Let at least ``threads`` sync attempts run at once (concurrency went up); never shrinks.

        A smaller concurrency is kept by the caller starting fewer attempts; the idle threads cost
        nothing, and replacing the pool on every change would churn threads.
        """
        if self.is_async or threads <= self._size:
            return
        if self._threads:
            self._threads[0].shutdown(wait=False)  # attempts running in it finish there
        self._threads[:] = [ThreadPoolExecutor(threads, thread_name_prefix="batchcli-item")]
        self._size = threads

    def close(self) -> None:
        """Stop the threads; attempts not started yet are cancelled."""
        if self._threads:
            self._threads[0].shutdown(wait=False, cancel_futures=True)
