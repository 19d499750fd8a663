"""The default executor: ``concurrency`` asyncio workers pulling from the source."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, Iterator

from batchcli.executors.base import Items
from batchcli.executors.calls import ItemCalls
from batchcli.executors.limiter import Limiter, Limits
from batchcli.executors.retries import Attempts, RetryPolicy, RetryScheduler
from batchcli.executors.throttling import GROW_INTERVAL_S, Cooldown, throttle_of
from batchcli.load.configuration import Configuration
from batchcli.outcome import Tally


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
        self._workers: set[asyncio.Task[None]] = set()
        self._retiring = 0
        self._settled = False
        self.stopping = False
        """True once a stop was asked for: no new item starts."""
        self.paused = False
        """True while paused: no new item starts until ``resume``."""
        self.fatal: BaseException | None = None
        """An exception from the source itself, which ends the run."""
        self._calls = ItemCalls(process, config.concurrency, config.item_timeout_s)
        self._slow = False
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
        self._rate_turn = asyncio.Lock()
        self._grow_timer = self._loop.call_later(GROW_INTERVAL_S, self._grow)
        self._cooldown.start()
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
            self._spawn(self._limiter.concurrency)
            while self._workers:
                await asyncio.wait(set(self._workers))
        finally:
            self._grow_timer.cancel()
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
        while True:
            # One flag covers pause, stop, retirement and throttling, so the common case costs one check.
            if self._slow and await self._detour():
                return
            if ready:
                ordinal, item, attempts = ready.popleft()
            else:
                attempts = None
                if next_item is not None and not tally.exhausted:
                    try:
                        ordinal, item = next_item()
                    except StopIteration:
                        self._exhausted()
                        continue
                    except Exception as error:
                        self._source_failed(error)
                        return
                else:
                    taken = await self._take_async()
                    if taken is None:
                        if await self._wait_for_work():
                            continue
                        return
                    ordinal, item = taken
            tally.in_flight += 1
            try:
                await call(item)
            except Exception as error:
                tally.in_flight -= 1
                self._failed(ordinal, item, attempts, error)
            except asyncio.CancelledError as error:
                tally.in_flight -= 1
                if self._hard_stopped():
                    raise  # the item stays unprocessed, to be resumed
                # The user's code raised it (an awaited future was cancelled): a failure of this
                # item, not of the worker, which must go on with the others.
                self._failed(ordinal, item, attempts, error)
            else:
                tally.in_flight -= 1
                tally.succeeded += 1
                done(ordinal)

    def _update_slow(self) -> None:
        self._slow = (
            self.paused or self.stopping or self._cooling or bool(self._retiring) or self._limiter.throttled
        )

    @staticmethod
    def _hard_stopped() -> bool:
        """Whether this worker task itself is being cancelled (``cancel()``), not just an awaited call."""
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    async def _detour(self) -> bool:
        """The uncommon cases before taking an item; True when this worker should end."""
        if self.paused:
            await self._gate.wait()
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
            if self.paused:  # paused while cooling down: wait again, then look at everything afresh
                return await self._detour()
        if self._limiter.throttled:
            # One start at a time books its slot and waits for it: a hundred workers booking at once would
            # hold slots far ahead at the old rate, and a rate that grows back would not show for a long time.
            async with self._rate_turn:
                if (delay := self._limiter.delay()) > 0:
                    await asyncio.sleep(delay)
            if self.paused or self.stopping or self._cooling:  # began while this start waited its turn
                return await self._detour()
        return False

    def _exhausted(self) -> None:
        self._tally.exhausted = True
        self._wake.set()

    def _source_failed(self, error: Exception) -> None:
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
            except Exception as error:
                self._source_failed(error)
        return None

    async def _wait_for_work(self) -> bool:
        """After the source ran out: wait for a retry to come due; False when all is settled."""
        while not self._ready:
            if self._settled or self.stopping:
                return False
            if self._tally.retrying == 0 and self._tally.in_flight == 0:
                self._settled = True
                self._wake.set()
                return False
            self._wake.clear()
            await self._wake.wait()
        return True

    def _failed(self, ordinal: int, item: Any, attempts: Attempts | None, error: BaseException) -> None:
        throttle = throttle_of(error)
        if throttle is not None:
            delay = self._cooldown.throttled(throttle)
            self._cooling = self._slow = True
            self._cool_over.clear()
            self._retries.throttled(ordinal, item, attempts, delay, self._requeue, self.stopping)
            return
        if self._retries.failed(ordinal, item, attempts, error, self._requeue, self.stopping):
            self._wake.set()

    def _grow(self) -> None:
        self._cooldown.tick()
        self._grow_timer = self._loop.call_later(GROW_INTERVAL_S, self._grow)

    def _requeue(self, ordinal: int, item: Any, attempts: Attempts | None) -> None:
        self._ready.append((ordinal, item, attempts))
        self._wake.set()

    # Control, from the loop's thread.

    def stop(self) -> None:
        """Start no new item; in-flight items finish; items waiting to retry stay unprocessed."""
        self.stopping = True
        self._slow = True
        self._retries.cancel()
        self._ready.clear()
        self.resume()
        if hasattr(self, "_wake"):
            self._wake.set()
            self._cool_over.set()

    def cancel(self) -> None:
        """Stop at once: cancel in-flight items, leaving them unprocessed."""
        self.stop()
        for task in list(self._workers):
            task.cancel()

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
        self._cooldown.set_ceiling(Limits(concurrency, self._cooldown.ceiling.rate_limit))

    def set_rate_limit(self, rate: float | None) -> None:
        """Change the most items started per second, None for no limit (the new ceiling for adaptive limits)."""
        self._cooldown.set_ceiling(Limits(self._cooldown.ceiling.concurrency, rate))

    def _apply_limits(self, limits: Limits) -> None:
        if limits.concurrency != self._limiter.concurrency:
            self._set_concurrency(limits.concurrency)
        if limits.rate_limit != self._limiter.limits.rate_limit:
            self._limiter.set_rate_limit(limits.rate_limit)
            self._update_slow()

    def _set_concurrency(self, concurrency: int) -> None:
        change = self._limiter.set_concurrency(concurrency)
        if change > 0:
            self._calls.grow(concurrency)
            cancelled = min(change, self._retiring)
            self._retiring -= cancelled
            self._spawn(change - cancelled)
        else:
            self._retiring += -change
        self._update_slow()


# What a worker awaits when it is *not* processing an item.
_HELPERS = frozenset(
    f.__code__ for f in (AsyncExecutor._detour, AsyncExecutor._take_async, AsyncExecutor._wait_for_work)
)
