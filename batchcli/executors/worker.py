"""What runs inside a worker process of the process and Dask executors.

A worker process rebuilds the run's job once from plain data (``WorkerSpec``), sets its Service up
on an event loop of its own, runs chunks of items on that loop, and finishes the Service once at
the end. Items come back as plain per-item outcomes (``ChunkResult``); retry decisions stay in the
driver. The built job is cached per process, keyed by run, since a Dask worker outlives runs.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import pickle
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Awaitable, Callable

from batchcli.executors.calls import USER_ERRORS, ItemCalls, ours
from batchcli.durations import Durations, timed, timed_sync
from batchcli.executors.limiter import Limiter, Limits
from batchcli.executors.throttling import throttle_of
from batchcli.journal.results import Encoded, Encoding, Kept, encode
from batchcli.load.secret import Secret, mask_secrets, masked
from batchcli.load.service import maybe_await
from batchcli.outcome import CHUNK_KEPT_MAX
from batchcli.load.wiring import Job
from batchcli.executors.messages import (
    Chunk,
    ChunkResult,
    ChunkUnreadable,
    ErrorInfo,
    ItemError,
    WorkerError,
    WorkerSpec,
)

CANCEL_POLL_S = 0.05
"""How often a chunk checks whether the run is being cancelled (process executor)."""

TURN_S = 0.05
"""How long the lanes of a chunk may run items that never await, all of them in turn, before the worker's loop gets
a turn (for the cancel check): each lane runs its share of it, ``TURN_S`` / lanes, at least ``TURN_MIN_S``."""

TURN_MIN_S = 0.001


class WorkerJob:
    """One run's job in a worker process: its Service, set up once, on an event loop of its own.

    The loop lives as long as the job, so an async Service's ``setup()``, every item and
    ``finish()`` share one loop (a client session opened in ``setup()`` keeps working).
    """

    def __init__(self, spec: WorkerSpec) -> None:
        self.pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="batchcli-worker-loop", daemon=True)
        self._thread.start()
        job: Job | None = None
        try:
            job = _build(spec)
            self._on_loop(maybe_await(job.service.setup()))
            from batchcli.executors.retries import RetryPolicy

            self.retryable = RetryPolicy(job.config, job.service.exceptions_to_retry_for).retryable
        except USER_ERRORS as error:
            info = ErrorInfo.of(error)
            if job is not None:  # finish() runs whatever happened, as in the driver
                try:
                    self._on_loop(maybe_await(job.service.finish()))
                except USER_ERRORS:
                    pass
            self._close()
            raise WorkerError("Setting up the job failed", info, self.pid) from None
        self.job = job
        self._process = job.service.process
        self._calls: ItemCalls | None = None
        """Built for the first chunk that needs it; its threads follow each chunk's share."""
        self._limiters: dict[int, Limiter] = {}
        """One per slot (a process, or a Dask worker thread), keyed by thread id."""
        self._hold_until = 0.0
        """After a throttle with a Retry-After: until then (monotonic) a chunk that comes is handed back unstarted."""

    def run_chunk(
        self,
        chunk: Chunk,
        cancelled: Callable[[], bool] | None = None,
        limits: Callable[[], int] | None = None,
        holds: Callable[[], int] | None = None,
    ) -> ChunkResult:
        """Run a chunk's items, ``chunk.share`` at once; blocks until done (or ``cancelled()`` turns true).

        ``limits()`` is the driver's limits version now (process executor): once it differs from the
        chunk's, items waiting for a start slot go back unstarted, to be sent again under the new rate.
        ``holds()`` is how many times the driver has held every start now: once it differs from the chunk's, the
        run cools down after a throttle another worker saw, or was paused, and the chunk starts none of its
        remaining items.
        """
        try:
            # Unpickled only now: the items' classes live in the project this job just loaded.
            items: list[tuple[int, Any]] = pickle.loads(chunk.payload)
        except Exception as error:
            raise ChunkUnreadable("Reading a chunk of items failed", ErrorInfo.of(error), self.pid) from None
        holding = None if holds is None or chunk.live else (lambda: holds() != chunk.holds)
        if not chunk.live and (time.monotonic() < self._hold_until or (holding is not None and holding())):
            # Sent before the driver heard of the throttle (or paused): hand it back, it resends it once it goes on.
            return ChunkResult([], [], [o for o, _ in items], 0.0, self.pid)
        # The start rate carries over from chunk to chunk of the same slot (a process, or a Dask thread);
        # the chunk says what the slot's share of the run's limits is now.
        limiter = self._limiters.get(threading.get_ident())
        if limiter is None:
            limiter = self._limiters[threading.get_ident()] = Limiter(Limits(chunk.share, chunk.rate))
        else:
            limiter.set_concurrency(chunk.share)
            limiter.set_rate_limit(chunk.rate)
        if chunk.first_after_s > 0:  # the driver's slot for the chunk's first start, less the time it waited here
            waited = min(max(0.0, time.time() - chunk.sent_at), chunk.first_after_s)
            limiter.not_before(time.monotonic() + chunk.first_after_s - waited)
        rate_changed = None if limits is None else (lambda: limits() != chunk.limits)
        stale = _either(rate_changed, holding)
        return self._on_loop(self._run(items, chunk, limiter, cancelled, stale, holding))  # type: ignore[no-any-return]

    def finish(self) -> ErrorInfo | None:
        """Call the Service's ``finish()`` and stop the loop; the error it raised, if any."""
        try:
            self._on_loop(maybe_await(self.job.service.finish()))
        except USER_ERRORS as error:
            return ErrorInfo.of(error)
        finally:
            self._close()
        return None

    async def _run(
        self,
        items: list[tuple[int, Any]],
        chunk: Chunk,
        limiter: Limiter,
        cancelled: Callable[[], bool] | None,
        stale: Callable[[], bool] | None,
        holding: Callable[[], bool] | None,
    ) -> ChunkResult:
        started = time.perf_counter()
        ok: list[int] = []
        kept: list[Kept] = []
        errors: list[ItemError] = []
        calls = self._calls_for(chunk)
        failing = _Failing(chunk.give_back, chunk.alone)
        full = _Full()
        # Timed per chunk, not in the shared ItemCalls: a Dask worker runs several chunks at once on this loop.
        durations = Durations() if chunk.timed else None
        if not calls.is_async and chunk.share == 1 and chunk.timeout_s is None:
            process = self._process if durations is None else timed_sync(self._process, durations)
            # An item starts only while the driver holds no start (a cool-down, a pause): each checks, as for a cancel.
            # Without it, a worker that did not see the throttle went on with its chunk: 26-27 requests inside a
            # 2 s Retry-After (test_throttle.py, chunk_size=60).
            stopped = _either(cancelled, holding)
            skipped = self._run_inline(items, process, limiter, stopped, stale, ok, kept, errors, failing, full)
        else:
            call = calls.call if durations is None else timed(calls.call, durations)
            skipped = await self._run_lanes(
                items, call, limiter, cancelled, stale, holding, ok, kept, errors, failing, full
            )
        return ChunkResult(ok, errors, skipped, time.perf_counter() - started, self.pid, kept, durations)

    def _run_inline(
        self,
        items: list[tuple[int, Any]],
        process: Callable[[Any], Any],
        limiter: Limiter,
        cancelled: Callable[[], bool] | None,
        stale: Callable[[], bool] | None,
        ok: list[int],
        kept: list[Kept],
        errors: list[ItemError],
        failing: _Failing,
        full: _Full,
    ) -> list[int]:
        # One sync item at a time needs no thread hop: call it right here.
        for index, (ordinal, item) in enumerate(items):
            if cancelled is not None and cancelled():
                return [o for o, _ in items[index:]]
            if limiter.throttled and (delay := limiter.delay()) > 0 and not _sleep(delay, stale):
                return [o for o, _ in items[index:]]  # the rate changed: the rest goes back unstarted
            try:
                if (result := process(item)) is not None:
                    result = encode(result)  # here, so a value that cannot be kept fails its item
            except USER_ERRORS as error:
                errors.append(failed := self._error(ordinal, error, failing.alone))
                # The run cools down, or the breaker may open: the rest goes back to the driver unstarted.
                if failing.stops(failed, len(errors), len(ok) + len(kept)):
                    return [o for o, _ in items[index + 1 :]]
            else:
                if result is None:
                    ok.append(ordinal)
                else:
                    kept.append((ordinal, *result))
                    if full.add(result):  # the chunk's results are as large as one should carry: the rest goes back
                        return [o for o, _ in items[index + 1 :]]
        return []

    async def _run_lanes(
        self,
        items: list[tuple[int, Any]],
        call: Callable[[Any], Awaitable[Any]],
        limiter: Limiter,
        cancelled: Callable[[], bool] | None,
        stale: Callable[[], bool] | None,
        holding: Callable[[], bool] | None,
        ok: list[int],
        kept: list[Kept],
        errors: list[ItemError],
        failing: _Failing,
        full: _Full,
    ) -> list[int]:
        queue = deque(items)
        running: set[int] = set()
        held: list[int] = []
        """Items not started because a throttle came back: the driver sends them after the cool-down."""

        lanes = min(limiter.concurrency, len(items))
        # The loop looks at its timers (the cancel check's) only once every lane has had its turn: a lane of its own
        # had TURN_S, and fifty lanes of items that never await held it 2.5 s, so a stop at once came too late to
        # keep what the chunk had done.
        window = max(TURN_S / max(lanes, 1), TURN_MIN_S)

        async def lane() -> None:
            turn_at = time.monotonic() + window
            while queue:
                if holding is not None and holding():  # a cool-down or a pause (``run_chunk``): the rest goes back
                    held.extend(o for o, _ in queue)
                    queue.clear()
                    return
                ordinal, item = queue.popleft()
                running.add(ordinal)
                if limiter.throttled and (delay := limiter.delay()) > 0 and not await _wait(delay, stale):
                    running.discard(ordinal)  # the rate changed: this item and the rest go back unstarted
                    held.append(ordinal)
                    held.extend(o for o, _ in queue)
                    queue.clear()
                    return
                try:
                    if (result := await call(item)) is not None:
                        # A sync process's was encoded in its thread, before the thread took another item.
                        result = result.encoded if type(result) is Encoding else encode(result)
                except asyncio.CancelledError:
                    raise  # stays in ``running``: reported as skipped
                except USER_ERRORS as error:
                    if ours(error):
                        raise
                    errors.append(failed := self._error(ordinal, error, failing.alone))
                    if failing.stops(failed, len(errors), len(ok) + len(kept)):
                        held.extend(o for o, _ in queue)
                        queue.clear()
                else:
                    if result is None:
                        ok.append(ordinal)
                    else:
                        kept.append((ordinal, *result))
                        if full.add(result):
                            held.extend(o for o, _ in queue)
                            queue.clear()
                running.discard(ordinal)
                # An item that never awaits keeps the loop: a clock read per item, a turn now and then.
                if (now := time.monotonic()) >= turn_at:
                    turn_at = now + window
                    if cancelled is not None and cancelled():
                        return  # the rest goes back unstarted, without waiting for the chunk's own check
                    await asyncio.sleep(0)

        pending = {asyncio.ensure_future(lane()) for _ in range(lanes)}
        while pending:
            done, pending = await asyncio.wait(pending, timeout=None if cancelled is None else CANCEL_POLL_S)
            for task in done:
                task.result()  # a BaseException from user code ends the chunk
            if pending and cancelled is not None and cancelled():
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
                break
        return [*running, *held, *(o for o, _ in queue)]

    def _calls_for(self, chunk: Chunk) -> ItemCalls:
        calls = self._calls
        if calls is None or calls.timeout_s != chunk.timeout_s:
            if calls is not None:
                calls.close()
            calls = self._calls = ItemCalls(self._process, chunk.share, chunk.timeout_s, keep=Encoding.of)
        else:
            calls.resize(chunk.share)
        return calls

    def _error(self, ordinal: int, error: BaseException, alone: frozenset[int] = frozenset()) -> ItemError:
        # Recognised here: the exception's class (an HTTP library's) may not exist in the driver.
        throttle = throttle_of(error)
        if throttle is not None:
            if throttle.retry_after_s and ordinal not in alone:
                wait = min(throttle.retry_after_s, self.job.config.throttle_max_wait_s)
                self._hold_until = max(self._hold_until, time.monotonic() + wait)
            return ItemError(ordinal, ErrorInfo.of(error), True, True, throttle.retry_after_s, throttle.unavailable)
        return ItemError(ordinal, ErrorInfo.of(error), self.retryable(error))

    def _on_loop(self, coro: Awaitable[Any]) -> Any:
        # The exception comes back as a value: re-raised through Future.result() it would carry
        # concurrent.futures' frames into the user's traceback.
        failed, value = asyncio.run_coroutine_threadsafe(_capture(coro), self._loop).result()
        if failed:
            raise value
        return value

    def _close(self) -> None:
        calls = getattr(self, "_calls", None)  # absent when setup() failed
        if calls is not None:
            calls.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()


