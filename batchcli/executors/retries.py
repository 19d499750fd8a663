"""When and whether a failed attempt is retried, and the one scheduler that holds items until then.

``RetryPolicy`` is tenacity's strategies, one ``RetryCallState`` per failing item. ``RetryScheduler``
is what the async executor and the chunked driver share: it turns a failed attempt into either a
final ``Failure`` on the tally or a timer that hands the item back when its delay is over, and logs
every scheduled retry (one info line, the way stamina instruments tenacity).
"""

from __future__ import annotations

import asyncio
import logging
import reprlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import tenacity

from batchcli.load.configuration import Configuration
from batchcli.load.project import format_item_traceback
from batchcli.load.secret import mask_texts
from batchcli.load.service import retry_classes
from batchcli.outcome import Failure, Tally, error_text, qualified_name, writable

log = logging.getLogger("batchcli.retries")
"""Each scheduled retry: one info line, so in the run's log file, and on the console only with ``-v``."""

THROTTLES_MAX = 20
"""An item throttled this many times in a row, while throttles spend none of its attempts, fails finally with the
last one: the API refuses that item, not the run's pace (a record that always gets a 503), and the run would
otherwise never end. A throttled wave answers one burst, so an item is rarely throttled even twice in a row."""

_item_repr = reprlib.Repr()
_item_repr.maxstring = _item_repr.maxother = 80


def _shown(item: Any) -> str:
    """The item in a log line; reprlib's own guard misses an int past the interpreter's 4300 digits."""
    try:
        return _item_repr.repr(item)
    except Exception:
        return f"<{type(item).__qualname__} object>"


@dataclass
class Attempts:
    """The retry history of one item; created at its first failure, never on the success path."""

    state: tenacity.RetryCallState
    """tenacity's per-call state: attempt number, last outcome."""
    first_started: float
    """Wall-clock time (epoch seconds) of the first attempt's failure."""
    throttled: int = 0
    """Throttles of this item in a row, since its last attempt that was not one."""
    refused: int = 0
    """Those of them that were the API refusing this item rather than the run's pace (``THROTTLES_MAX``): with
    ``adaptive=false`` against an API with a burst of 1, 20 items started after each cool-down and one served, so a
    third of the items failed "throttled 20 times in a row", records the API serves."""
    succeeded_then: int = 0
    """The run's successes at this item's latest throttle."""
    throttles_then: int = 0
    """The run's throttles, this one included, at this item's latest throttle."""

    def refused_alone(self, tally: Tally) -> bool:
        """Whether this item, refused before, is refused again while the API served more other items than it refused
        in between: then it refuses this item, not the pace. Served some, but refusing more (a slow API with a burst
        of 1, most items in flight retries), it is the pace: taken for "alone", such refusals held nothing, the run
        kept hitting the API, and a third of the items failed at their 20th throttle."""
        return self.throttled > 0 and tally.succeeded - self.succeeded_then > tally.throttles - self.throttles_then

    @property
    def count(self) -> int:
        """Attempts made so far."""
        return self.state.attempt_number


def throttled_before(attempts: Attempts | None, tally: Tally) -> tuple[int, bool]:
    """For an item throttled now, ``Cooldown.throttled``'s ``repeat`` and ``alone``: its throttles in a row before
    this one, and whether the API refuses it alone (``Attempts.refused_alone``)."""
    if attempts is None:
        return 0, False
    return attempts.throttled, attempts.refused_alone(tally)


def _all_of(group: BaseExceptionGroup[BaseException], types: tuple[type[BaseException], ...]) -> bool:
    """Whether every exception in ``group``, and in the groups it holds, is one of ``types``."""
    return all(
        _all_of(error, types) if isinstance(error, BaseExceptionGroup) else isinstance(error, types)
        for error in group.exceptions
    )


