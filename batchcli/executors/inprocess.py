"""The ``async`` executor's lifecycle: the driver's own Service, set up and finished on the run's loop."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from batchcli.executors.calls import Escaped, Unfinished, held, process_once
from batchcli.executors.limiter import Limits
from batchcli.load.service import maybe_await

if TYPE_CHECKING:
    from batchcli.executors.asyncpool import AsyncExecutor
    from batchcli.executors.base import Items
    from batchcli.load.wiring import Job
    from batchcli.outcome import Tally


class InProcessExecutor:
    """``AsyncExecutor`` over the driver's Service: ``setup()`` in ``start``, ``finish()`` in ``finish``.

    ``setup()`` runs as a task on the run's loop, so a hard stop (``cancel``) can still abandon one that
    hangs on a network; ``finish()`` then runs all the same, as it does after a failed ``setup()``.
    The pool itself is made after ``setup()``, and everything else goes straight to it: nothing is
    added per item.
    """

    def __init__(self, job: Job, tally: Tally) -> None:
        self._job = job
        self._tally = tally
        self._setup: asyncio.Future[Any] | None = None
        self._pool: AsyncExecutor | None = None
        self._abandoned = False

    @property
    def fatal(self) -> BaseException | None:
        """An exception from the source itself, which ended the run."""
        return None if self._pool is None else self._pool.fatal

    async def start(self) -> None:
        """Run ``setup()``, then make the pool; returns early (nothing started) when ``cancel`` abandoned setup."""
        from batchcli.executors.asyncpool import AsyncExecutor
        from batchcli.executors.retries import RetryPolicy

        service = self._job.service
        self._setup = asyncio.ensure_future(held(maybe_await(service.setup())))
        try:
            await self._setup
        except asyncio.CancelledError:
            if self._abandoned:
                return
            raise
        except Escaped as escaped:  # sys.exit() in setup(): the job could not start, as with any other error
            raise escaped.error from None
        policy = RetryPolicy(self._job.config, service.exceptions_to_retry_for)
        self._pool = AsyncExecutor(service.process, self._job.config, policy, self._tally)

    async def finish(self) -> None:
        """Call the Service's ``finish()``: its ``setup()`` ran (or was tried) here."""
        await maybe_await(self._job.service.finish())

    async def run(self, items: Items) -> None:
        """Process every item; return when all are settled, or after a stop."""
        assert self._pool is not None, "start() first"
        await self._pool.run(items)

    def cancel(self) -> None:
        """Stop at once; while ``setup()`` runs, abandon it."""
        if self._pool is not None:
            self._pool.cancel()
        elif self._setup is not None and not self._setup.done():
            self._abandoned = True
            self._setup.cancel()

    def stop(self) -> None:
        """Start nothing new; in-flight items finish; items waiting to retry stay unprocessed."""
        if self._pool is not None:
            self._pool.stop()

    def abandon(self) -> None:
        """Nothing to end (every item runs in this process, which the run's exit ends); what waits for the journal
        goes there."""
        if self._pool is not None:
            self._pool.abandon()

    async def process_one(self, item: Any, unfinished: Unfinished | None = None) -> Any:
        """The driver's own Service on one item: awaited on the run's loop when async, in a thread when not."""
        return await process_once(self._job.service.process, item, unfinished)

    def nudge(self) -> None:
        """Have the pool give the loop a turn before its next item (thread-safe)."""
        if self._pool is not None:
            self._pool.nudge()

    def pause(self) -> None:
        """Start nothing new until ``resume``."""
        if self._pool is not None:
            self._pool.pause()

    def resume(self) -> None:
        """Undo ``pause``."""
        if self._pool is not None:
            self._pool.resume()

    def set_concurrency(self, concurrency: int) -> None:
        """Change how many items may be in flight from now on."""
        assert self._pool is not None, "start() first"
        self._pool.set_concurrency(concurrency)

    def set_rate_limit(self, rate: float | None) -> None:
        """Change the most items started per second (None for no limit)."""
        assert self._pool is not None, "start() first"
        self._pool.set_rate_limit(rate)

    def hold_concurrency(self, concurrency: int | None) -> None:
        """The circuit breaker's cap on the concurrency, None to lift it; the ceiling stays the user's."""
        assert self._pool is not None, "start() first"
        self._pool.hold_concurrency(concurrency)

    @property
    def effective_concurrency(self) -> int:
        """The concurrency but for the circuit breaker's cap."""
        return self.limits.concurrency if self._pool is None else self._pool.effective_concurrency

    @property
    def limits(self) -> Limits:
        """The limits in force: the pool's, or the configuration's until ``setup()`` has made the pool."""
        if self._pool is None:
            return Limits(self._job.config.concurrency, self._job.config.rate_limit)
        return self._pool.limits

    def items_in_flight(self) -> dict[int, Any]:
        """Ordinal -> item of every item being processed now."""
        return {} if self._pool is None else self._pool.items_in_flight()