def _either(first: Callable[[], bool] | None, second: Callable[[], bool] | None) -> Callable[[], bool] | None:
    """True when either check is (None stands for a check never asked for)."""
    if first is None or second is None:
        return first or second
    return lambda: first() or second()


def _sleep(delay: float, stale: Callable[[], bool] | None) -> bool:
    """Sleep ``delay`` seconds for a start slot; False (at once) if the driver's limits changed meanwhile."""
    if stale is None:
        time.sleep(delay)
        return True
    deadline = time.monotonic() + delay
    while (left := deadline - time.monotonic()) > 0:
        if stale():
            return False
        time.sleep(min(left, CANCEL_POLL_S))
    return not stale()


async def _wait(delay: float, stale: Callable[[], bool] | None) -> bool:
    """``_sleep`` on the worker's loop."""
    if stale is None:
        await asyncio.sleep(delay)
        return True
    deadline = time.monotonic() + delay
    while (left := deadline - time.monotonic()) > 0:
        if stale():
            return False
        await asyncio.sleep(min(left, CANCEL_POLL_S))
    return not stale()


class _Failing:
    """When a chunk has failed enough for the breaker to want a say: see ``Chunk.give_back``."""

    def __init__(self, give_back: tuple[int, float] | None, alone: frozenset[int] = frozenset()) -> None:
        self._after, self._share = give_back if give_back is not None else (0, 0.0)
        self.alone = alone
        """``Chunk.alone``: a throttle of one of these stops nothing."""

    def enough(self, failed: int, succeeded: int) -> bool:
        """Asked after a failure only: the success path pays nothing."""
        return 0 < self._after <= failed and failed >= self._share * (failed + succeeded)

    def stops(self, error: ItemError, failed: int, succeeded: int) -> bool:
        """Whether the rest of the chunk goes back unstarted after ``error``: a throttle of the run's pace (the run
        cools down), or enough failures for the breaker to want a say."""
        return (error.throttled and error.ordinal not in self.alone) or self.enough(failed, succeeded)


