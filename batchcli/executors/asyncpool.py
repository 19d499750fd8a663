"""The default executor: ``concurrency`` asyncio workers pulling from the source."""

from __future__ import annotations

import asyncio
import logging
import random
from array import array
from collections import deque
from marshal import dumps as _marshal
from gc import is_tracked
from sys import getrefcount
from typing import Any, Callable, Iterator

from batchcli.executors.base import Items
from batchcli.executors.calls import USER_ERRORS, ItemCalls, ours
from batchcli.executors.limiter import Limiter, Limits
from batchcli.executors.retries import Attempts, RetryPolicy, RetryScheduler, throttled_before
from batchcli.executors.throttling import GROW_INTERVAL_S, Cooldown, throttle_of
from batchcli.journal.batches import MARSHAL_VERSION, plain, plain_list
from batchcli.journal.results import Encoded, Encoding, encode_other, fits
from batchcli.load.configuration import Configuration
from batchcli.outcome import KEPT_OVERHEAD, RECORDER_WAIT_S, SEALED_OVERHEAD, Tally

log = logging.getLogger("batchcli")

ABANDON_AFTER_S = 0.5
"""After ``cancel()``, how long workers get to end before the run leaves them behind: a ``process`` that
swallows ``CancelledError`` must not hold a hard stop."""

SEAL_MAX = 1024
"""At most how many results wait to be encoded together (``AsyncExecutor._seal``)."""

SEAL_BYTES = 1 << 18
"""About how many bytes of encoding a batch of results aims at: fewer results wait when they are large."""

SEAL_INTERVAL_S = 0.1
"""How long a result waits to be encoded at most, when results come slowly and the loop is free."""

SEAL_SAMPLE = 16
"""Every this many waiting results, the newest is encoded alone to see how large they have become: results that
grow from small to large wait by the handful, not by the thousand."""

SEAL_ROW_MAX = 64 << 20
"""A batch whose encoding passes this many bytes is kept a result at a time instead (SQLite holds at most
1 GB in one value, and a reader loads a batch whole)."""

_IMMUTABLE = frozenset({str, bytes, int, float, bool, complex})
"""Result types nothing can change after ``process`` returned them, however shared (``True``, ``"ok"``)."""


def _refs_alone() -> int:
    """What ``getrefcount`` reads for a value only one local variable holds, read as the worker loop reads
    it: the interpreter's version decides whether the call's own reference counts."""
    value: dict[str, Any] = {}
    return getrefcount(value)


_ALONE = _refs_alone()


