"""How many items may be in flight and how fast they may start: one limiter for every executor.

Modelled on aiometer's meters: a ``HardLimit`` (concurrency) and a ``RateLimit`` (starts per second,
GCRA-style) behind one ``Limiter``. The async executor holds one for the run; the chunked driver
holds one for the run and derives each chunk's share of it; each worker slot holds one that carries
its start rate from chunk to chunk. Limits change at run time through methods (the pause shell
today, adaptive concurrency next), never by writing to the user's ``Configuration``.

Concurrency is enforced by its users' structure (how many worker tasks or lanes run), not by a
counter taken and released per item: that would cost the success path on every item.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable

from batchcli.load.configuration import MAX_CONCURRENCY, MIN_RATE_LIMIT  # the one bound: exec's and the live controls'


def checked_concurrency(value: object) -> int:
    """``value`` if it is a concurrency a run can take now (an int from 1 to ``MAX_CONCURRENCY``); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"concurrency must be a whole number (an int), got {value!r}: items in flight at once, "
            "e.g. set_concurrency(8)."
        )
    if value < 1:
        raise ValueError(f"concurrency must be at least 1, got {value!r}: e.g. set_concurrency(8).")
    if value > MAX_CONCURRENCY:
        raise ValueError(
            f"concurrency must be at most {MAX_CONCURRENCY:,}, got {value!r}: e.g. set_concurrency({MAX_CONCURRENCY})."
        )
    return value


def checked_rate_limit(value: object) -> float | None:
    """``value`` if it is a rate limit (a positive, finite number of items per second, or None); else ValueError."""
    if value is None:
        return None
    # `not 0 < x < inf` rather than `x <= 0`: NaN compares false both ways and must be refused too.
    rate = None
    if not isinstance(value, bool) and isinstance(value, (int, float)) and MIN_RATE_LIMIT <= value < math.inf:
        with contextlib.suppress(OverflowError):  # an int below infinity that no float holds (10**400)
            rate = float(value)
    if rate is None:
        raise ValueError(
            f"rate_limit must be a positive number of items per second or None, got {value!r}: "
            f"e.g. set_rate_limit(50), or set_rate_limit(None) for no limit (the lowest is {MIN_RATE_LIMIT:.6g}, "
            "one item a day)."
        )
    return rate


@dataclass(frozen=True)
class Limits:
    """The limits in force now, as the pause shell and the controller see them."""

    concurrency: int
    """Most items in flight at once."""
    rate_limit: float | None
    """Most items started per second; None for no limit."""


class HardLimit:
    """At most ``limit`` items in flight."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"concurrency must be at least 1, got {limit!r}.")
        self.limit = limit


CATCH_UP_S = 0.05
"""How far a rate limit's slots may fall behind the clock and still be caught up (at most one period)."""


class RateLimit:
    """Starts spaced ``1 / rate`` apart (GCRA with no burst): each start books the next slot."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._next = 0.0
        """The theoretical arrival time: the earliest the next start may happen."""
        self.set(rate)

    def set(self, rate: float) -> None:
        """Change the rate, at once: the next slot is one new period after now at the latest.

        A slow rate booked slots far ahead (0.01/s: 100 s); a faster one must not wait for them.
        Starts waiting for a booked slot are woken by their executor and book again, one by one,
        so the change allows no burst either.
        """
        if not 0 < rate < math.inf:
            raise ValueError(f"rate_limit must be positive or None, got {rate!r}.")
        changed = rate != getattr(self, "rate", None)
        self.rate = rate
        self._period = 1.0 / rate
        if changed:
            self._next = min(self._next, self._clock() + self._period)

    def delay(self) -> float:
        """Seconds to wait before starting the next item, whose slot this books.

        A start that comes late (a busy machine wakes the loop after the slot) may be caught up by the
        next one, up to ``CATCH_UP_S`` (and one period) behind: otherwise every late wake-up is lost
        for good, and a loaded machine ran a rate of 45/s at 34/s.
        """
        now = self._clock()
        start = max(now, self._next)
        self._next = max(self._next, now - min(CATCH_UP_S, self._period)) + self._period
        return start - now

    def not_before(self, when: float) -> None:
        """Book no start before ``when`` (on this limiter's clock)."""
        self._next = max(self._next, when)


class Limiter:
    """Concurrency plus starts per second, changed at run time by ``set_concurrency``/``set_rate_limit``.

    ``throttled`` is the one flag a hot loop checks: with no rate limit nothing else is asked.
    """

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hard = HardLimit(limits.concurrency)
        self._rate: RateLimit | None = None
        self.throttled = False
        """True while a rate limit is in force: only then must a start ask ``delay()``."""
        self.set_rate_limit(limits.rate_limit)

    @property
    def limits(self) -> Limits:
        """The limits in force now."""
        return Limits(self._hard.limit, None if self._rate is None else self._rate.rate)

    @property
    def concurrency(self) -> int:
        """Most items in flight at once."""
        return self._hard.limit

    def set_concurrency(self, concurrency: int) -> int:
        """Change the most items in flight; returns the change (positive: more may start)."""
        change = concurrency - self._hard.limit
        self._hard = HardLimit(concurrency)
        return change

    def set_rate_limit(self, rate: float | None) -> None:
        """Change the most items started per second (None for no limit)."""
        if rate is None:
            self._rate = None
        elif self._rate is None:
            self._rate = RateLimit(rate, self._clock)
        else:
            self._rate.set(rate)
        self.throttled = self._rate is not None

    def not_before(self, when: float) -> None:
        """With a rate limit, start nothing before ``when`` (on the limiter's clock); without one, nothing changes."""
        if self._rate is not None:
            self._rate.not_before(when)

    def delay(self) -> float:
        """Seconds to wait before the next start (which this books); 0 without a rate limit."""
        return 0.0 if self._rate is None else self._rate.delay()