class _Full:
    """When a chunk's results are as large as one chunk should bring back (``CHUNK_KEPT_MAX``)."""

    def __init__(self) -> None:
        self.size = 0

    def add(self, encoded: Encoded) -> bool:
        """Count one more result; True once the chunk carries enough (its unstarted items go back)."""
        text, blob = encoded
        self.size += len(text) if blob is None else len(text) + len(blob)
        return self.size > CHUNK_KEPT_MAX


def _build(spec: WorkerSpec) -> Job:
    from batchcli.load.configuration import bind_runtime
    from batchcli.load.wiring import build_job
    from batchcli.executors.bundle import unpack
    from batchcli.load.project import load_project

    target = unpack(spec.bundle, spec.key) if spec.bundle is not None else spec.wiring.target
    # The wiring carries every value the driver read, the environment's included (Run.wiring): a worker's
    # own environment (another machine, for Dask) must not change the job.
    by_name = spec.bundle is None and spec.wiring.by_name
    job = build_job(
        load_project(target, by_name=by_name), replace(spec.wiring, target=target, by_name=by_name), environ={},
        with_source=False,
    )  # fmt: skip
    bind_runtime(job.config, output_dir=Path(spec.output_dir), run_dir=Path(spec.run_dir), started_at=spec.started_at)
    return job