def _batch_of(size: float) -> int:
    """How many results of ``size`` bytes (encoded) wait for one batch: about ``SEAL_BYTES``, 1 to ``SEAL_MAX``."""
    return max(1, min(SEAL_MAX, int(SEAL_BYTES // max(1.0, size))))


class AsyncExecutor:
    """Runs items through ``process`` with ``concurrency`` in flight, on the current event loop.

    The success path is a plain loop: take an item, await it, count it. Failures go through the
    retry policy; a retrying item waits in a timer, not in a worker, so the others keep going.
    Control methods (``pause``, ``resume``, ``stop``, ``set_concurrency``) must be called on the
    loop's thread; the run uses ``loop.call_soon_threadsafe`` for that.
    """

    def __init__(self, process: Callable[[Any], Any], config: Configuration, policy: RetryPolicy, tally: Tally) -> None:
        self._tally = tally
        self._retries = RetryScheduler(policy, tally)
        self._limiter = Limiter(Limits(config.concurrency, config.rate_limit))
        self._cooldown = Cooldown(config, self._limiter, self._apply_limits, tally)
        self._cooling = False
        """True while a throttle's cool-down holds new starts (part of the one ``_slow`` flag)."""
        self._ready: deque[tuple[int, Any, Attempts | None]] = deque()
        self._refused: list[tuple[int, Any, Attempts | None]] = []
        """Throttled items due again: one goes to ``_ready`` each time another item has settled (``_release``)."""
        self._settled_at_release = -1
        self._workers: set[asyncio.Task[None]] = set()
        self._retiring = 0
        self._missing = 0
        """Workers the concurrency allows that are not started yet: started one at a time while there is work."""
        self._settled = False
        self._turn_due = False
        """Set by ``nudge()`` (any thread): the next worker gives the loop a turn before its next item."""
        self._turn_asked = False
        self.stopping = False
        """True once a stop was asked for: no new item starts."""
        self.paused = False
        """True while paused: no new item starts until ``resume``."""
        self.fatal: BaseException | None = None
        """An exception from the source itself, which ends the run."""
        # Attempts are timed only while /metrics serves them: decided here, once, not per item.
        self._calls = ItemCalls(process, config.concurrency, config.item_timeout_s, tally.durations, keep=Encoding.of)
        self._results: list[Any] = []
        """Results waiting to be encoded together (``_seal``), with their items and ordinals below."""
        self._result_items: list[Any] = []
        self._result_ordinals: list[int] = []  # a list append costs half an array's; made an array when sealed
        self._seal_at = 1
        """How many waiting results make a batch: ``SEAL_MAX``, fewer when they are large (the last batch says)."""
        self._fits = 0
        """The largest encoding of one result that leaves ``_seal_at`` as it is: a measured result no larger needs no new plan."""
        self._check_at = 1
        """How many waiting results call for ``_check``: ``_seal_at``, or the next ``SEAL_SAMPLE`` before it."""
        self._slow = False
        self._backlogged = False
        """Set every ``SEAL_INTERVAL_S`` while successes wait for the journal beyond ``Tally.done_max``."""
        self._update_slow()

    @property
    def limits(self) -> Limits:
        """The concurrency and rate limit in force now."""
        return self._limiter.limits

    async def run(self, items: Items) -> None:
        """Process every item; returns when all are settled, or after a stop."""
        self._loop = asyncio.get_running_loop()
        self._retries.bind(self._loop)
        self._wake = asyncio.Event()
        self._gate = asyncio.Event()
        self._cool_over = asyncio.Event()
        self._new_limits = asyncio.Event()
        """Set (and replaced) when the rate limit changes or a stop comes: wakes starts waiting for a slot."""
        self._rate_turn = asyncio.Lock()
        self._grow_timer = self._loop.call_later(GROW_INTERVAL_S, self._grow)
        self._seal_timer = self._loop.call_later(SEAL_INTERVAL_S, self._seal_due)
        self._cooldown.start()
        self._cooling = self._cooldown.remaining_s > 0  # resumed during an earlier session's cool-down
        self._left = self._loop.create_future()
        """Done when ``cancel()`` gave up on workers that did not end: ``run`` returns without them."""
        if not self.paused:  # a pause may come before the run starts (Ctrl-C during setup)
            self._gate.set()
        if isinstance(items, Iterator):
            self._next: Callable[[], tuple[int, Any]] | None = items.__next__
            self._anext = None
        else:
            self._next = None
            self._anext = items.__anext__
            self._source_lock = asyncio.Lock()
        try:
            # One worker now; each one that finds work starts the next, so a large concurrency with few
            # items left creates only the tasks (and threads) it uses.
            self._missing = self._limiter.concurrency - 1
            self._update_slow()
            self._spawn(1)
            while self._workers and not self._left.done():
                await asyncio.wait({*self._workers, self._left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._grow_timer.cancel()
            self._seal_timer.cancel()
            self._seal()  # the items counted as succeeded reach the journal
            self._retries.close()
            self._calls.close()

    def _spawn(self, count: int) -> None:
        for _ in range(count):
            task = self._loop.create_task(self._worker())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _worker(self) -> None:
        tally = self._tally
        ready = self._ready
        done = tally.done.append
        call = self._calls.call
        next_item = self._next
        results = self._results
        wait = results.append
        wait_item = self._result_items.append
        wait_ordinal = self._result_ordinals.append
        refs, alone, immutable, tracked = getrefcount, _ALONE, _IMMUTABLE, is_tracked
        while True:
            # One flag covers pause, stop, retirement and throttling, so the common case costs one check.
            if self._slow and await self._detour():
                return
            if ready:
                ordinal, item, attempts = ready.popleft()
                self._retries.started()
            else:
                attempts = None
                if next_item is not None and not tally.exhausted:
                    try:
                        ordinal, item = next_item()
                    except StopIteration:
                        self._exhausted()
                        continue
                    except USER_ERRORS as error:
                        self._source_failed(error)
                        return
                else:
                    taken = await self._take_async()
                    if taken is None:
                        if await self._wait_for_work():
                            continue
                        return
                    ordinal, item = taken
                    if self._slow and (self.paused or self.stopping):  # it came while paused or stopping: unstarted
                        if self.paused:
                            await self._gate.wait()
                        if self.stopping:
                            return  # numbered, not started: unprocessed, for the resume
            tally.in_flight += 1
            try:
                result = await call(item)
            except asyncio.CancelledError as error:
                tally.in_flight -= 1
                if self._hard_stopped():
                    raise  # the item stays unprocessed, to be resumed
                # The user's code raised it (an awaited future was cancelled): a failure of this
                # item, not of the worker, which must go on with the others.
                self._failed(ordinal, item, attempts, error)
            except USER_ERRORS as error:
                tally.in_flight -= 1
                if ours(error):
                    raise
                self._failed(ordinal, item, attempts, error)
                if tally.failure_backlog:  # a flood outruns the journal: let it catch up
                    await self._wait_for_recorder()
            else:
                tally.in_flight -= 1
                if attempts is not None and attempts.throttled:  # the API served an item it had refused
                    self._cooldown.served_refused()
                if result is None:
                    tally.succeeded += 1
                    done(ordinal)
                elif attempts is None and not tracked(result) and (refs(result) <= alone or type(result) in immutable):
                    # Nothing else holds the value, nor anything in it (the collector tracks every dict that
                    # holds a container), so nothing can change it before it is encoded with the next few
                    # hundred (``_seal``): one pickle call for them all.
                    tally.succeeded += 1
                    wait(result)
                    wait_item(item)
                    wait_ordinal(ordinal)
                    if len(results) >= self._check_at and self._check():
                        await self._wait_for_recorder()
                elif self._keep(ordinal, item, attempts, result):
                    await self._wait_for_recorder()

    def _check(self) -> bool:
        """Enough results wait for a batch, or for a look at how large they are now (every ``SEAL_SAMPLE``):
        seal when a batch of results that large would pass ``SEAL_BYTES``. True as ``_seal`` says."""
        results = self._results
        waiting = len(results)
        if waiting < self._seal_at:
            try:
                size = len(_marshal(results[-1], MARSHAL_VERSION))
            except (ValueError, TypeError):  # cannot be kept as plain data: _seal keeps the batch result by result
                size = SEAL_BYTES
            if size > self._fits:
                self._plan(size)
            if waiting < self._seal_at:
                self._check_at = min(self._seal_at, waiting + SEAL_SAMPLE)
                return False
        return self._seal()

    def _plan(self, size: float) -> None:
        """Results are about ``size`` bytes encoded now: how many make a batch."""
        self._seal_at = _batch_of(size)
        self._fits = SEAL_BYTES // self._seal_at

    def _seal(self) -> bool:
        """Encode the waiting results as one list for the journal (``Tally.sealed``); True when results wait
        for the journal beyond the memory budget.

        One pickle call (``plain_list``) for a few hundred results costs a fraction of one call each, and a result
        held only here cannot change in between. When it refuses the batch (a value that is not plain data, or
        nested too deep), or the batch is too large for one row (``SEAL_ROW_MAX``), each result is kept on its
        own as ``_keep`` does it: one that cannot be kept fails its own item then, by the retry rules, as if it
        had failed when returned, and each in its place among the others (the circuit breaker reads the order).
        """
        results, tally = self._results, self._tally
        count = len(results)
        if not count:
            return False
        try:
            data: bytes | None = plain_list(results)
        except (ValueError, TypeError):
            data = None
        if data is None or len(data) > SEAL_ROW_MAX:
            data = None
            tally.succeeded -= count  # each counted again by _keep, or failed there, in turn
            for ordinal, item, result in zip(self._result_ordinals, self._result_items, results):
                self._keep(ordinal, item, None, result)
        else:
            tally.sealed.append((array("q", self._result_ordinals), data))
            tally.kept_bytes += len(data) + SEALED_OVERHEAD * count
            self._plan(len(data) / count)
        self._check_at = min(self._seal_at, SEAL_SAMPLE)
        results.clear()
        self._result_items.clear()
        self._result_ordinals.clear()
        return tally.kept_backlog

    def _seal_due(self) -> None:
        """Every ``SEAL_INTERVAL_S``: results come slowly, so those waiting go to the journal now; and when more
        successes wait for the journal than it may have behind it (``Tally.done_backlog``), the workers wait for
        the recorder before their next item (looked at here, not per item: the success path pays nothing)."""
        self._seal()
        if not self._backlogged and self._tally.done_backlog:
            self._backlogged = True
            self._update_slow()
        self._seal_timer = self._loop.call_later(SEAL_INTERVAL_S, self._seal_due)

    def _keep(self, ordinal: int, item: Any, attempts: Attempts | None, result: Any) -> bool:
        """A success that returned something that cannot wait for ``_seal`` (a retried item, or a value held
        elsewhere too, which the job might change): encoded now, so a value that cannot be kept fails its own
        item. True when results wait for the journal beyond the memory budget."""
        tally = self._tally
        text: str | bytes
        if type(result) is Encoding:  # a sync process's, encoded in its thread
            text, blob = result.encoded
        else:
            try:
                try:
                    encoded: Encoded = (plain(result), None)  # plain data, the common case: encode's first try
                except (ValueError, TypeError):
                    encoded = encode_other(result)  # marshal just refused it
                text, blob = fits(encoded, result)
            except Exception as error:
                self._failed(ordinal, item, attempts, error)
                return False
        tally.succeeded += 1
        tally.kept.append((ordinal, text, blob))
        tally.kept_bytes += len(text) + KEPT_OVERHEAD
        return tally.kept_backlog

    async def _wait_for_recorder(self) -> None:
        """Results or final failures wait for the journal beyond their memory budget: start nothing until the
        recorder took them."""
        tally = self._tally
        while (tally.kept_backlog or tally.failure_backlog or tally.done_backlog) and not self.stopping:
            await asyncio.sleep(RECORDER_WAIT_S)

    def _update_slow(self) -> None:
        self._slow = (
            self.paused
            or self.stopping
            or self._cooling
            or bool(self._retiring)
            or bool(self._missing)
            or self._limiter.throttled
            or self._turn_due
            or bool(self._refused)
            or self._backlogged
        )

    @staticmethod
    def _hard_stopped() -> bool:
        """Whether this worker task itself is being cancelled (``cancel()``), not just an awaited call."""
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    async def _detour(self) -> bool:
        """The uncommon cases before taking an item; True when this worker should end."""
        if self._turn_due:
            # A process() that never awaits would keep the loop to itself: signals, the pause shell's
            # calls and timers (retries, the stop timeout) wait for this turn. The flag stays up until
            # the loop has had it: the other workers queued behind this one must yield too.
            if not self._turn_asked:
                self._turn_asked = True
                self._loop.call_soon(self._turn_taken)
            if self._results:  # the seal timer may wait behind an item that never awaits: seal here
                self._seal()
            await asyncio.sleep(0)
        if self.paused:
            await self._gate.wait()
        if self._backlogged:
            await self._wait_for_recorder()
            self._backlogged = False
            self._update_slow()
        if self.stopping:
            return True
        if self._retiring:
            self._retiring -= 1
            self._update_slow()
            return True
        if self._cooling:
            while (left := self._cooldown.remaining_s) > 0 and not self.stopping:
                try:
                    await asyncio.wait_for(self._cool_over.wait(), left)
                except TimeoutError:
                    pass
            self._cooling = False
            self._update_slow()
            if self.stopping:
                return True
            if self.paused or self._retiring:  # paused or lowered while cooling down: look at everything afresh
                return await self._detour()
        if self._missing and (self._ready or not self._tally.exhausted):
            self._missing -= 1
            self._update_slow()
            self._spawn(1)
        if self._refused:
            self._release()
        if self._limiter.throttled and self._may_start():
            # One start at a time books its slot and waits for it: a hundred workers booking at once would
            # hold slots far ahead at the old rate, and a rate that grows back would not show for a long time.
            async with self._rate_turn:
                # Not for nothing: each worker left booked and waited a slot before it found the source empty, so a
                # run ended (concurrency + 1) periods after its last item (26 s for 3 items at 0.5/s).
                while self._limiter.throttled and self._may_start() and (delay := self._limiter.delay()) > 0:
                    try:  # a new rate (or a stop) applies at once, not after a slot booked under the old rate
                        await asyncio.wait_for(self._new_limits.wait(), delay)
                    except TimeoutError:
                        break
                    if self.stopping or self.paused or not self._may_start():
                        break
            # Began while this start waited its turn: a concurrency lowered meanwhile retires waiting workers too
            # (`set concurrency=1` under a rate limit saw 8 more items start).
            if self.paused or self.stopping or self._cooling or self._retiring:
                return await self._detour()
        return False

    def _release(self) -> None:
        """A throttled item due again starts once another item has settled since the last one did, or nothing else
        is left to start: retried first, refused records took every start at concurrency 1, nothing succeeded in
        between, so their every repeat held the run (``Attempts.refused_alone``) and the concurrency never grew back
        (12 items in 55 s, then none, with four such records)."""
        tally = self._tally
        settled = tally.succeeded + tally.failed
        if settled != self._settled_at_release or tally.exhausted or self.fatal is not None:
            self._settled_at_release = settled
            # One at random, not the first due: in the order they came, the item whose request reached the API first
            # in a wave went first in the next. A record the API always refuses (a 503) took a burst-1 API's one
            # token in every wave from then on, nothing else was served, and good records failed "the API keeps
            # refusing that item" (7 of 60 with two such records, adaptive=false).
            refused = self._refused
            pick = random.randrange(len(refused))
            refused[pick], refused[-1] = refused[-1], refused[pick]
            self._ready.append(refused.pop())
            self._update_slow()

    def _turn_taken(self) -> None:
        self._turn_asked = self._turn_due = False
        self._update_slow()

    def _may_start(self) -> bool:
        """Whether an item may be there to start: a retry due, or a source not known to be exhausted."""
        return bool(self._ready or self._refused) or not self._tally.exhausted

    def _exhausted(self) -> None:
        self._tally.exhausted = True
        self._wake.set()
        self._limits_changed()  # starts waiting for a slot: there may be nothing left to start

    def _source_failed(self, error: BaseException) -> None:
        self.fatal = error
        self.stop()

    async def _take_async(self) -> tuple[int, Any] | None:
        """The next item of an async source (one ``anext`` at a time), or None when there is none."""
        if self._tally.exhausted or self.fatal is not None or self._anext is None:
            return None
        async with self._source_lock:
            if self._tally.exhausted:
                return None
            try:
                return await self._anext()  # type: ignore[no-any-return]
            except StopAsyncIteration:
                self._exhausted()
            except USER_ERRORS as error:
                if ours(error):
                    raise
                self._source_failed(error)
        return None

    async def _wait_for_work(self) -> bool:
        """After the source ran out: wait for a retry to come due; False when all is settled."""
        while not self._ready and not self._refused:
            if self._settled or self.stopping:
                return False
            if self._tally.retrying == 0 and self._tally.in_flight == 0:
                if self._results:  # a result that cannot be kept fails its item now, while a worker can retry it
                    self._seal()
                    continue
                self._settled = True
                self._wake.set()
                return False
            self._wake.clear()
            await self._wake.wait()
        return True

    def _failed(self, ordinal: int, item: Any, attempts: Attempts | None, error: BaseException) -> None:
        throttle = throttle_of(error)
        if throttle is not None:
            repeat, alone = throttled_before(attempts, self._tally)
            pace = self._cooldown.by_pace(repeat, alone)
            delay = self._cooldown.throttled(throttle, repeat, alone)
            self._cooling = self._slow = True
            self._cool_over.clear()
            self._retries.throttled(ordinal, item, attempts, delay, self._requeue_refused, self.stopping, error, pace=pace)
            return
        if self._retries.failed(ordinal, item, attempts, error, self._requeue, self.stopping):
            self._wake.set()

    def _grow(self) -> None:
        self._cooldown.tick()
        self._grow_timer = self._loop.call_later(GROW_INTERVAL_S, self._grow)

    def _requeue(self, ordinal: int, item: Any, attempts: Attempts | None) -> None:
        self._ready.append((ordinal, item, attempts))
        self._wake.set()

    def _requeue_refused(self, ordinal: int, item: Any, attempts: Attempts | None) -> None:
        self._refused.append((ordinal, item, attempts))
        self._slow = True
        self._wake.set()

    def nudge(self) -> None:
        """Have a worker give the loop a turn before its next item (thread-safe: it only sets flags).

        The run calls it with every callback it sends to the loop and a few times a second, so a
        ``process`` that never awaits cannot hold the loop: costs nothing per item (``_slow`` is
        checked anyway).
        """
        self._turn_due = True
        self._slow = True

    # Control, from the loop's thread.

    def stop(self) -> None:
        """Start no new item; in-flight items finish; items waiting to retry stay unprocessed."""
        self.stopping = True
        self._slow = True
        self._retries.cancel()
        self._ready.clear()
        self._refused.clear()
        self.resume()
        if hasattr(self, "_wake"):
            self._wake.set()
            self._cool_over.set()
            self._limits_changed()
        # A worker between items (asleep for its rate-limit slot, or waiting for an async source's next item) holds
        # nothing: end it now, so a stop with nothing in flight does not wait for a slot or an item minutes away.
        for task in self._between_items():
            task.cancel()

    def abandon(self) -> None:
        """The run leaves this loop behind, held by the user's code past a stop (from the main thread): the results
        that wait to be encoded go to the journal with the rest. A held loop never ran ``_seal_due``, so items that
        had returned a value were shown done but never journaled, and a resume did them again.

        The loop may still run a worker now and then (a ``process`` that swallows its cancellation): a result is
        appended before its ordinal, so the first ``len(ordinals)`` results and items are whole, and only those are
        taken. One that is not plain data (``_keep`` would judge it, on the loop) leaves the batch unprocessed."""
        count = len(self._result_ordinals)
        if not count:
            return
        try:
            data = plain_list(self._results[:count])
        except (ValueError, TypeError):
            return
        if len(data) > SEAL_ROW_MAX:
            return
        self._tally.sealed.append((array("q", self._result_ordinals[:count]), data))
        del self._results[:count], self._result_items[:count], self._result_ordinals[:count]

    def cancel(self) -> None:
        """Stop at once: cancel in-flight items, leaving them unprocessed (given up after ``ABANDON_AFTER_S``)."""
        self.stop()
        for task in list(self._workers):
            task.cancel()
        if self._workers and hasattr(self, "_left"):
            self._loop.call_later(ABANDON_AFTER_S, self._leave_stuck)

    def _leave_stuck(self) -> None:
        stuck = [task for task in self._workers if not task.done()]
        if stuck and not self._left.done():
            log.warning(
                "%d item(s) did not end within %gs of being cancelled (does process() catch CancelledError?); "
                "leaving them: they stay unprocessed.",
                len(stuck),
                ABANDON_AFTER_S,
            )
            self._left.set_result(None)

    def _between_items(self) -> list[asyncio.Task[None]]:
        """The workers suspended in ``_detour`` or ``_take_async``: waiting to start their next item, holding none (an
        item an async source has not yet given has no number: cancelled there, it is read again on resume)."""
        return [
            task
            for task in self._workers
            if getattr(getattr(task.get_coro(), "cr_await", None), "cr_code", None) in _IDLE
        ]

    def pause(self) -> None:
        """Start no new item until ``resume``; in-flight items finish."""
        self.paused = True
        self._slow = True
        if hasattr(self, "_gate"):
            self._gate.clear()

    def resume(self) -> None:
        """Undo ``pause``."""
        self.paused = False
        self._update_slow()
        if hasattr(self, "_gate"):
            self._gate.set()

    def items_in_flight(self) -> dict[int, Any]:
        """Ordinal -> item of every item being processed now. Call on the loop's thread.

        Read from the suspended workers instead of tracked per item: a worker awaiting anything but
        its own helpers is awaiting ``call(item)``. A dict insert and delete per item would cost
        about 45 ns, a fifth of the success path, for something only the pause shell asks for.
        """
        found: dict[int, Any] = {}
        for task in self._workers:
            coro: Any = task.get_coro()
            frame, awaited = coro.cr_frame, coro.cr_await
            if frame is None or awaited is None or getattr(awaited, "cr_code", None) in _HELPERS:
                continue
            names = frame.f_locals
            if "ordinal" in names:
                found[names["ordinal"]] = names["item"]
        return dict(sorted(found.items()))

    def set_concurrency(self, concurrency: int) -> None:
        """Change how many items may be in flight from now on (the new ceiling for adaptive limits)."""
        self._cooldown.set_concurrency(concurrency)

    def set_rate_limit(self, rate: float | None) -> None:
        """Change the most items started per second, None for no limit (the new ceiling for adaptive limits)."""
        self._cooldown.set_rate_limit(rate)

    def hold_concurrency(self, concurrency: int | None) -> None:
        """The circuit breaker's cap on the concurrency, None to lift it; the ceiling stays the user's."""
        self._cooldown.hold_concurrency(concurrency)

    @property
    def effective_concurrency(self) -> int:
        """The concurrency but for the circuit breaker's cap: what lifting it gives back."""
        return self._cooldown.effective.concurrency

    def _apply_limits(self, limits: Limits) -> None:
        if limits.concurrency != self._limiter.concurrency:
            self._set_concurrency(limits.concurrency)
        if limits.rate_limit != self._limiter.limits.rate_limit:
            self._limiter.set_rate_limit(limits.rate_limit)
            self._update_slow()
            self._limits_changed()

    def _limits_changed(self) -> None:
        if hasattr(self, "_new_limits"):
            self._new_limits.set()
            self._new_limits = asyncio.Event()

    def _set_concurrency(self, concurrency: int) -> None:
        change = self._limiter.set_concurrency(concurrency)
        self._calls.resize(concurrency)
        if change > 0:
            cancelled = min(change, self._retiring)
            self._retiring -= cancelled
            # Started lazily (in ``_detour``), by a worker that finds work: none wait for items that are not there.
            self._missing += change - cancelled
        else:
            dropped = min(-change, self._missing)
            self._missing -= dropped
            self._retiring += -change - dropped
        self._update_slow()


# What a worker awaits when it is *not* processing an item.
_HELPERS = frozenset(
    f.__code__
    for f in (AsyncExecutor._detour, AsyncExecutor._take_async, AsyncExecutor._wait_for_work, AsyncExecutor._wait_for_recorder)
)
_IDLE = frozenset((AsyncExecutor._detour.__code__, AsyncExecutor._take_async.__code__))
