"""The driver of the process and Dask executors: items go to worker processes in chunks.

The driver pulls items from the source, packs them into chunks, keeps a bounded number of chunks
in flight (two per worker slot: one running, one ready to start), and reads back one outcome per
item. Retries, backoff, failure records and the counts stay here, in the ``RetryScheduler`` the
async executor uses too, so every executor has the same semantics. Where chunks run is a ``Backend``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import pickle
import time
from collections import deque
from typing import Any, Callable, Iterator, NamedTuple, Protocol

from batchcli.load.configuration import Configuration
from batchcli.executors.base import Items
from batchcli.executors.calls import USER_ERRORS, Unfinished, ours, settled_later
from batchcli.executors.messages import (
    Chunk,
    ChunkResult,
    ChunkUnreadable,
    ErrorInfo,
    ItemError,
    WorkerError,
    WorkerLost,
    emit,
)
from batchcli.executors.sizing import ChunkSizer
from batchcli.journal.results import decode
from batchcli.outcome import KEPT_OVERHEAD, RECORDER_WAIT_S, Tally, qualified_name
from batchcli.executors.limiter import Limiter, Limits
from batchcli.executors.retries import THROTTLES_MAX, Attempts, RetryPolicy, RetryScheduler, throttled_before
from batchcli.executors.throttling import GROW_INTERVAL_S, Cooldown, Relayed, Throttle

log = logging.getLogger("batchcli")

SLOW_SOURCE_S = 0.05
"""A chunk whose items took the Source longer than this to give goes with what it has (``_take``)."""
CHUNKS_PER_SLOT = 2
"""Chunks in flight per worker slot: one running and one waiting, so a worker never waits for the driver."""
PACED_CHUNK_S = 1.0
"""Under a rate limit a chunk holds no more items than its worker's share of the rate starts in this long (its
lanes at least): a worker reports a chunk's outcomes at its end, and chunks sized for 0.1 s of work before a throttle
cut the rate to 1.8/s ran 10-20 s each, so the adaptive growth saw no success for 20 s (``_take``)."""


class Backend(Protocol):
    """Where chunks run: worker processes on this machine, or a Dask cluster."""

    async def start(self) -> None:
        """Start the workers and set the job up in each; raise ``WorkerError`` (after cleaning up) if that fails."""

    def slots(self) -> int:
        """How many chunks can run at once (worker processes times threads)."""

    async def submit(self, chunk: Chunk) -> ChunkResult:
        """Run one chunk; raise ``WorkerLost`` when its worker died, ``WorkerError`` when it could not run it."""

    def queued(self, chunk: Chunk) -> bool:
        """True while a submitted chunk waits to be sent to a worker: cancelling ``submit`` then keeps it from
        running. False once a worker may run it, which nothing stops (Dask and Ray take every chunk at once)."""

    def cancel(self) -> None:
        """Abandon running chunks: their unfinished items come back as skipped."""

    def abandon(self) -> None:
        """The run exits without ``close()``, skipping ``atexit``: end the workers that would outlive it."""

    def limits_changed(self, version: int) -> None:
        """The rate changed: chunks sent with an older ``Chunk.limits`` hand back the items waiting for a slot."""

    def hold(self, count: int) -> None:
        """The driver holds every start (its ``count``-th time: a throttle's cool-down, a pause): chunks sent with an
        older ``Chunk.holds`` start none of their remaining items and hand them back unstarted."""

    async def close(self, timeout: float | None) -> WorkerError | None:
        """Call ``finish()`` in every worker and stop them; the first error ``finish()`` raised, or a worker that
        died before it returned. ``timeout`` None waits for as long as ``finish()`` takes: a stop that runs out of
        time cancels the run (``cancel``), which ends the wait."""


class ItemFailed(Relayed):
    """A failed attempt as the driver sees it: the worker's exception, as text."""

    def __init__(self, error: ItemError) -> None:
        super().__init__(error.info.message)
        self.info = error.info
        self.throttle = Throttle(error.retry_after_s, error.unavailable) if error.throttled else None


class WorkerRaised(ItemFailed):
    """What a worker's ``process()`` raised on an item the pause shell or ``ctl`` retried (``process_one``)."""

    def __str__(self) -> str:  # the worker's exception, its class included: the shell shows only this class
        return f"{self.info.error_type}: {self.info.message}" if self.info.message else self.info.error_type


class RetryableItemFailed(ItemFailed):
    """An attempt that failed with an exception the worker's Service retries."""


class _Entry(NamedTuple):
    ordinal: int
    item: Any
    attempts: Attempts | None


class ChunkedExecutor:
    """Runs items on a ``Backend`` in chunks, with the async executor's retry semantics.

    A retrying item waits in a timer and rides in a later chunk. When a worker dies, every item
    of the chunk it was running counts one attempt and is retried in a chunk of its own, so an
    item that kills its worker cannot take the others down with it again.
    """

    def __init__(self, backend: Backend, config: Configuration, tally: Tally) -> None:
        self._backend = backend
        self._config = config
        self._tally = tally
        self._retries = RetryScheduler(RetryPolicy(config, (RetryableItemFailed, WorkerLost)), tally)
        self._limiter = Limiter(Limits(config.concurrency, config.rate_limit))
        """The run's total limits; each chunk gets its slot's share of them."""
        self._cooldown = Cooldown(config, self._limiter, self._apply_limits, tally)
        self._sizer = ChunkSizer(config.chunk_size)
        self._ready: deque[_Entry] = deque()
        """Items a worker never started, to send again."""
        self._due: deque[_Entry] = deque()
        """Retries whose delay passed: counted as retrying until they are sent."""
        self._suspects: deque[_Entry] = deque()
        """Items of a chunk whose worker died, retried: each goes alone (counted as retrying until sent)."""
        self._chunks: dict[asyncio.Task[None], list[_Entry]] = {}
        self._lanes: dict[asyncio.Task[None], int] = {}
        """How many items at once each chunk sent may run (``_lanes_for``)."""
        """Each running chunk's task and the items it carries."""
        self._refused: set[int] = set()
        """Ordinals the API refused for now and has not served yet (``_served_refused``)."""
        self._ids = itertools.count()
        self._first_starts = Limiter(Limits(1, None))
        """The chunks' first starts, booked on the whole rate limit (``_book_first_start``; its concurrency unused)."""
        self._pulled = 0
        self._slow_source = False
        """The last chunk went before it was full, the Source being slow: the loop gets a turn before the next."""
        self._error: BaseException | None = None
        self.stopping = False
        """True once a stop was asked for: no new chunk is sent."""
        self.paused = False
        """True while paused: no new chunk is sent until ``resume``."""
        self.fatal: BaseException | None = None
        """An exception from the source itself, which ends the run."""
        self._started = False
        self._limits_version = 0
        """Counts rate changes; each chunk carries the version it was sent under."""
        self._holds = 0
        """Counts the holds of every start (throttles' cool-downs, pauses), told to the backend; each chunk carries it."""

    @property
    def limits(self) -> Limits:
        """The total concurrency and rate limit across workers, in force now."""
        return self._limiter.limits

    async def start(self) -> None:
        """Start the workers; raises when the job cannot be set up in them."""
        await self._backend.start()
        self._started = True

    async def finish(self) -> None:
        """Finish the job in every worker and stop them; raises the first error of a ``finish()``."""
        if not self._started:  # a failed start stopped its workers already
            return
        # As long as finish() takes, as on the async executor: stop_timeout_s bounds a stop, and a stop that runs
        # out of time cancels the run, which ends this wait too. (It cut a slow finish() off in a run that ended
        # normally, which then passed for finished on Dask and Ray.)
        error = await self._backend.close(None)
        if error is not None:
            raise error

    async def run(self, items: Items) -> None:
        """Process every item; returns when all are settled, or after a stop."""
        self._loop = asyncio.get_running_loop()
        self._retries.bind(self._loop)
        self._wake = asyncio.Event()
        self._grow_timer = self._loop.call_later(GROW_INTERVAL_S, self._grow)
        self._cooldown.start()
        if isinstance(items, Iterator):
            self._next: Callable[[], tuple[int, Any]] | None = items.__next__
        else:
            self._next = None
            self._anext = items.__anext__
        try:
            while True:
                self._wake.clear()
                await self._fill()
                if not self._chunks and not self._retries.pending and not self._ready and not self._due and not self._suspects:
                    if self.stopping or self._tally.exhausted or self.fatal is not None:
                        break
                await self._wake.wait()
        finally:
            self._grow_timer.cancel()
            self._retries.close()
        if self._error is not None:
            raise self._error

    # Sending chunks.

    async def _fill(self) -> None:
        if (left := self._cooldown.remaining_s) > 0:  # throttled: no chunk is sent until the cool-down ends
            self._loop.call_later(left, self._wake.set)
            return
        tally = self._tally
        if tally.kept_backlog or tally.failure_backlog or tally.done_backlog:  # beyond the memory budget: send nothing yet
            self._loop.call_later(RECORDER_WAIT_S, self._wake.set)
            return
        while not self.stopping and not self.paused and len(self._chunks) < self._chunks_at_once():
            entries = await self._take()
            if entries and not self.stopping:
                self._send(entries)
            if not entries or self.stopping:
                return
            if self._slow_source:  # the loop's turn: the workers' answers, a stop, the display's clock
                self._slow_source = False
                await asyncio.sleep(0)
            if self.fatal is not None:  # the source broke: what it gave is sent, nothing more
                self.stop()
                return

    async def _take(self) -> list[_Entry]:
        if self._suspects:
            self._retries.started()
            return [self._suspects.popleft()]
        slots = self._backend.slots()
        total = self._tally.total
        size = self._sizer.size(self._share(slots), slots, None if total is None else total - self._pulled)
        if (rate := self._limiter.limits.rate_limit) is not None:
            size = min(size, max(self._share(slots), math.ceil(rate / max(1, slots) * PACED_CHUNK_S)))
        if (held := self._cooldown.held) is not None:
            # The circuit breaker's probe is one item, and its steps back up as many as it lets run: a probe chunk
            # of 16-56 items reopened the breaker on one transient failure among their successes, on a healthy API.
            size = min(size, held)
        entries: list[_Entry] = []
        ready = self._ready
        while ready and len(entries) < size:
            entries.append(ready.popleft())
        due = self._due
        if due and len(entries) < size:
            taken = min(len(due), size - len(entries))
            entries.extend(due.popleft() for _ in range(taken))
            self._retries.started(taken)
        tally = self._tally
        pulling = time.monotonic()
        while len(entries) < size and not tally.exhausted and self.fatal is None:
            if entries and time.monotonic() - pulling > SLOW_SOURCE_S:
                # A slow source (a page of an API, a query per item): send what there is, and let the loop run
                # before the next chunk. It filled every chunk slot first: nothing settled meanwhile, for tens of
                # seconds, and a stop waited past its timeout (a hard stop, without finish()).
                self._slow_source = True
                break
            try:
                if self._next is not None:
                    ordinal, item = self._next()
                else:
                    ordinal, item = await self._anext()
            except (StopIteration, StopAsyncIteration):
                tally.exhausted = True
                break
            except USER_ERRORS as error:
                if ours(error):
                    raise
                self.fatal = error
                break
            self._pulled += 1
            entries.append(_Entry(ordinal, item, None))
        return entries

    def _send(self, entries: list[_Entry]) -> None:
        try:
            payload = pickle.dumps([(e.ordinal, e.item) for e in entries], pickle.HIGHEST_PROTOCOL)
        except Exception:
            entries = self._drop_unpicklable(entries)
            if not entries:
                return
            payload = pickle.dumps([(e.ordinal, e.item) for e in entries], pickle.HIGHEST_PROTOCOL)
        slots, limits = self._backend.slots(), self._limiter.limits
        rate = None if limits.rate_limit is None else limits.rate_limit / slots
        lanes = self._lanes_for(slots)
        chunk = Chunk(
            next(self._ids), payload, len(entries), lanes, self._config.item_timeout_s, rate,
            self._limits_version,
            self._give_back(slots),
            self._tally.durations is not None,
            self._alone(entries),
            self._holds,
            self._book_first_start(limits.rate_limit),
            time.time(),
        )
        self._tally.in_flight += len(entries)
        task = self._loop.create_task(self._run_chunk(chunk, entries))
        self._chunks[task] = entries
        self._lanes[task] = lanes

    def _book_first_start(self, rate: float | None) -> float:
        """Seconds from now before the chunk sent now may start its first item: one slot of the whole ``rate``
        per chunk (``Chunk.first_after_s``); 0 without a rate limit."""
        self._first_starts.set_rate_limit(rate)
        return self._first_starts.delay()

    async def process_one(self, item: Any, unfinished: Unfinished | None = None) -> Any:
        """Process ``item`` once in a worker, outside the run's counts (the pause shell's and ``ctl``'s retries):
        what its ``process()`` returned, or the worker's error raised as ``WorkerRaised``. The Service in the driver
        was never set up (its ``setup()`` runs in the workers), so a retry there failed on what setup() opens.

        A cancel drops the chunk while the backend still holds it back (``Backend.queued``); once a worker has it,
        nothing stops it, and ``unfinished`` (when given) gets the future of its outcome."""
        payload = pickle.dumps([(-1, item)], pickle.HIGHEST_PROTOCOL)
        chunk = Chunk(next(self._ids), payload, 1, 1, self._config.item_timeout_s, None, self._limits_version, live=True)
        if unfinished is None:
            return await self._one(chunk)
        submitted: list[bool] = []
        outcome = asyncio.ensure_future(self._one(chunk, submitted))
        return await settled_later(outcome, lambda: bool(submitted) and not self._backend.queued(chunk), unfinished)

    async def _one(self, chunk: Chunk, submitted: list[bool] | None = None) -> Any:
        """``process_one``'s chunk, sent; ``submitted`` gets an entry once the backend has it."""
        if submitted is not None:
            submitted.append(True)
        result = await self._backend.submit(chunk)
        if result.errors:
            raise WorkerRaised(result.errors[0])
        if result.skipped:
            raise RuntimeError("The worker did not get to the item (the run is stopping); nothing was retried.")
        if not result.kept:
            return None
        _, text, blob = result.kept[0]
        return decode(text, blob)  # our own worker's pickle

    def items_in_flight(self) -> dict[int, Any]:
        """Ordinal -> item of every item in a chunk that a worker holds now. Call on the loop's thread."""
        return dict(sorted((e.ordinal, e.item) for entries in self._chunks.values() for e in entries))

    def _drop_unpicklable(self, entries: list[_Entry]) -> list[_Entry]:
        """Fail the items that cannot travel to a worker (at once: pickling again will not help)."""
        kept = []
        for entry in entries:
            try:
                pickle.dumps(entry.item, pickle.HIGHEST_PROTOCOL)
            except Exception as error:
                info = ErrorInfo(
                    qualified_name(type(error)),
                    f"the item cannot be pickled to send it to a worker process ({error}); make the Source yield "
                    "plain data (str, numbers, dataclasses, dicts) or use executor=async",
                    "",
                )
                self._failed(entry, ItemFailed(ItemError(entry.ordinal, info, False)))
            else:
                kept.append(entry)
        return kept

    def _alone(self, entries: list[_Entry]) -> frozenset[int]:
        """The ordinals whose next refusal holds neither the worker nor the rest of their chunk (``Chunk.alone``)."""
        tally = self._tally
        if not tally.throttles:  # the common case: no look at each item of each chunk
            return frozenset()
        return frozenset(e.ordinal for e in entries if e.attempts is not None and e.attempts.refused_alone(tally))

    def _give_back(self, slots: int) -> tuple[int, float] | None:
        # The breaker decides here, on outcomes that come back a chunk at a time: a chunk that is failing
        # stops after its part of the failures that open the breaker, so the chunks in flight together
        # spend about one breaker window of items, not their whole length.
        config = self._config
        if config.breaker_window == 0:
            return None
        opening = math.ceil(config.breaker_failure_rate * config.breaker_window)
        return max(1, math.ceil(opening / (2 * CHUNKS_PER_SLOT * slots))), config.breaker_failure_rate

    def _chunks_at_once(self) -> int:
        # Each running chunk gets at least one lane, so a total below the slots is kept by sending fewer
        # chunks (and none ahead): ctl's `set concurrency=1` with two workers ran two items at once.
        slots, concurrency = self._backend.slots(), self._limiter.concurrency
        return concurrency if concurrency < slots else CHUNKS_PER_SLOT * slots

    def _share(self, slots: int) -> int:
        # ``concurrency`` is the total in flight; each running chunk gets its part of it.
        return max(1, math.ceil(self._limiter.concurrency / max(1, slots)))

    def _lanes_for(self, slots: int) -> int:
        """The lanes of a chunk sent now: its share, cut so that it and any ``slots - 1`` of the chunks already sent
        (those may be the ones running beside it) stay within the concurrency. Each chunk had the share rounded up:
        concurrency=3 on 2 workers ran 4 items at once, and an API that allows 3 answered 429."""
        concurrency, share = self._limiter.concurrency, self._share(slots)
        if concurrency % max(1, slots) == 0 or concurrency < slots:  # an even split (or one lane a chunk) fits
            return share
        beside = sorted(self._lanes.values(), reverse=True)[: slots - 1]
        return max(1, min(share, concurrency - sum(beside)))

    # Reading outcomes.

    async def _run_chunk(self, chunk: Chunk, entries: list[_Entry]) -> None:
        try:
            result = await self._backend.submit(chunk)
        except WorkerLost as lost:
            self._tally.in_flight -= len(entries)
            self._lost(entries, lost)
        except ChunkUnreadable as error:
            self._tally.in_flight -= len(entries)
            self._unreadable(entries, error)
        except Exception as error:  # the chunk could not run at all: a worker could not set the job up
            self._tally.in_flight -= len(entries)
            if self._error is None:
                self._error = error
            self.stop()
        else:
            self._settle(entries, result)
        finally:
            self._chunks.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self._lanes.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self._wake.set()

    def _settle(self, entries: list[_Entry], result: ChunkResult) -> None:
        if result.records:
            emit(result.records)
        tally = self._tally
        tally.in_flight -= len(entries)
        tally.succeeded += len(result.succeeded)
        tally.done.extend(result.succeeded)
        if self._refused:  # throttles came: did the API serve an item it had refused (``Cooldown.by_pace``)?
            self._served_refused(result)
        kept_bytes = 0
        if result.kept:
            tally.succeeded += len(result.kept)
            tally.kept.extend(result.kept)
            text_bytes = sum(len(text) for _, text, _ in result.kept)  # as ``Tally.take_kept`` counts them out
            tally.kept_bytes += text_bytes + KEPT_OVERHEAD * len(result.kept)
            kept_bytes = text_bytes + sum(len(blob) for _, _, blob in result.kept if blob is not None)
        if result.errors or result.skipped:
            by_ordinal = {e.ordinal: e for e in entries}
            for error in result.errors:
                if error.throttled:
                    self._throttled(by_ordinal[error.ordinal], error)
                    continue
                cls = RetryableItemFailed if error.retryable else ItemFailed
                self._failed(by_ordinal[error.ordinal], cls(error))
            if not self.stopping:  # never attempted: no attempt counted
                self._ready.extendleft(by_ordinal[o] for o in reversed(result.skipped))
        self._sizer.observe(len(entries) - len(result.skipped), result.elapsed_s, kept_bytes)
        if result.durations is not None and tally.durations is not None:
            tally.durations.add(result.durations)

    def _lost(self, entries: list[_Entry], lost: WorkerLost) -> None:
        if not lost.started:
            if not self.stopping:
                self._ready.extendleft(reversed(entries))
            return
        if len(entries) > 1 and not self.stopping:
            # Which item took the worker down is unknown, so none is charged for it: each goes again alone, and
            # one that takes its worker down alone is charged then. Charging all of them failed the bystanders
            # of a crashing item for good (with max_retries=0 at once, as WorkerLost, though they had succeeded).
            log.warning(
                "%s while it ran %d item(s); each goes again on its own, and counts an attempt only if its worker "
                "dies while it runs alone.", lost, len(entries),
            )  # fmt: skip
            self._tally.retrying += len(entries)  # as requeued retries: until each is sent (_take)
            self._suspects.extend(entries)
            self._wake.set()
            return
        log.warning("%s while it ran %d item(s); each counts one attempt and is retried on its own.", lost, len(entries))
        for entry in entries:
            self._failed(entry, lost, alone=True)

    def _unreadable(self, entries: list[_Entry], error: ChunkUnreadable) -> None:
        """A worker could not unpickle the chunk: one item of it (or more) does not rebuild there. Each goes again
        alone to find which; one that cannot be read alone fails, not retried (reading it again fails again), as
        an item that cannot be pickled does. It stopped the run (exit 3), and every resume of it."""
        if len(entries) > 1:
            if not self.stopping:
                log.warning(
                    "A worker process could not unpickle a chunk of %d items (%s: %s); each goes again on its own, "
                    "to find the item(s) at fault.", len(entries), error.info.error_type, error.info.message,
                )  # fmt: skip
                self._tally.retrying += len(entries)  # as requeued retries: until each is sent (_take)
                self._suspects.extend(entries)
                self._wake.set()
            return
        info = ErrorInfo(
            error.info.error_type,
            f"the item could not be unpickled in the worker process ({error.info.message}); make the Source yield "
            "plain data (str, numbers, dataclasses, dicts), or a class that pickles back as it was, or use "
            "executor=async",
            error.info.traceback,
        )
        self._failed(entries[0], ItemFailed(ItemError(entries[0].ordinal, info, False)))

    def _failed(self, entry: _Entry, error: Exception, alone: bool = False) -> None:
        if isinstance(error, ItemFailed):
            info = error.info
        else:
            info = ErrorInfo(qualified_name(type(error)), str(error), f"{qualified_name(type(error))}: {error}")
        requeue = self._requeue_alone if alone else self._requeue
        self._retries.failed(entry.ordinal, entry.item, entry.attempts, error, requeue, self.stopping, info)

    def _served_refused(self, result: ChunkResult) -> None:
        served = self._refused.intersection(result.succeeded)
        served.update(self._refused.intersection(ordinal for ordinal, _, _ in result.kept))
        for error in result.errors:
            if not error.throttled:  # settled otherwise: no longer an item refused for now
                self._refused.discard(error.ordinal)
        if served:
            self._refused -= served
            self._cooldown.served_refused(cuts=False)

    def _throttled(self, entry: _Entry, error: ItemError) -> None:
        before = self._cooldown.until
        throttle = Throttle(error.retry_after_s, error.unavailable)
        repeat, alone = throttled_before(entry.attempts, self._tally)
        pace = self._cooldown.by_pace(repeat, alone)
        self._refused.add(entry.ordinal)
        delay = self._cooldown.throttled(throttle, repeat, alone)
        if delay > 0 and self._cooldown.until > before:
            # The run cools down, or longer: chunks already with the workers start none of their remaining items.
            self._holds += 1
            self._backend.hold(self._holds)
        self._retries.throttled(
            entry.ordinal, entry.item, entry.attempts, delay, self._requeue, self.stopping, ItemFailed(error), error.info,
            pace,
        )
        if entry.attempts is not None and entry.attempts.refused >= THROTTLES_MAX:  # failed for good: never served
            self._refused.discard(entry.ordinal)  # (kept, every chunk's successes were looked up for the rest of the run)

    def _grow(self) -> None:
        self._cooldown.tick()
        self._grow_timer = self._loop.call_later(GROW_INTERVAL_S, self._grow)

    def _requeue(self, ordinal: int, item: Any, attempts: Attempts | None) -> None:
        self._due.append(_Entry(ordinal, item, attempts))
        self._wake.set()

    def _requeue_alone(self, ordinal: int, item: Any, attempts: Attempts | None) -> None:
        self._suspects.append(_Entry(ordinal, item, attempts))
        self._wake.set()

    # Control, from the loop's thread.

    def stop(self) -> None:
        """Send no new chunk; items running in workers finish; items waiting to retry or for a start slot stay unprocessed."""
        first = not self.stopping
        self.stopping = True
        self._retries.cancel()
        self._ready.clear()
        self._due.clear()
        self._suspects.clear()
        if first and self._started:
            # As a rate change does: items asleep in a worker for a start slot (0.01/s: 100 s) come back
            # unstarted, so a stop with nothing really running ends at once.
            self._limits_version += 1
            self._backend.limits_changed(self._limits_version)
        self.resume()

    def cancel(self) -> None:
        """Stop at once: abandon the chunks in flight, leaving their unfinished items unprocessed."""
        if not self._started:  # workers being started are not abandoned half-way; finish() stops them
            return
        self.stop()
        self._backend.cancel()

    def abandon(self) -> None:
        """The run leaves its loop (a stop timed out while setup() or finish() hung in the workers); from the main
        thread: end what runs outside this process, which nothing would end after the run's hard exit."""
        self._backend.abandon()

    def nudge(self) -> None:
        """Nothing to do: the user's code runs in the workers, so nothing holds this loop."""

    def pause(self) -> None:
        """Send no new chunk until ``resume``; items running finish, and the chunks the workers have start none of
        their other items: those come back unstarted, to be sent again after ``resume``."""
        if not self.paused and self._started:
            # With a fixed chunk_size a worker went on with its chunk: "no new item starts" was 60 items later.
            self._holds += 1
            self._backend.hold(self._holds)
        self.paused = True

    def resume(self) -> None:
        """Undo ``pause``."""
        self.paused = False
        if hasattr(self, "_wake"):
            self._wake.set()

    def set_concurrency(self, concurrency: int) -> None:
        """Change the total in flight across workers; chunks sent from now on get the new share."""
        self._cooldown.set_concurrency(concurrency)

    def set_rate_limit(self, rate: float | None) -> None:
        """Change the most items started per second (None for no limit); chunks sent from now on follow it."""
        self._cooldown.set_rate_limit(rate)

    def hold_concurrency(self, concurrency: int | None) -> None:
        """The circuit breaker's cap on the concurrency, None to lift it; the ceiling stays the user's."""
        self._cooldown.hold_concurrency(concurrency)

    @property
    def effective_concurrency(self) -> int:
        """The concurrency but for the circuit breaker's cap: what lifting it gives back."""
        return self._cooldown.effective.concurrency

    def _apply_limits(self, limits: Limits) -> None:
        self._limiter.set_concurrency(limits.concurrency)
        if limits.rate_limit != self._limiter.limits.rate_limit:
            self._limiter.set_rate_limit(limits.rate_limit)
            # A new rate applies at once: items waiting in a worker for a slot booked under the old one
            # (0.01/s: 100 s) come back unstarted and go out again under the new rate.
            self._limits_version += 1
            self._backend.limits_changed(self._limits_version)