async def _capture(coro: Awaitable[Any]) -> tuple[bool, Any]:
    try:
        return False, await coro
    except USER_ERRORS as error:  # a SystemExit or another BaseException too: it comes back as a value all the same
        if ours(error):
            raise
        return True, error


# The built jobs of this process, one per run. Module state is the point here: it is what lets a
# worker process build a job once and reuse it for every chunk of that run.
_jobs: dict[str, WorkerJob] = {}
_jobs_lock = threading.Lock()


def job_for(spec: WorkerSpec) -> WorkerJob:
    """This process's job for ``spec``, built and set up on first use."""
    with _jobs_lock:
        job = _jobs.get(spec.key)
        if job is None:
            job = _jobs[spec.key] = WorkerJob(spec)
        return job


_steering: dict[str, list[int]] = {}
"""Per run: [cancelled, limits version, holds], as the driver last said through ``steer`` (a Dask worker, where
a running task can be told nothing else); the chunks of that run read them as the process executor's read its
shared values."""


def steer(key: str, cancelled: bool, limits: int, holds: int = 0) -> None:
    """The driver's word to this worker process (``Client.run``, on the worker's event loop): the run ``key`` was
    cancelled (its chunks give back the items they have not started), its limits changed (items waiting for a
    start slot go back, to be sent again under the new rate), or it holds every start, cooling down after a throttle
    or paused (its chunks start none of their remaining items)."""
    state = _steering.setdefault(key, [0, limits, holds])
    state[0] = state[0] or int(cancelled)
    state[1] = max(state[1], limits)
    state[2] = max(state[2], holds)