class RetryPolicy:
    """Decides, after an attempt failed, whether to retry it and after how long.

    The delay is ``backoff_s * 2**(n-1)`` plus a jitter of up to ``backoff_s / 2``, capped at
    ``backoff_max_s`` *after* the jitter (tenacity's ``wait_exponential_jitter``), so no delay is
    ever longer than ``backoff_max_s``. ``backoff_s=0`` means no wait at all.
    """

    def __init__(self, config: Configuration, retry_for: Any) -> None:
        types = retry_classes(retry_for, "The Service")
        # Timeouts batchcli itself imposes are always worth another attempt.
        self.retry_for: tuple[type[BaseException], ...] = (*types, TimeoutError)
        self.max_attempts = config.max_retries + 1
        """The first attempt plus ``max_retries``."""
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=tenacity.wait_exponential_jitter(
                multiplier=config.backoff_s, max=config.backoff_max_s, jitter=config.backoff_s / 2
            ),
            retry=tenacity.retry_if_exception(self.retryable),
        )

    def retryable(self, error: BaseException) -> bool:
        """True for an exception of ``retry_for``, or a group (``asyncio.TaskGroup``'s ``ExceptionGroup``) all of whose
        exceptions are: a connection reset in one of a ``process``'s concurrent calls failed its item at once."""
        return isinstance(error, self.retry_for) or (isinstance(error, BaseExceptionGroup) and _all_of(error, self.retry_for))

    def start(self, now: float) -> Attempts:
        """The history of an item that just failed its first attempt."""
        return Attempts(tenacity.RetryCallState(self._retrying, None, (), {}), now)

    def next_delay(self, attempts: Attempts, error: BaseException) -> float | None:
        """Seconds to wait before the next attempt, or None when the item has finally failed."""
        state = attempts.state
        if state.attempt_number >= self.max_attempts or not self.retryable(error):
            return None  # what stop_after_attempt / retry_if_exception_type decide, without their Future (~4 us a failure)
        state.set_exception((type(error), error, error.__traceback__))
        if not self._retrying.retry(state) or self._retrying.stop(state):
            return None
        delay: float = self._retrying.wait(state)
        state.prepare_for_next_attempt()
        return delay


class Described(Protocol):
    """A failed attempt as text, when the exception object is only a carrier (a worker's error)."""

    @property
    def error_type(self) -> str:
        """The exception's qualified class name."""

    @property
    def message(self) -> str:
        """``str(exception)``."""

    @property
    def traceback(self) -> str:
        """The formatted traceback of the user's frames."""


Requeue = Callable[[int, Any, "Attempts | None"], None]
"""Hands a retrying item back to its executor once its delay is over: ``(ordinal, item, attempts)``.
The item stays counted in ``Tally.retrying`` until the executor starts it (``RetryScheduler.started``):
a paused run still shows the items that wait for it, their backoff over."""


