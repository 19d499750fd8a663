"""``self`` in the pause shell: read the live run and steer it, from the shell's thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Coroutine, TypeVar

from batchcli.journal.results import encode
from batchcli.outcome import Failure
from batchcli.run.display import Rate, status_line

if TYPE_CHECKING:
    from batchcli.run.handle import RunHandle

T = TypeVar("T")


@dataclass(frozen=True)
class Stats:
    """A snapshot of a run's counts and settings."""

    total: int | None
    """Items in the source, when known."""
    succeeded: int
    failed: int
    retrying: int
    """Items waiting out a backoff delay."""
    in_flight: int
    unprocessed: int | None
    """Items not settled yet (None while the source's length is unknown)."""
    items_per_s: float
    """Settled items per second since the run started."""
    elapsed_s: float
    concurrency: int
    """In force now: below the configured value while adaptive limits are cut after throttles."""
    rate_limit: float | None
    """In force now, like ``concurrency``."""
    cooling_down_s: float
    """Seconds left of a throttle's cool-down (no new item starts); 0 when none."""
    paused: bool
    stopping: bool
    """True once a stop was asked for (now, or when the shell closes)."""
    line: str = field(repr=False)
    """The same state as one line, as the progress display shows it."""

    def __str__(self) -> str:
        return self.line


class RunController:
    """The live run, as ``self`` in the pause shell: stats, failures, in-flight items, stop, tuning, retries.

    Its methods are called from the shell on the main thread, through the run's narrow ``RunHandle``.
    Whatever touches the executor runs on the run's event loop and waits for it there, so a bad value
    raises at the prompt.
    """

    def __init__(self, run: RunHandle) -> None:
        self._run = run
        self.stop_on_leave = False
        """Set by ``stop()``: the shell stops the run instead of resuming it when it closes."""

    def __repr__(self) -> str:
        return f"<batchcli run {self._run.run_dir.name}: {self.stats().line}>"

    @property
    def run_dir(self) -> Path:
        """The run directory: log, failed.jsonl, summary.json, the journal."""
        return self._run.run_dir

    def stats(self) -> Stats:
        """The counts now."""
        run, tally = self._run, self._run.tally
        elapsed = tally.elapsed()
        rate = tally.settled / elapsed if elapsed > 0 else 0.0
        total = tally.total
        return Stats(
            total=total,
            succeeded=tally.succeeded,
            failed=tally.failed,
            retrying=tally.retrying,
            in_flight=tally.in_flight,
            unprocessed=None if total is None else total - tally.settled - tally.skipped,
            items_per_s=round(rate, 1),
            elapsed_s=round(elapsed, 1),
            # The executor's limits, which the shell may have changed; the configuration's before it exists.
            concurrency=run.job.config.concurrency if run.executor is None else run.executor.limits.concurrency,
            rate_limit=run.job.config.rate_limit if run.executor is None else run.executor.limits.rate_limit,
            cooling_down_s=round(max(0.0, tally.cooldown_until - time.monotonic()), 1),
            paused=run.paused.is_set(),
            stopping=run.stop_requested.is_set() or self.stop_on_leave,
            line=status_line(tally, Rate(tally).sample()),
        )

    @property
    def failures(self) -> list[Failure]:
        """Every item that finally failed so far: ``.item`` is the input, ``.error_message`` the reason."""
        return list(self._run.tally.failures)

    @property
    def in_flight(self) -> dict[int, Any]:
        """Ordinal -> item of the items being processed now."""
        executor = self._run.executor
        if executor is None:
            return {}
        return self._on_loop(executor.items_in_flight)

    def stop(self) -> None:
        """Stop the run when you leave the shell instead of resuming it (exit code 130, resumable)."""
        self.stop_on_leave = True
        print(
            "The run stops when you leave the shell (exit or Ctrl-D): in-flight items finish, finish() and "
            "persist_failed run, and the unprocessed items stay for `batchcli resume`."
        )

    def set_concurrency(self, concurrency: int) -> None:
        """Change how many items may be in flight at once (applies when the run resumes)."""
        self._on_loop(lambda: self._executor("set_concurrency").set_concurrency(concurrency))
        print(f"Concurrency is now {concurrency}.")

    def set_rate_limit(self, rate: float | None) -> None:
        """Change the most items started per second; None for no limit (applies when the run resumes)."""
        self._on_loop(lambda: self._executor("set_rate_limit").set_rate_limit(rate))
        print(f"Rate limit is now {'none' if rate is None else f'{rate}/s'}.")

    def retry(self, item: Any) -> Any:
        """Process one failed item again now, once, with the live service, and return what it returned.

        ``item`` is one of ``failures`` or a failed input. On success it counts as succeeded instead of
        failed (and ``persist_failed`` no longer gets it); on failure the exception is raised here.
        Another input is simply processed, without being counted.
        """
        failure = self._find(item)
        return self._await(self._retry(failure, failure.item if failure is not None else item))

    def retry_failed(self) -> dict[int, Exception]:
        """Retry every failure now (``concurrency`` at once); returns ordinal -> error of those that failed again."""
        failures = self.failures
        executor = self._run.executor
        limit = self._run.job.config.concurrency if executor is None else executor.limits.concurrency

        async def retry_all() -> dict[int, Exception]:
            gate = asyncio.Semaphore(limit)

            async def one(failure: Failure) -> Exception | None:
                async with gate:
                    try:
                        await self._retry(failure, failure.item)
                    except Exception as error:
                        return error
                    return None

            errors = await asyncio.gather(*(one(f) for f in failures))
            return {f.ordinal: e for f, e in zip(failures, errors) if e is not None}

        again = self._await(retry_all())
        print(f"{len(failures) - len(again)} of {len(failures)} failed item(s) succeeded now.")
        return again

    # Helpers.

    async def _retry(self, failure: Failure | None, item: Any) -> Any:
        process = self._run.job.service.process
        if inspect.iscoroutinefunction(process):
            result = await process(item)
        else:
            result = await asyncio.to_thread(process, item)
        if failure is not None:
            self._run.tally.recover(failure, None if result is None else encode(result))
        return result

    def _find(self, item: Any) -> Failure | None:
        failures = self._run.tally.failures
        if isinstance(item, Failure):
            return item if any(f is item for f in failures) else None
        for failure in failures:
            try:
                if failure.item is item or failure.item == item:
                    return failure
            except Exception:  # an input type whose == raises
                continue
        return None

    def _executor(self, what: str) -> Any:
        executor = self._run.executor
        if executor is None:
            raise RuntimeError(f"self.{what}() needs the executor, which starts after setup(); try again in a moment.")
        return executor

    def _on_loop(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the run's loop and return its result (directly when already there)."""
        loop = self._loop()
        if _running_loop() is loop:  # inside a cell that awaits: IPython runs it on the loop
            return function()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(function())
            except BaseException as error:
                future.set_exception(error)

        loop.call_soon_threadsafe(call)
        return future.result()

    def _await(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop()
        if _running_loop() is loop:
            coro.close()
            raise RuntimeError(
                "This method waits for the run's event loop, and a cell that uses await already runs on it; "
                "call it in a cell without await."
            )
        future: concurrent.futures.Future[T] | None = None
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
            return future.result()
        except KeyboardInterrupt:  # Ctrl-C at the prompt: give up the work, not the run
            if future is not None:
                future.cancel()
            raise

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._run.loop
        if loop is None or loop.is_closed():
            raise RuntimeError("The run's event loop has ended; nothing more can run on it.")
        return loop


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

