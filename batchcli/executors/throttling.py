"""Recognising a throttle, and the run-wide cool-down and adaptive limits (AIMD) it triggers.

A throttle is ``batchcli.Throttled`` or any exception that carries HTTP status 429 or 503, found
duck-typed (no HTTP library is imported): a ``status_code``/``status``/``code`` on the exception or
on its ``response`` (httpx, requests, aiohttp, urllib), with ``Retry-After`` read from the headers
in either of its forms, seconds or an HTTP-date.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable

from batchcli.executors.limiter import Limiter, Limits
from batchcli.load.configuration import Configuration
from batchcli.load.throttled import Throttled
from batchcli.outcome import Tally

log = logging.getLogger("batchcli.throttle")
"""Throttles, cool-downs and every change of the effective limits: info lines in the run's log file."""

THROTTLE_STATUSES = frozenset({429, 503})

DECREASE = 0.5
"""Multiplicative decrease of the effective limits on a throttle (at most once per cool-down)."""
GROW_INTERVAL_S = 0.5
"""How often the effective limits may grow back by one step (additive increase), if items succeeded."""
MIN_RATE = 0.1
"""The lowest effective rate a cut may reach, in items per second."""


@dataclass(frozen=True)
class Throttle:
    """An attempt the API refused for now: retry it without spending an attempt, after a cool-down."""

    retry_after_s: float | None
    """What the API asked for, in seconds from now; None when it did not say."""


def throttle_of(error: BaseException, now: Callable[[], float] = time.time) -> Throttle | None:
    """The throttle ``error`` signals, or None when it is an ordinary failure."""
    if isinstance(error, Throttled):
        return Throttle(_seconds(error.retry_after, now))
    response = getattr(error, "response", None)
    status = _status(error)
    if status is None and response is not None:
        status = _status(response)
    if status not in THROTTLE_STATUSES:
        return None
    headers = getattr(error, "headers", None)
    if headers is None and response is not None:
        headers = getattr(response, "headers", None)
    return Throttle(_retry_after(headers, now))


def _status(obj: object) -> int | None:
    for name in ("status_code", "status", "code"):
        value = getattr(obj, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _retry_after(headers: Any, now: Callable[[], float]) -> float | None:
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After")
        if value is None:  # a plain dict: match the name ignoring case, as HTTP does
            value = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
    except Exception:
        return None
    return None if value is None else _seconds(str(value).strip(), now)


def _seconds(value: object, now: Callable[[], float]) -> float | None:
    """Seconds from now of a Retry-After: a number, a timedelta, a datetime or an HTTP-date text."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return max(0.0, value.total_seconds())
    if isinstance(value, datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return max(0.0, when.timestamp() - now())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return max(0.0, float(value)) if value == value else None
    if isinstance(value, str):
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now())
        except (TypeError, ValueError, IndexError):
            return None
    return None


class Cooldown:
    """The run-wide cool-down after throttles, and the effective limits under the configured ceiling.

    Every executor's driver side owns one, beside its ``RetryScheduler``, and calls ``throttled``
    for each throttled attempt. Nothing here runs on the success path: the growth back is a loop
    timer that reads the tally's success count.
    """

    def __init__(
        self,
        config: Configuration,
        limiter: Limiter,
        apply: Callable[[Limits], None],
        tally: Tally,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = limiter.limits
        """The configured limits: the effective ones never exceed them."""
        self.adaptive = config.adaptive
        self.max_wait_s = config.throttle_max_wait_s
        self._base_s = max(config.backoff_s, 0.1)
        self._limiter = limiter
        self._apply_limits = apply
        self._tally = tally
        self._last_succeeded = 0
        self._clock = clock
        self.until = 0.0
        """Monotonic time the current cool-down ends; no new item starts before it."""
        self._cut_until = 0.0
        self._streak = 0
        tally.limits = tally.ceiling = (self.ceiling.concurrency, self.ceiling.rate_limit)

    @property
    def remaining_s(self) -> float:
        """Seconds left of the cool-down; 0 when none."""
        return max(0.0, self.until - self._clock())

    def throttled(self, throttle: Throttle) -> float:
        """Start or extend the cool-down for one throttled attempt; returns its seconds from now."""
        now = self._clock()
        self._tally.throttles += 1
        self._streak += 1
        wait = throttle.retry_after_s
        if wait is None:
            wait = self._base_s * 2 ** min(self._streak - 1, 30)
        if wait > self.max_wait_s:
            log.warning(
                "The API asked to wait %.0fs; waiting throttle_max_wait_s=%gs instead.", wait, self.max_wait_s
            )
            wait = self.max_wait_s
        first = now >= self.until
        self.until = max(self.until, now + wait)
        self._tally.cooldown_until = self.until
        if first:
            log.info("Throttled by the API: no new item starts for %.2fs.", self.until - now)
        if self.adaptive and now >= self._cut_until:
            self._cut_until = self.until
            self._cut()
        return self.until - now

    def _cut(self) -> None:
        old = self._limiter.limits
        rate = None if old.rate_limit is None else max(MIN_RATE, old.rate_limit * DECREASE)
        new = Limits(max(1, int(old.concurrency * DECREASE)), rate)
        if new != old:
            log.info("Throttled: effective %s (configured %s).", _describe(new), _describe(self.ceiling))
            self._apply(new)

    def _apply(self, limits: Limits) -> None:
        self._apply_limits(limits)
        self._tally.limits = (limits.concurrency, limits.rate_limit)
        self._tally.ceiling = (self.ceiling.concurrency, self.ceiling.rate_limit)

    def set_ceiling(self, limits: Limits) -> None:
        """The user changed the limits (the pause shell): they are the new ceiling and in force now."""
        self._apply_limits(limits)  # first: a bad value raises here and changes nothing
        self.ceiling = limits
        self._apply(limits)

    def tick(self) -> None:
        """Called every ``GROW_INTERVAL_S`` on the loop: grow back if items succeeded since the last tick."""
        succeeded = self._tally.succeeded
        grew, self._last_succeeded = succeeded > self._last_succeeded, succeeded
        self.grow(grew)

    def grow(self, succeeded: bool) -> None:
        """One additive step back toward the ceiling, when items succeeded since the last step."""
        if not succeeded or self._clock() < self.until:
            return
        self._streak = 0
        old, ceiling = self._limiter.limits, self.ceiling
        if not self.adaptive or old == ceiling:
            return
        concurrency = min(ceiling.concurrency, old.concurrency + max(1, ceiling.concurrency // 20))
        rate = old.rate_limit
        if rate is not None and ceiling.rate_limit is not None:
            rate = min(ceiling.rate_limit, rate + ceiling.rate_limit / 20)
        new = Limits(concurrency, rate)
        log.info("Growing back: effective %s (configured %s).", _describe(new), _describe(ceiling))
        self._apply(new)


def _describe(limits: Limits) -> str:
    rate = "" if limits.rate_limit is None else f", rate_limit={limits.rate_limit:g}/s"
    return f"concurrency={limits.concurrency}{rate}"