def finish_job(key: str) -> ErrorInfo | None:
    """Finish and forget this process's job for the run ``key`` (nothing when it never built one)."""
    with _jobs_lock:
        job = _jobs.pop(key, None)
    _steering.pop(key, None)
    return None if job is None else job.finish()


def prepare(spec: WorkerSpec) -> int:
    """Build and set up the job in this process (a Dask task); returns the process id."""
    hold_records(spec.log_level)
    job_for(spec)
    return os.getpid()


_PLAIN = (str, int, float, bool, type(None))


class PlainRecords(logging.handlers.QueueHandler):
    """Sends each record formatted (``QueueHandler.prepare``) and with plain data only: an ``extra=`` value the
    driver could not unpickle (an exception whose ``__init__`` takes other arguments) ended the thread that reads
    the worker, and the run hung; one that could not be pickled lost its line, with a "Logging error" on stderr."""

    def prepare(self, record: logging.LogRecord) -> Any:
        record = super().prepare(record)
        attributes = record.__dict__
        for name, value in attributes.items():
            if type(value) not in _PLAIN:  # an extra; a Secret (a str subclass) is masked
                attributes[name] = masked(value) if isinstance(value, Secret) else _text_of(value)
        return record


def _text_of(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object>"


RECORDS_HELD_MAX = 10_000
"""At most how many log records a Dask worker or Ray actor holds between two answers; the rest are counted."""
_CLUSTERS_OWN = ("distributed", "dask", "tornado", "bokeh", "ray")
"""Loggers of the cluster's own machinery, which logs where the cluster says: not the job's records."""


class _Held:
    """A Dask worker's or Ray actor's log records, held until its next answer takes them to the driver."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self.dropped = 0
        self.lock = threading.Lock()

    def put_nowait(self, record: logging.LogRecord) -> None:
        with self.lock:
            if len(self.records) < RECORDS_HELD_MAX:
                self.records.append(record)
            else:
                self.dropped += 1


_held: _Held | None = None
_held_handler: logging.Handler | None = None


def hold_records(level: int) -> None:
    """On a Dask worker or Ray actor: keep this process's log records (the job's, not the cluster's own) for the
    driver, which writes them to the run's log and console as it does a process worker's. They went to the worker's
    stderr (Dask) or nowhere (Ray), and the run's log file had none of them."""
    global _held, _held_handler
    root = logging.getLogger()
    if _held_handler is None:
        _held = _Held()
        _held_handler = PlainRecords(_held)  # type: ignore[arg-type]
        _held_handler.addFilter(mask_secrets)
        _held_handler.addFilter(lambda record: not record.name.startswith(_CLUSTERS_OWN))
        root.addHandler(_held_handler)
        logging.captureWarnings(True)  # the job's warnings.warn() too, as a process worker's
    _held_handler.setLevel(level)
    if root.level > level:
        root.setLevel(level)


def take_records() -> list[logging.LogRecord]:
    """The log records held since the last call (``hold_records``), and a warning for those that did not fit."""
    held = _held
    if held is None or not (held.records or held.dropped):
        return []
    with held.lock:
        records, held.records = held.records, []
        dropped, held.dropped = held.dropped, 0
    if dropped:
        records.append(logging.makeLogRecord({
            "name": "batchcli", "levelno": logging.WARNING, "levelname": "WARNING",
            "msg": f"{dropped} log records of worker process {os.getpid()} were dropped: more than "
                   f"{RECORDS_HELD_MAX} came between two of its answers.",
        }))  # fmt: skip
    return records


def run_chunk(spec: WorkerSpec, chunk: Chunk) -> ChunkResult:
    """Run one chunk of the run ``spec`` in this process (a Dask task), steered by what ``steer`` hears meanwhile."""
    hold_records(spec.log_level)
    return run_steered(job_for(spec), spec.key, chunk)


def run_steered(job: WorkerJob, key: str, chunk: Chunk) -> ChunkResult:
    """``job.run_chunk`` for the run ``key``, reading its ``steer`` state as it goes (Dask tasks, Ray actors)."""
    state = _steering.setdefault(key, [0, chunk.limits, chunk.holds])
    state[1] = max(state[1], chunk.limits)  # a chunk may come before the word of its own limits
    state[2] = max(state[2], chunk.holds)
    result = job.run_chunk(chunk, lambda: state[0] != 0, lambda: state[1], lambda: state[2])
    records = take_records()
    return replace(result, records=records) if records else result