class RetryScheduler:
    """The retry timers of one executor's run, and what happens when an attempt fails.

    Created with the executor; ``bind`` it to the run's loop before the first failure. Everything
    runs on that loop's thread. Nothing here is touched on the success path.
    """

    def __init__(self, policy: RetryPolicy, tally: Tally, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self._tally = tally
        self._clock = clock
        self._timers: dict[object, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: list[tuple[int, Any, Requeue]] = []
        """Items the circuit breaker took back as not final, until it closes."""

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Schedule retries on ``loop`` (the run's)."""
        self._loop = loop

    @property
    def pending(self) -> bool:
        """Whether any item is waiting for its retry."""
        return bool(self._timers or self._held)

    def failed(
        self,
        ordinal: int,
        item: Any,
        attempts: Attempts | None,
        error: BaseException,
        requeue: Requeue,
        stopping: bool,
        described: Described | None = None,
    ) -> bool:
        """Record a failed attempt: a final ``Failure``, or a retry ``requeue`` gets after its delay.

        Returns True when the item finally failed. While ``stopping``, a retrying item is dropped
        instead: left unprocessed, a resume retries it. ``described`` replaces the exception's own
        type, message and traceback (an error that came back from a worker as text).
        """
        now = self._clock()
        policy = self.policy
        if attempts is not None:
            attempts.throttled = attempts.refused = 0
            delay = policy.next_delay(attempts, error)
        elif policy.max_attempts == 1 or not (  # policy.retryable, its call saved for the plain exception of a flood
            isinstance(error, policy.retry_for) or (isinstance(error, BaseExceptionGroup) and policy.retryable(error))
        ):
            delay = None  # final at its first attempt (a flood's usual case): no tenacity state is built for it
        else:
            attempts = policy.start(now)
            delay = policy.next_delay(attempts, error)
        if delay is None:
            self._final(ordinal, item, attempts, error, described, requeue, now)
            return True
        watch = self._tally.watch
        if stopping:
            return False
        if watch is not None:
            watch(None, None)
        if log.isEnabledFor(logging.INFO):
            shown = _shown(item)
            error_type = described.error_type if described is not None else qualified_name(type(error))
            attempt = attempts.count - 1 if attempts is not None else 0  # next_delay counted the coming attempt
            log.info(
                "Retrying item %s (#%d) in %.2fs: attempt %d of %d failed with %s: %s",
                shown,
                ordinal,
                delay,
                attempt,
                self.policy.max_attempts,
                error_type,
                mask_texts(described.message if described is not None else error_text(error), self._tally.secrets),
                # --log-format json writes these as keys of their own
                extra={"event": "retry", "ordinal": ordinal, "item": shown, "error_type": error_type,
                       "attempt": attempt, "delay": round(delay, 3)},
            )
        if self._loop is None:
            raise RuntimeError("RetryScheduler.bind(loop) must be called before the first failure.")
        self._tally.retrying += 1
        self._tally.retried += 1
        key = object()
        self._timers[key] = self._loop.call_later(delay, self._due, key, requeue, ordinal, item, attempts)
        return False

    def _final(
        self,
        ordinal: int,
        item: Any,
        attempts: Attempts | None,
        error: BaseException,
        described: Described | None,
        requeue: Requeue,
        now: float,
    ) -> None:
        """The item's final failure: counted, kept for the journal, and shown to the circuit breaker."""
        if described is not None:
            error_type, message, traceback = described.error_type, described.message, described.traceback
        else:
            error_type, message = qualified_name(type(error)), error_text(error)
            traceback = format_item_traceback(error)
        secrets = self._tally.secrets
        if secrets:  # the job's own message may quote one (an HTTP error naming the URL with its api_key)
            message, traceback = mask_texts(message, secrets), mask_texts(traceback, secrets)
        self._tally.fail(
            Failure(  # positional: keywords cost a flood 0.7 µs a failure
                ordinal,
                item,
                error_type,
                writable(message),
                writable(traceback),
                # Every request counts, the throttled ones too: one that failed at its 20th throttle in a row
                # said "failed after 1 attempt" (only a failure that is not a throttle resets ``throttled``).
                1 if attempts is None else attempts.count + max(0, attempts.throttled - 1),
                now if attempts is None else attempts.first_started,
                now,
            )
        )
        watch = self._tally.watch
        if watch is not None:
            watch(self._tally.failures[-1], lambda: self.hold(ordinal, item, requeue))

    def throttled(
        self,
        ordinal: int,
        item: Any,
        attempts: Attempts | None,
        delay: float,
        requeue: Requeue,
        stopping: bool,
        error: BaseException | None = None,
        described: Described | None = None,
        pace: bool = False,
    ) -> None:
        """Hold a throttled item until the cool-down is over; it spends none of its attempts.

        While ``stopping`` it is dropped instead: left unprocessed, a resume retries it. The ``THROTTLES_MAX``-th
        throttle in a row of the same item is its final failure, with ``error`` (``described``: as for ``failed``),
        not counting those that were the run's ``pace`` (``Cooldown.by_pace``).
        """
        if stopping:
            return
        if self._loop is None:
            raise RuntimeError("RetryScheduler.bind(loop) must be called before the first failure.")
        if error is not None:
            if attempts is None:
                attempts = self.policy.start(self._clock())
            if not pace:
                attempts.refused += 1
            attempts.throttled += 1
            attempts.succeeded_then, attempts.throttles_then = self._tally.succeeded, self._tally.throttles
            if attempts.refused >= THROTTLES_MAX:
                log.warning(
                    "Item %s (#%d) was throttled %d times in a row: the API keeps refusing that item, so it fails "
                    "now with its last answer.", _shown(item), ordinal, attempts.throttled,
                )  # fmt: skip
                self._final(ordinal, item, attempts, error, described, requeue, self._clock())
                return
        self._tally.retrying += 1
        key = object()
        self._timers[key] = self._loop.call_later(delay, self._due, key, requeue, ordinal, item, attempts)

    def _due(self, key: object, requeue: Requeue, ordinal: int, item: Any, attempts: Attempts | None) -> None:
        del self._timers[key]
        requeue(ordinal, item, attempts)  # still counted as retrying until it starts

    def started(self, count: int = 1) -> None:
        """The executor started ``count`` requeued items: they no longer count as retrying."""
        self._tally.retrying -= count

    def hold(self, ordinal: int, item: Any, requeue: Requeue) -> Callable[[], int]:
        """Keep a failed item, as not final, until ``release`` (the circuit breaker opened); counts as
        retrying, so the executor waits for it. Returns ``release``."""
        self._tally.retrying += 1
        self._held.append((ordinal, item, requeue))
        return self.release

    def release(self) -> int:
        """Hand every held item back to its executor, each with fresh attempts; returns how many."""
        held, self._held = self._held, []
        for ordinal, item, requeue in held:
            requeue(ordinal, item, None)  # type: ignore[arg-type]  # executors take None as "no attempt yet"
        return len(held)

    def cancel(self) -> None:
        """Drop every waiting retry, on a stop: those items stay unprocessed, for a resume."""
        self.close()
        self._timers.clear()
        self._held.clear()
        self._tally.retrying = 0

    def close(self) -> None:
        """Cancel the timers at the end of a run, leaving the counts as they are."""
        for timer in self._timers.values():
            timer.cancel()
