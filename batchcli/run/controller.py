"""``self`` in the pause shell: read the live run and steer it, from the shell's thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Coroutine, TypeVar, overload

from batchcli.executors.calls import Escaped, Unfinished, held, process_once
from batchcli.executors.limiter import Limiter, Limits, checked_concurrency, checked_rate_limit
from batchcli.executors.retries import THROTTLES_MAX
from batchcli.executors.throttling import backoff_wait, live_throttle
from batchcli.journal.results import encode
from batchcli.load.throttled import Throttled
from batchcli.outcome import Failure, per_second
from batchcli.run.display import Rate, run_counts, status_line

if TYPE_CHECKING:
    from collections.abc import Iterator

    from batchcli.outcome import Tally
    from batchcli.run.handle import RunHandle

T = TypeVar("T")

LIVE_THROTTLE_WAIT_S = 60.0
"""A live retry (``retry_failed``, ``ctl retry-failed``) waits out the API's refusals of an item (the run's cool-down,
each ``Retry-After``) up to this long in all; past it the item stays failed: ``ctl`` answers within its own wait."""


class NotTriedNow(Throttled):
    """A live retry left untried: the run cools down after a throttle for longer than ``LIVE_THROTTLE_WAIT_S``."""

    def __init__(self, cooling_s: float) -> None:
        super().__init__(cooling_s, f"not tried: the run cools down {cooling_s:.0f}s more after the API throttled it")


def retried_text(tried: int, again: dict[int, Exception]) -> str:
    """What a live retry of ``tried`` failures says (the shell's ``retry_failed``, ``ctl retry-failed``)."""
    text = f"{tried - len(again)} of {tried} failed item(s) succeeded now."
    refused = sum(1 for error in again.values() if live_throttle(error) is not None)
    if refused:
        text += (
            f" The API refused {refused} of them for now (throttled, or the run cools down): they stay failed. Retry "
            "them again once it serves, or after the run with batchcli retry."
        )
    return text

log = logging.getLogger("batchcli")


def _shown_rate(rate: float | None) -> float | None:
    return None if rate is None else float(f"{rate:.4g}")


def paused_in_flight(run: RunHandle) -> str:
    """What a pause does to the items in flight, as its reply and the shell's banner say it. A chunked executor's
    workers start none of their chunks' other items: those come back (it said "95 in flight finish")."""
    count = run.tally.in_flight
    if run.job.config.executor == "async":
        return f"the {count} in flight finish and are recorded"
    return (
        f"of the {count} sent to the {run.job.config.executor} workers, those started finish and are recorded, the "
        "others come back unstarted"
    )


@dataclass(frozen=True)
class Stats:
    """A snapshot of a run's counts and settings."""

    total: int | None
    """Items in the source, when known."""
    succeeded: int
    """Over the whole run: a resumed run's earlier sessions included, as on the display."""
    failed: int
    """Over the whole run, like ``succeeded``."""
    retrying: int
    """Items waiting to be tried again: in their backoff delay, or past it and waiting for a free slot (or the pause)."""
    in_flight: int
    unprocessed: int | None
    """Items not settled yet (None while the source's length is unknown)."""
    items_per_s: float
    """Items this session settled per second of ``elapsed_s``."""
    elapsed_s: float
    """Seconds this session has run, time paused in the shell left out."""
    concurrency: int
    """In force now: below the configured value while adaptive limits are cut after throttles."""
    rate_limit: float | None
    """In force now, like ``concurrency``, to four significant digits (a learnt rate read 94.91288700185673)."""
    cooling_down_s: float
    """Seconds left of a throttle's cool-down (no new item starts); 0 when none."""
    paused: bool
    stopping: bool
    """True once a stop was asked for (now, or when the shell closes)."""
    breaker: str | None
    """The circuit breaker's state: ``closed``, ``open`` (no new item starts) or ``probing``; None when it is off
    (``breaker_window=0``)."""
    line: str = field(repr=False)
    """The same state as one line, as the progress display shows it."""

    def __str__(self) -> str:
        return self.line


class LiveFailures(Sequence[Failure]):
    """The run's final failures as they are now (the latest ``FAILURES_KEPT``; all of them are in the journal):
    every read looks at the live run, so names kept in the shell (``failures``) never go stale after
    ``self.retry_failed()`` or new failures."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally

    @overload
    def __getitem__(self, index: int) -> Failure: ...

    @overload
    def __getitem__(self, index: slice) -> list[Failure]: ...

    def __getitem__(self, index: int | slice) -> Failure | list[Failure]:
        return list(self._tally.failures)[index]

    def __len__(self) -> int:
        return len(self._tally.failures)

    def __iter__(self) -> Iterator[Failure]:
        return iter(list(self._tally.failures))  # a copy: the loop thread may add or recover failures meanwhile

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, LiveFailures) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


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
        settled, succeeded, failed = run_counts(tally)
        return Stats(
            total=total,
            succeeded=succeeded,
            failed=failed,
            retrying=tally.retrying,
            in_flight=tally.in_flight,
            unprocessed=None if total is None else total - settled,
            items_per_s=round(rate, 1),
            elapsed_s=round(elapsed, 1),
            # The executor's limits, which the shell may have changed; the configuration's before it exists.
            concurrency=run.job.config.concurrency if run.executor is None else run.executor.limits.concurrency,
            rate_limit=_shown_rate(run.job.config.rate_limit if run.executor is None else run.executor.limits.rate_limit),
            cooling_down_s=round(max(0.0, tally.cooldown_until - time.monotonic()), 1),
            paused=run.paused.is_set(),
            stopping=run.stop_requested.is_set() or self.stop_on_leave,
            breaker=run.tally.breaker_state if run.job.config.breaker_window > 0 else None,
            line=status_line(tally, Rate(tally).sample()),
        )

    @property
    def failures(self) -> LiveFailures:
        """Every item that finally failed, as of each read: ``.item`` is the input, ``.error_message`` the reason."""
        return LiveFailures(self._run.tally)

    @property
    def in_flight(self) -> dict[int, Any]:
        """Ordinal -> item of the items being processed now."""
        executor = self._run.executor
        if executor is None:
            return {}
        return self._on_loop(executor.items_in_flight)

    def stop(self) -> None:
        """Stop the run when you leave the shell instead of resuming it (exit code 130, resumable)."""
        if self._run.fatal is not None:  # the emergency shell: the run ends crashed whatever is asked here
            print(
                "The run already failed: it ends as crashed (exit code 3) when you leave the shell, and its "
                "unprocessed items stay for `batchcli resume` all the same. There is nothing to stop."
            )
            return
        self.stop_on_leave = True
        print(
            "The run stops when you leave the shell (exit or Ctrl-D): in-flight items finish, finish() and "
            "persist_failed run, and the unprocessed items stay for `batchcli resume`."
        )

    def set_concurrency(self, concurrency: int) -> None:
        """Change how many items may be in flight at once, 1 to 10,000 (applies when the run resumes)."""
        try:
            concurrency = checked_concurrency(concurrency)
        except ValueError as error:  # one line at the prompt, not a traceback through the run's loop
            print(f"Error: {error}")
            return
        if self._not_yet("set_concurrency"):
            return
        print(self.changed_concurrency(concurrency))

    def set_rate_limit(self, rate: float | None) -> None:
        """Change the most items started per second; None for no limit (applies when the run resumes)."""
        try:
            rate = checked_rate_limit(rate)
        except ValueError as error:
            print(f"Error: {error}")
            return
        if self._not_yet("set_rate_limit"):
            return
        print(self.changed_rate_limit(rate))

    def changed_concurrency(self, concurrency: int) -> str:
        """Set a checked concurrency; what the shell prints and ``ctl set`` answers."""
        self._on_loop(lambda: self._executor("set_concurrency").set_concurrency(concurrency))
        return f"Concurrency is now {concurrency}.{self._in_force(concurrency, None)}{self._breaker_open()}"

    def changed_rate_limit(self, rate: float | None) -> str:
        """Set a checked rate limit; what the shell prints and ``ctl set`` answers."""
        self._on_loop(lambda: self._executor("set_rate_limit").set_rate_limit(rate))
        shown = "none" if rate is None else f"{rate:g}/s"
        return f"Rate limit is now {shown}.{self._in_force(None, rate)}{self._breaker_open()}"

    def _breaker_open(self) -> str:
        """While the circuit breaker is open no item starts, whatever the limits: "Concurrency is now 50." alone read
        as a run going on at 50."""
        if self._run.tally.breaker_state != "open":
            return ""
        return (
            " The circuit breaker is open, though: no item starts until it closes (a probe that succeeds, or "
            "resume once its cause is fixed)."
        )

    def _in_force(self, concurrency: int | None, rate: float | None) -> str:
        """When the limit just set is not the one in force (it is the ceiling): what is, and why. "Concurrency is
        now 50." while 5 stayed in force read as a command that did nothing."""
        limits = self._executor("limits").limits
        if concurrency is not None:
            if limits.concurrency >= concurrency:
                return ""
            now, toward = str(limits.concurrency), str(concurrency)
        else:
            if limits.rate_limit is None or limits.rate_limit == rate:
                return ""
            now, toward = per_second(limits.rate_limit), "no limit" if rate is None else per_second(rate)
        why = "the circuit breaker holds it" if self._run.tally.limits_held else "cut after the API throttled"
        return f" In force now: {now} ({why}); it grows back toward {toward}."

    def _not_yet(self, what: str) -> bool:
        """True, and one line said, while the executor has not started (setup() runs): a traceback through the run's
        loop, some forty lines ending in this same sentence, is what the prompt showed."""
        if self._run.executor is not None:
            return False
        print(f"Error: self.{what}() needs the executor, which starts after setup(); try again in a moment.")
        return True

    async def process(self, item: Any) -> Any:
        """``await self.process(x)``: run the live service on one input, whether its ``process`` is async
        (awaited on the run's loop) or sync (in a thread, so the loop goes on). Nothing is counted."""
        return await self._process(item)

    def retry(self, item: Any) -> Any:
        """Process one failed item again now, once, with the live service, and return what it returned.

        ``item`` is one of ``failures`` or a failed input; a ``Failure`` sends its input (``.item``) to
        ``process``. On success it counts as succeeded instead of failed (and ``persist_failed`` no
        longer gets it); on failure the exception is raised here. Another input is simply processed,
        without being counted. A ``Failure`` retried successfully already (here, or by ``retry_failed``
        or ``ctl retry-failed`` meanwhile) is not processed again: ``await self.process(x)`` does that.
        """
        # One retry at a time, as retry_failed: a retry-failed from ctl and this one both processed the same
        # failure, and the item succeeded twice.
        self._say_unfinished()
        with self._run.retrying_failed:
            self._check_open()
            self._after_unfinished()  # they may settle this very failure
            failure = self._find(item)
            if isinstance(item, Failure) and failure is None:
                print(
                    f"Item {item.ordinal} was retried successfully already; not processing it again "
                    "(await self.process(failure.item) would)."
                )
                return None
            value = item.item if isinstance(item, Failure) else item
            return self._await(self._retry(failure, value), retrying=True)

    def retry_failed(self) -> dict[int, Exception]:
        """Retry every failure in ``failures`` now (``concurrency`` at once); returns ordinal -> error of those that
        failed again. Past ``FAILURES_KEPT`` failures, the older ones are for ``batchcli retry RUN`` after the run.
        An item the API refuses for now (a 429) is tried again after the wait it asks, as the run would."""
        self._say_unfinished()
        tried, again = self.retry_failed_counted()
        print(retried_text(tried, again))
        return again

    def retry_failed_counted(self) -> tuple[int, dict[int, Exception]]:
        """``retry_failed`` without its line: how many failures it retried, and those that failed again (``ctl``).
        One at a time, whoever asks: a second request waits, then retries what is still failed."""
        with self._run.retrying_failed:
            self._check_open()
            self._after_unfinished()
            failures = list(self._run.tally.failures)
            return len(failures), self._await(self._retry_all(failures), retrying=True)

    async def _retry_all(self, failures: list[Failure]) -> dict[int, Exception]:
        """Each of ``failures`` once more, the executor's concurrency at once; ordinal -> error of those that failed again.

        They start at the configured rate limit (the ceiling), after the run's cool-down. A refusal for now (429, ``Throttled``) is
        not the item failing again: it holds every one of these retries for the wait the API asked (``backoff_s``
        doubling without one, ``backoff_s`` for 0), as the run's cool-down does, and the item goes again, up to
        ``LIVE_THROTTLE_WAIT_S`` of waiting in all. They ran at once, during a cool-down every retry got a 429 and
        stayed failed; then each waited for its own Retry-After only, and 300 retries sent 1,956 requests, 85% of
        them refused."""
        executor = self._run.executor
        config, tally = self._run.job.config, self._run.tally
        limits = Limits(config.concurrency, config.rate_limit) if executor is None else executor.limits
        gate = asyncio.Semaphore(limits.concurrency)
        # The configured rate, not a cut one: a run cut to 0.1/s made 300 retries outlast ctl's wait; refusals hold.
        pace = Limiter(Limits(limits.concurrency, config.rate_limit if tally.ceiling is None else tally.ceiling[1]))
        held = [0.0]  # monotonic: until when a refusal one of these retries got holds them all

        async def one(failure: Failure) -> Exception | None:
            waited = 0.0
            error: Exception | None = None
            for refusals in itertools.count():
                async with gate:
                    while (cooling := max(tally.cooldown_until, held[0]) - time.monotonic()) > 0:
                        if waited + cooling > LIVE_THROTTLE_WAIT_S:
                            return error if error is not None else NotTriedNow(cooling)
                        waited += cooling
                        await asyncio.sleep(cooling)
                    await asyncio.sleep(pace.delay())
                    try:
                        await self._retry(failure, failure.item)
                    except Exception as raised:
                        error = raised
                    else:
                        return None
                throttle = live_throttle(error)
                if throttle is None or refusals + 1 >= THROTTLES_MAX:
                    return error
                wait = throttle.retry_after_s
                if wait is None:  # as the run's cool-down without a Retry-After
                    wait = backoff_wait(config, refusals)
                elif wait == 0:  # "now": taken at its word, 20 refusals went in a tight loop, 250 requests/s
                    wait = backoff_wait(config, 0)
                held[0] = max(held[0], time.monotonic() + wait)
            raise AssertionError("itertools.count() ended")

        errors = await asyncio.gather(*(one(f) for f in failures))
        return {f.ordinal: e for f, e in zip(failures, errors) if e is not None}

    # Helpers.

    async def _retry(self, failure: Failure | None, item: Any) -> Any:
        if failure is None:  # an input that is no failure: nothing to count, and a cancel drops its outcome
            return await self._process(item)
        result = await self._process(item, lambda outcome: self._settle_later(failure, outcome))
        self._run.tally.recover(failure, None if result is None else encode(result))
        return result

    def _settle_later(self, failure: Failure, outcome: asyncio.Future[Any]) -> None:
        """A Ctrl-C gave up the retry of ``failure`` while its call ran in a thread or a worker, which nothing stops:
        count it when it ends, as the retry would have. Its success was dropped, and the item stayed failed in the
        journal and failed.jsonl, for ``batchcli retry`` to do it a second time. The next retry and the run's end
        wait for it (``retries_running``), so it is never retried twice at once nor left out of the journal."""
        running = self._run.retries_running
        running.add(outcome)

        def settle(done: asyncio.Future[Any]) -> None:
            running.discard(done)
            if done.cancelled() or done.exception() is not None:
                return  # failed again (or the run stopped first): it stays failed, as a retry that failed
            result = done.result()
            try:
                kept = None if result is None else encode(result)
            except Exception as error:  # UnkeepableResult: as the retry would have raised it
                log.warning("The retry of item %s succeeded after the Ctrl-C, but it stays failed: %s", failure.ordinal, error)
                return
            self._run.tally.recover(failure, kept)

        outcome.add_done_callback(settle)

    def _say_unfinished(self) -> None:
        running = len(self._run.retries_running)  # a glance from the shell's thread: only for this line
        if running:
            print(f"Waiting first for the {running} retried item(s) still running since a Ctrl-C.")

    def _after_unfinished(self) -> None:
        """Wait for the retried calls a Ctrl-C left running (their outcomes count when they end), so that none of
        their items is processed a second time meanwhile."""
        self._await(_all_ended(self._run.retries_running))

    async def _process(self, item: Any, unfinished: Unfinished | None = None) -> Any:
        executor = self._run.executor
        if executor is not None:  # where the set-up Services are: the driver's, or the workers'
            return await executor.process_one(item, unfinished)
        # Paused before the executor started.
        return await process_once(self._run.job.service.process, item, unfinished)

    def _check_open(self) -> None:
        if self._run.retries_closed:
            raise RuntimeError(
                "The run has settled its items and is ending, so a retry cannot start now: the failures stay "
                f"failed. Reprocess them after the run with: batchcli retry {self._run.run_dir}"
            )

    def _find(self, item: Any) -> Failure | None:
        failures = list(self._run.tally.failures)  # a copy: the loop thread may add failures meanwhile
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

    def _await(self, coro: Coroutine[Any, Any, T], retrying: bool = False) -> T:
        loop = self._loop()
        if _running_loop() is loop:
            coro.close()
            raise RuntimeError(
                "This method waits for the run's event loop, and a cell that uses await already runs on it; "
                "call it in a cell without await."
            )
        future: concurrent.futures.Future[T] | None = None
        try:
            future = asyncio.run_coroutine_threadsafe(held(coro), loop)  # a sys.exit() in it must not end the loop
            try:
                return future.result()
            except Escaped as escaped:
                raise escaped.error from None
        except KeyboardInterrupt:  # Ctrl-C at the prompt: give up the work, not the run
            if future is not None:
                future.cancel()
                if retrying:
                    print(
                        "\nInterrupted: the retries not started yet are dropped; those already running in a thread or a "
                        "worker finish there, and each that succeeds counts as succeeded when it ends."
                    )
            raise

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._run.loop
        if loop is None or loop.is_closed():
            raise RuntimeError("The run's event loop has ended; nothing more can run on it.")
        return loop


async def _all_ended(futures: set[asyncio.Future[Any]]) -> None:
    while futures:  # each one's own callback takes it out of the set
        await asyncio.wait(list(futures))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

