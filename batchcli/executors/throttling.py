"""Recognising a throttle, and the run-wide cool-down and adaptive limits (AIMD) it triggers.

A throttle is ``batchcli.Throttled`` or any exception that carries HTTP status 429 or 503, found
duck-typed (no HTTP library is imported): a ``status_code``/``status``/``code`` on the exception or
on its ``response`` (httpx, requests, aiohttp, urllib), with ``Retry-After`` read from the headers
in either of its forms, seconds or an HTTP-date.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime, parsedate_tz
from typing import Any, Callable

from batchcli.executors.limiter import Limiter, Limits, checked_concurrency, checked_rate_limit
from batchcli.load.configuration import Configuration
from batchcli.load.readers import ungrouped
from batchcli.load.throttled import Throttled
from batchcli.outcome import Tally, per_second

log = logging.getLogger("batchcli.throttle")
"""Throttles, cool-downs and every change of the effective limits: info lines in the run's log file."""

THROTTLE_STATUSES = frozenset({429, 503})

DECREASE = 0.7
"""Multiplicative decrease of the effective concurrency on a throttle (at most once per cool-down)."""
GROW_INTERVAL_S = 0.5
"""How often the effective limits may grow back by one step (additive increase), if items succeeded."""
MIN_RATE = 0.1
"""The lowest effective rate a cut may reach, in items per second."""
RATE_MARGIN = 0.95
"""A learnt rate sits this far below what the API was measured to serve."""
RATE_CUT = (0.7, 0.9)
"""A learnt rate is between these shares of the rate that was throttled: never a cut of more than 30% or less
than a tenth, whatever the measurement says."""
RATE_STEP = 0.001
"""Additive increase of a measured rate per step, as a share of it; faster after ``PROBE_AFTER_S`` without a
throttle. Each throttle costs a whole ``Retry-After`` of nothing started, so the probe is slow: from the learnt
rate (0.95 of the API's) it takes some 25 s to reach the API's rate."""
PROBE_AFTER_S = 30.0
"""After this long without a throttle the probe speeds up (the step grows with the quiet time)."""
RATE_BACKOFF = 0.95
"""A measured rate that was throttled goes to this share of it (or lower, when the window says the API served less)."""
SUSTAINED_S = 10.0
"""A rate held this long without a throttle was served: a throttle then never cuts below ``FLOOR`` of it (jitter
below the API's rate must not ratchet the rate down)."""
FLOOR = 0.9
FLOOR_DECAY = 0.98
"""A throttle at the floor lowers the floor by this much: the API's rate may really have dropped."""
WAVE_MIN = 10
"""Successes between the first and a later throttle of one cool-down needed to measure the API's rate from them."""
WAVE_MIN_S = 0.05
"""...and the time between them, in seconds."""
SLOW_START = 1.5
"""Growth per step of a rate that was cut without a measurement (the first throttle), until the next one."""
USED = 0.5
"""A learnt rate grows only while the items succeeding use at least this share of it (as BBR does not probe
while the application, not the network, is the limit)."""
SLOW_START_CUT = 1 / SLOW_START
"""The cut when a slow start is throttled: back to the last step, which was not (the API's rate is between the
last two steps; the window's average, taken over the ramp, would say far less). From there the rate climbs
back by ``CATCH_UP`` a step toward just below the step that was throttled, then probes slowly."""
CATCH_UP = 0.04
"""Growth per step after a slow start's throttle, up to ``RATE_BACKOFF`` of the rate that was throttled."""
RATE_MEMORY_S = 60.0
"""With no configured ``rate_limit``, a learnt rate is forgotten after this long without a throttle."""
MIN_LEARNT = 5
"""Fewer successes than this between two cool-downs teach nothing about the API's rate."""
MIN_WINDOW_S = 1.0
"""...then, with no rate yet, what the API served since items began to start sets one, once this long."""
WAVE_OVERSHOOT = 0.85
"""The cut when a rate measured from a cool-down's wave is throttled within ``SUSTAINED_S``: the wave read high
(it is short, and timed by a client that reads a backlog of answers faster than the API served them; on this
project's benchmark 115-122/s against an API at 100/s), so one deep cut instead of 3-4 of ``RATE_BACKOFF``, each
of which stops every start for a whole Retry-After."""
PACE_EVIDENCE_S = 10.0
"""A repeat refusal counts for the pace while the API served, this recently, an item it had refused: its
refusals then came from the pace, not from the item (``Cooldown.served_refused``)."""
DRAIN_MARGIN = 0.98
"""After that deep cut the rate climbs back by ``CATCH_UP`` a step to this share of what the API served since the
cool-down beyond its burst (the bucket, full when the cool-down ends, emptied at the difference of the two rates),
when that is higher: on this project's benchmark the deep cut alone sat at 0.88-0.90 of the API's rate for the rest
of the run."""

ZERO_AGAIN_S = 0.1
"""The first wait of a ``Retry-After: 0`` that cannot mean "now" (``Cooldown._zero``), doubling with each one
in a row. Short, not ``backoff_s``: a strict API (a burst of 1) answers 0 too, and serves the next request a
fraction of a second later; held ``backoff_s`` at the start of a run, 200 items at 20/s took 20 s instead of 13."""


@dataclass(frozen=True)
class Throttle:
    """An attempt the API refused for now: retry it without spending an attempt, after a cool-down."""

    retry_after_s: float | None
    """What the API asked for, in seconds from now; None when it did not say."""
    unavailable: bool = False
    """An HTTP 503 (Service Unavailable), not a 429: the API may be down rather than the pace too fast
    (``Cooldown.throttled`` cuts nothing for one that looks like an outage)."""


def throttle_of(error: BaseException, now: Callable[[], float] = time.time) -> Throttle | None:
    """The throttle ``error`` signals, or None when it is an ordinary failure.

    Reading an exception runs its code (a ``response`` property, a ``retry_after`` no clock can hold): what raises
    there makes a ``Throttled`` one without a Retry-After and any other an ordinary failure. Raised from here, it
    ended the worker that was handling the item, which stayed in flight for good (a run "finished" without it)."""
    try:
        return _throttle_of(error, now)
    except Exception:
        return Throttle(None) if isinstance(error, Throttled) else None


def _throttle_of(error: BaseException, now: Callable[[], float]) -> Throttle | None:
    if isinstance(error, Throttled):
        return Throttle(_seconds(error.retry_after, now))
    if isinstance(error, BaseExceptionGroup):
        # A TaskGroup's calls all refused (429s from a fan-out): a throttle, for the longest time any asked. One
        # ordinary failure among them makes the group an ordinary failure.
        throttles = [throttle_of(inner, now) for inner in error.exceptions]  # guarded each: one wait no clock holds
        if not throttles or None in throttles:
            return None
        waits = [t.retry_after_s for t in throttles if t is not None and t.retry_after_s is not None]
        return Throttle(max(waits) if waits else None, all(t is not None and t.unavailable for t in throttles))
    if not isinstance(error, Exception):
        return None  # SystemExit has a ``code``, which is no HTTP status
    if not getattr(error, "__dict__", True) and _plain(type(error)):
        return None  # no attribute of its own, none on its class: a flood's ValueError is decided here
    response = getattr(error, "response", None)
    status = _status(error)
    if status is None and response is not None:
        status = _status(response)
    if status not in THROTTLE_STATUSES:
        return None
    headers = getattr(error, "headers", None)
    if headers is None and response is not None:
        headers = getattr(response, "headers", None)
    retry_after = _retry_after(headers, now)
    if status == 503 and retry_after is None:
        # A 503 that names no time to come back is an outage (a load balancer with nothing behind it), not a pace:
        # read as a throttle, it never failed an item nor tripped the breaker, and the run crept on at a request a
        # minute for days. An ordinary failure, the breaker counts it.
        return None
    return Throttle(retry_after, status == 503)


class Relayed(Exception):
    """A failed attempt relayed from where it ran (a worker's, as text): whether it was a throttle travels with it."""

    throttle: Throttle | None = None
    """The API refused the attempt for now; None for an ordinary failure."""


def live_throttle(error: BaseException) -> Throttle | None:
    """The throttle an executor's ``process_one`` raised (the live retries of the pause shell and ``ctl``): a worker's
    is ``Relayed``, the driver's own is the job's exception."""
    return error.throttle if isinstance(error, Relayed) else throttle_of(error)


_SHAPED = ("response", "status_code", "status", "code", "headers")
_plain_classes: dict[type, bool] = {}


def _plain(cls: type) -> bool:
    """Whether no attribute a throttle is recognised by is defined on ``cls`` (a property, a class value)."""
    plain = _plain_classes.get(cls)
    if plain is None:
        if len(_plain_classes) >= 1024:
            _plain_classes.clear()
        plain = _plain_classes[cls] = not any(hasattr(cls, name) for name in _SHAPED)
    return plain


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
    if isinstance(value, datetime):  # a naive one is local time, as datetime.timestamp() and now() read it
        try:
            return max(0.0, value.timestamp() - now())
        except (OverflowError, ValueError):
            # Within a day of datetime.min or .max, local time can fall outside years 1 to 9999 (a naive
            # datetime.min always does): long past, or as far as a wait can be, not "no Retry-After".
            return 0.0 if value.year == MINYEAR else math.inf
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1e308:
        # float() of 10**400 overflows: it read as no Retry-After at all, while math.inf is clamped
        return math.inf if value > 0 else 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return max(0.0, float(value)) if value == value else None
    if isinstance(value, str):
        try:
            if ungrouped(value):
                return _seconds(float(value), now)  # "nan" says no time, as NaN given as a number does
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            if _past_the_calendar(value):
                return math.inf
            # A header sent twice, joined by the client ("5, 5": httpx, requests; urllib keeps the first): the first.
            first, comma, _ = value.partition(",")
            return _seconds(first, now) if comma and first.strip() and not first.strip().isalpha() else None
        if when.tzinfo is None:  # asctime's form names no zone: an HTTP-date is GMT (RFC 9110, 5.6.7), not local time
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, when.timestamp() - now())
    return None


def _past_the_calendar(text: str) -> bool:
    """Whether ``text`` is an HTTP-date in a year past 9999, which no datetime holds: read as no Retry-After, it
    had the run's own short backoff, where 9999 waits as long as a wait may."""
    try:
        fields = parsedate_tz(text)
        if fields is None or fields[0] <= MAXYEAR:
            return False
        datetime(2000, *fields[1:6])  # the rest is a real date and time (2000 had a 29 February)
    except (TypeError, ValueError, IndexError, OverflowError):  # what parsedate_to_datetime raised for it
        return False
    return True


def backoff_wait(config: Configuration, doublings: int) -> float:
    """A cool-down without a ``Retry-After``: ``backoff_s`` (0.1 s at least) doubled ``doublings`` times, up to
    ``backoff_max_s``, not ``throttle_max_wait_s``: an item the API always refused took hours to reach its
    ``THROTTLES_MAX``-th throttle, doubling up to that."""
    return _doubled(max(config.backoff_s, 0.1), doublings, config)


def zero_wait(config: Configuration, doublings: int) -> float:
    """The wait for a ``Retry-After: 0`` that cannot mean "now" (``Cooldown._zero``, or an item refused alone):
    ``ZERO_AGAIN_S`` doubled ``doublings`` times, up to ``backoff_max_s``."""
    return _doubled(ZERO_AGAIN_S, doublings, config)


def _doubled(base: float, doublings: int, config: Configuration) -> float:
    """``base`` doubled ``doublings`` times, up to ``backoff_max_s`` (``base`` when that is lower)."""
    return min(base * 2 ** min(doublings, 30), max(config.backoff_max_s, base))


class Cooldown:
    """The run-wide cool-down after throttles, and the effective limits under the configured ceiling.

    Every executor's driver side owns one, beside its ``RetryScheduler``, and calls ``throttled``
    for each throttled attempt. Nothing here runs on the success path: the growth back is a loop
    timer that reads the tally's success count.

    With ``adaptive``, the first throttle after a cool-down cuts the effective concurrency and
    sets an effective start *rate* learnt from the API (``RateDiscovery``): against a fast API,
    even one item in flight can go faster than it allows, so concurrency alone cannot settle.
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
        self.effective = limiter.limits
        """The limits adaptive concurrency keeps (those in force but for the circuit breaker's ``hold_concurrency``)."""
        self._held: int | None = None
        """The circuit breaker's cap on the concurrency, None when it holds none."""
        self._clamp_warned = False
        """Whether this cool-down warned that a wait was clamped to ``throttle_max_wait_s``."""
        self.adaptive = config.adaptive
        self.max_wait_s = config.throttle_max_wait_s
        self._config = config
        self._base_s = backoff_wait(config, 0)
        self._limiter = limiter
        self._apply_limits = apply
        self._tally = tally
        self._last_succeeded = 0
        self._clock = clock
        self.until = clock()
        """Monotonic time the current cool-down ends; no new item starts before it."""
        self._streak = 0
        self._wave_until = self._pace_until = self.until
        """Refusals before ``_wave_until`` belong to the current cool-down, even when its wait is shorter (``backoff_s``
        at least); ``_pace_until`` is when the last cool-down a first refusal started ends (a repeat's hold is not one)."""
        self._zeros = self._zero_holds = 0
        self._zero_served = -1
        """``Retry-After: 0`` answers and the holds they caused (``_zero``) since the API last served an item, and the
        tally's successes then."""
        self._rates = RateDiscovery()
        self._wave: tuple[float, int, float | None] | None = None
        """(time, successes, rate in force before the cut) at the throttle the current cool-down's wave counts from."""
        self._wave_counted = False
        """Whether ``_wave`` is the second throttle of the cool-down yet, which the wave is counted from."""
        self._wave_rate: float | None = None
        """The rate measured from the current cool-down's wave of answers, logged once it ends."""
        self._refused_served_at = self._refused_served_any_at = -math.inf
        self._recovered = True
        """False from a throttle's cut until the limits grew back to the ceiling: the run is adapting, even while the
        user's ceiling equals what is in force (``_set_ceiling``)."""
        """When the API last served an item it had refused (``served_refused``), monotonic."""
        self._over_at: int | None = None
        """The tally's successes when the last cool-down was seen over (``remaining_s``); None during one."""
        tally.limits = tally.ceiling = (self.ceiling.concurrency, self.ceiling.rate_limit)

    @property
    def remaining_s(self) -> float:
        """Seconds left of the cool-down; 0 when none (the first look after it ended notes the successes then)."""
        left = self.until - self._clock()
        if left <= 0 and self._over_at is None:
            self._over_at = self._tally.succeeded
        return max(0.0, left)

    def throttled(self, throttle: Throttle, repeat: int = 0, alone: bool = False) -> float:
        """Start or extend the cool-down for one throttled attempt; returns its seconds from now.

        ``repeat`` is the item's throttles in a row before this one. A repeat cuts nothing, measures nothing and
        does not double the exponential cool-down: it is the API refusing that item, not the run's pace (a record
        that always gets a 503). Counted as throttles of the pace, a few such records cut the learnt rate 30% a
        refusal down to its 0.1/s floor, while the API served every other item at full speed. Refusals of the pace
        hit items not refused yet, and those still cut. A repeat holds every start for what the API asked unless
        ``alone`` (``Attempts.refused_alone``: the API served more items than it refused since that item's last
        refusal), when it waits for that item alone: the holds of one such record left the others a few milliseconds
        a Retry-After, 2 items/s instead of 90 for 20 Retry-Afters, and kept the cut concurrency from growing back.
        A ``Retry-After: 0`` may not mean "now" (``_zero``, and a repeat ``alone``).
        """
        now = self._clock()
        self._tally.throttles += 1
        asked = throttle.retry_after_s
        if asked == 0 and not alone:  # (an item refused alone waits for itself, below)
            asked = self._zero(now)
        if repeat and not alone and now - self._refused_served_at <= PACE_EVIDENCE_S:
            # The API refused this item again with little served in between, and lately it served items it had
            # refused: the refusals are the pace's (a strict API, a burst of 1, refuses whatever comes too soon,
            # and refused items are due first). Taken for the item's, none of them cut a slow start that overshot:
            # 60 items at 5/s took 47-60 s, each refusal holding every start for a whole Retry-After.
            repeat = 0
        if repeat:
            if alone:
                # A 0 for an item the API refuses while serving others cannot mean "now" either: against a strict API
                # (a burst of 1) answering 0, such an item asked again at once, into a bucket the others had just
                # emptied, and failed at its 20th refusal within a second. It waits a ``zero_wait``, alone.
                return zero_wait(self._config, repeat - 1) if throttle.retry_after_s == 0 else self._wait(asked, repeat)
            wait = self._wait(asked, repeat)
            if now + wait > self.until and wait > 0:
                log.info("Throttled again (an item refused before): no new item starts for %.2fs.", wait)
            return self._hold(now, wait)
        first = now >= max(self._pace_until, self._wave_until)
        if first:  # one doubling per cool-down: a wave of refusals answering the same burst is one throttle
            if self._over_at is not None and self._tally.succeeded > self._over_at:
                # Items succeeded since the last cool-down ended: this throttle starts the doubling afresh. Only the
                # grow timer reset it, every 0.5 s, so an API refusing briefly and often (100 served between two
                # 503s without a Retry-After) had its waits doubled 1, 2, 4 s toward backoff_max_s.
                self._streak = 0
            self._over_at = None
            self._streak += 1
            self._clamp_warned = False
            # However short the wait asked for: with "Retry-After: 0" each cool-down ended as it began, so every
            # refusal of one wave was a cool-down of its own and cut the concurrency again (8 at once took it to 1).
            self._wave_until = now + self._base_s
        wait = self._wait(asked, self._streak - 1)
        if first and self.adaptive and throttle.unavailable and self._outage(now):
            # The API is down, not refusing the pace: cut nothing, learn nothing, and start the next window after it.
            # Read as the pace's, each short outage cut the learnt rate by 2% (an outage every 20 s: 301/s to 274/s
            # in two minutes, and on down), as the window before it was part climb and part the job's own failures.
            self._wave = None
            self._rates.skipped(self._tally.succeeded)
            log.info("The API is unavailable (503), not refusing the pace: the limits in force stay.")
        elif first and self.adaptive:  # at most one cut per cool-down, measured over the time since the last one
            in_force = self.effective.rate_limit
            self._wave, self._wave_rate, self._wave_counted = (now, self._tally.succeeded, in_force), None, False
            self._cut(self._rates.learn(now - self.until, self._tally.succeeded, in_force, now))
        elif self.adaptive:
            self._measure_wave(now)
        self._pace_until = max(self._pace_until, now + wait)
        if first:
            log.info("Throttled by the API: no new item starts for %.2fs.", max(self.until, now + wait) - now)
        return self._hold(now, wait)

    def _zero(self, now: float) -> float:
        """The wait for a ``Retry-After: 0``: none, unless more of them came since the API last served an item than two
        waves of the configured concurrency. Then requests sent after such an answer were refused too: the API does
        not mean "now" (a quota run out, a server clock behind ours). Waited 0 every time, an API refusing everything
        that way got the next request at once: 380 refusals a second, and items failed at their 20th throttle. The
        run holds every start for a ``zero_wait``, doubling with each hold, until the API serves an item.

        Two waves, not one: a strict API (a burst of 1) answering 0 refuses the first wave and the retries sent at once
        after it, and serves the next request 50 ms later; held after one wave, its runs learnt a rate 10-20% low."""
        if self._tally.succeeded != self._zero_served:
            self._zero_served, self._zeros, self._zero_holds = self._tally.succeeded, 0, 0
        self._zeros += 1
        if self._zeros <= 2 * self.ceiling.concurrency:
            return 0.0
        if self._zero_holds and now < self.until:
            return self.until - now  # an answer to a request sent before the hold: it neither doubles nor extends it
        self._zero_holds += 1
        wait = zero_wait(self._config, self._zero_holds - 1)
        log.info('The API answered "Retry-After: 0" %d times with nothing served: no new item starts for %.2fs.', self._zeros, wait)
        # The wave's measurement (``_measure_wave``) counts afresh from the next throttle: counted over the hold, a
        # strict API's read 15.8/s, not 17.8; with the hold's time taken out, the answers it read meanwhile made it 37.9.
        self._wave_counted = False
        return wait

    def _outage(self, now: float) -> bool:
        """Whether a first 503 (``Throttle.unavailable``) looks like the API down rather than the pace too fast: the
        pace in force was served for ``SUSTAINED_S`` before it, or the API served nothing at all since the last
        throttle (an outage going on past its ``Retry-After``, or there from the start). A 503 that comes soon after the API served the pace
        (an API that answers 503 for "too fast") cuts as a 429 does."""
        # Nothing at all, not "fewer than MIN_LEARNT": an API with a burst of 1 that answers 503 to "too fast" serves
        # one item after each hold, so every 503 read as an outage, nothing was cut, and 90% of requests were refused.
        return now - self.until >= SUSTAINED_S or self._rates.gained(self._tally.succeeded) == 0

    def served_refused(self, cuts: bool = True) -> None:
        """The API served an item it had refused before (the loop thread): for a while, refusals of items refused
        before count for the pace (``throttled``; only when ``cuts``: the chunked executors' workers pace their shares
        each on its own clock, and counted for the pace their repeats only cut a rate already too low) and are not
        the items' own (``by_pace``). An item the API always refuses is never served, so the repeats of such records
        still cut nothing and still count."""
        now = self._clock()
        self._refused_served_any_at = now
        if cuts:
            self._refused_served_at = now

    def by_pace(self, repeat: int, alone: bool) -> bool:
        """Whether an item's repeat refusal (``repeat`` throttles of it in a row before this one, ``alone`` as for
        ``throttled``) is the run's pace rather than the API refusing that item: then it does not count toward the
        item's ``THROTTLES_MAX``."""
        return bool(repeat) and not alone and self._clock() - self._refused_served_any_at <= PACE_EVIDENCE_S

    def _wait(self, asked: float | None, doublings: int) -> float:
        """The wait: what the API ``asked``, else ``backoff_s`` doubled ``doublings`` times up to ``backoff_max_s``;
        cut to ``throttle_max_wait_s``, with a warning once per cool-down."""
        wait = backoff_wait(self._config, doublings) if asked is None else asked
        if wait <= self.max_wait_s:
            return wait
        if not self._clamp_warned:  # once per cool-down, not per refused attempt
            self._clamp_warned = True
            log.warning(
                "%s; waiting throttle_max_wait_s=%gs instead.",
                f"The API asked to wait {_wait_text(wait)}" if asked is not None else f"The cool-down would be {_wait_text(wait)}",
                self.max_wait_s,
            )
        return self.max_wait_s

    def _hold(self, now: float, wait: float) -> float:
        """No new item starts for ``wait`` seconds from ``now`` (or until a later end already set); returns how long.

        A later end wakes the recorder, so that the journal's ``live`` row has it at once: a ``kill -9`` within the
        flush interval of a 429 left the resume no cool-down to wait out (``Journal.cooldown_left_s``)."""
        if now + wait > self.until:
            self.until = self._tally.cooldown_until = now + wait
            self._tally.flush_wanted.set()
        return self.until - now

    def _measure_wave(self, now: float) -> None:
        """A later throttle of the same cool-down: the answers to the items in flight measure the API's rate.

        While some of them are still refused, the API is saturated, so a token bucket (or GCRA) serves exactly
        its rate between two refusals: the successes since the first throttle, over the time since, are the
        rate itself, burst or no burst. Nothing new starts meanwhile, so the rate set here is the one the run
        resumes at when the cool-down ends.

        The wave is counted from the cool-down's second throttle, not its first: the loop reads many answers at
        once, and the ones it reads just after the first refusal were mostly served before it (the backlog of a
        client that was sending as fast as it could). Counted, they read the API's rate some 20% high (122/s
        against an API at 100/s), and each of the 3-4 throttles that then bring the rate down stops every start
        for a whole Retry-After.
        """
        if self._wave is None:
            return
        if not self._wave_counted:
            self._wave, self._wave_counted = (now, self._tally.succeeded, self._wave[2]), True
            return
        since, succeeded, in_force = self._wave
        gained, seconds = self._tally.succeeded - succeeded, now - since
        if gained < WAVE_MIN or seconds < WAVE_MIN_S:
            return
        rate = gained / seconds * RATE_MARGIN
        if in_force is not None:
            rate = min(rate, in_force)
        if self.ceiling.rate_limit is not None:
            rate = min(rate, self.ceiling.rate_limit)
        self._wave_rate = rate
        self._rates.measured(rate, self._tally.succeeded)
        self._apply(Limits(self.effective.concurrency, rate))

    def _cut(self, rate: float | None) -> None:
        old = self.effective
        new = Limits(max(1, int(old.concurrency * DECREASE)), rate)
        self._recovered = False
        if new != old:
            log.info("Throttled: effective %s (configured %s).", _describe(new), _describe(self.ceiling))
            self._apply(new)

    def _apply(self, limits: Limits) -> None:
        # Never above the ceiling, whatever a learnt rate says (a rate the API served before the user lowered the
        # rate limit kept a floor under later cuts, and the run went at 40-70/s after `set rate_limit=10`).
        ceiling = self.ceiling
        rate = limits.rate_limit if ceiling.rate_limit is None else min(limits.rate_limit or ceiling.rate_limit, ceiling.rate_limit)
        self.effective = limits = Limits(min(limits.concurrency, ceiling.concurrency), rate)
        held = self._held_down(limits)
        self._apply_limits(held)
        self._tally.limits = (held.concurrency, held.rate_limit)
        self._tally.limits_held = held.concurrency < limits.concurrency
        limits = held
        if self._tally.throttles:
            self._tally.limit_changes.append((time.time(), limits.concurrency, limits.rate_limit, self._tally.throttles))
        self._tally.ceiling = (self.ceiling.concurrency, self.ceiling.rate_limit)

    def hold_concurrency(self, concurrency: int | None) -> None:
        """The circuit breaker's cap on the concurrency (1 while it probes, then doubling back), None to lift it.

        Unlike ``set_concurrency`` it leaves the ceiling (the user's) and the adaptive limits as they are: the breaker
        once set them through the user's setter, and a `ctl set concurrency=2` made while it was open was grown back
        over to 8, a throttle's cut became the ceiling for good, and a run resumed during a probe stayed at 1."""
        self._held = concurrency
        self._apply(self.effective)

    @property
    def held(self) -> int | None:
        """The circuit breaker's cap on the concurrency now (1 while it probes); None when it holds none."""
        return self._held

    def _held_down(self, limits: Limits) -> Limits:
        """``limits`` under the circuit breaker's cap, when it holds one."""
        return limits if self._held is None else Limits(min(limits.concurrency, self._held), limits.rate_limit)

    def set_concurrency(self, concurrency: int) -> None:
        """The user's concurrency (the pause shell, ``ctl``), checked: the new ceiling, in force now."""
        self._set_ceiling(Limits(checked_concurrency(concurrency), self.ceiling.rate_limit))

    def set_rate_limit(self, rate: float | None) -> None:
        """The user's rate limit (None for none), checked: the new ceiling, in force now."""
        self._set_ceiling(Limits(self.ceiling.concurrency, checked_rate_limit(rate)))

    def _set_ceiling(self, limits: Limits) -> None:
        """A new ceiling caps the limits in force; while they adapt (below the old ceiling) they keep what they learnt.

        It had replaced them: `ctl set concurrency=15` on a run cut to 1 at a learnt 45/s (configured 16) put 15 in
        force with no rate at all, and the API answered with a throttle a second, each a whole Retry-After of nothing
        started. A run not adapting (at its ceiling, or ``adaptive=false``) takes the new values at once.
        """
        self._apply_limits(self._held_down(limits))  # first: a bad value raises here and changes nothing
        # Cut and not grown back, or cooling down: adapting, even at a ceiling set to what is in force (`set
        # concurrency=5` on a run cut from 8 to 5, then `set concurrency=8`, put 8 in force at once).
        adapting = self.adaptive and (self.effective != self.ceiling or not self._recovered or self._clock() < self.until)
        self.ceiling = limits
        self._apply(self.effective if adapting else limits)  # never above the new ceiling (``_apply``)

    def start(self) -> None:
        """Items start now, or once the cool-down an earlier session stopped in ends (``Tally.cooldown_until``, set
        by the driver before the run starts): the first window the API's rate is measured over begins then."""
        now = self._pace_until = self._clock()
        self.until = max(now, self._tally.cooldown_until)
        if self.until > now:
            log.info("The last session stopped during a cool-down: no new item starts for %.2fs.", self.until - now)
        self._rates.started(self.until, self._tally.succeeded)

    def tick(self) -> None:
        """Called every ``GROW_INTERVAL_S`` on the loop: grow back if items succeeded since the last tick."""
        succeeded = self._tally.succeeded
        gained, self._last_succeeded = succeeded - self._last_succeeded, succeeded
        self.grow(gained > 0, gained / GROW_INTERVAL_S)

    def grow(self, succeeded: bool, per_s: float = 0.0) -> None:
        """One additive step back toward the ceiling, when items succeeded (``per_s`` a second) since the last step."""
        now = self._clock()
        if now < self.until:
            return
        if not succeeded:
            # Nothing grows, but a learnt rate is still forgotten in time: reached only at a success, a rate below one
            # item a tick (the 0.1/s floor, or 2e-05/s set by ctl and then lifted) was forgotten hours late, if ever.
            old = self.effective
            if self.adaptive and old.rate_limit is not None and RateDiscovery.forgets(self.ceiling.rate_limit, now - self.until):
                self._forget(now, Limits(old.concurrency, None))
            return
        if self._wave_rate is not None:
            log.info(
                "The API served %.1f/s while it throttled: effective %s (configured %s).",
                self._wave_rate / RATE_MARGIN, _describe(self.effective), _describe(self.ceiling),
            )
            self._wave_rate = None
        self._streak = 0
        old, ceiling = self.effective, self.ceiling
        if not self.adaptive or old == ceiling:
            return
        concurrency = min(ceiling.concurrency, old.concurrency + max(1, ceiling.concurrency // 20))
        new = Limits(concurrency, self._rates.grown(old.rate_limit, ceiling.rate_limit, now - self.until, per_s))
        if old.rate_limit is not None and new.rate_limit is None:
            self._forget(now, new)
            return
        self._recovered = new == ceiling
        if new.concurrency != old.concurrency or new.rate_limit == ceiling.rate_limit != old.rate_limit:
            # Not every small step of a learnt rate: those would be a line every GROW_INTERVAL_S.
            log.info("Growing back: effective %s (configured %s).", _describe(new), _describe(ceiling))
        self._apply(new)

    def _forget(self, now: float, new: Limits) -> None:
        """The learnt rate is forgotten (``RATE_MEMORY_S`` without a throttle): ``new`` has no rate limit, and the API's
        rate is measured afresh from now (``RateDiscovery.forgot``)."""
        self._recovered = new == self.ceiling
        log.info(
            "No throttle for %.0fs: the learnt rate is forgotten; effective %s (configured %s).",
            now - self.until, _describe(new), _describe(self.ceiling),
        )
        self._rates.forgot(now, self._tally.succeeded)
        self._apply(new)


class RateDiscovery:
    """The start rate an API allows, learnt from what it served between two throttles.

    A rate-limited API (a token bucket, GCRA) serves a burst and then its rate: over the time
    between two cool-downs, ``successes = burst + rate * seconds``. The fewest successes seen
    between two cool-downs bounds the burst from above, so ``(successes - burst) / seconds`` is
    the rate the API kept up; the effective rate goes a little below it, and never cuts the rate
    that was throttled by more than 30% or less than a tenth. Afterwards it grows additively,
    slowly at first and faster the longer no throttle comes (as TCP CUBIC probes near the rate
    that last failed and away from it only later).
    """

    def __init__(self) -> None:
        self._burst: int | None = None
        self._succeeded = 0
        """The tally's successes at the last cut: the next window counts from there."""
        self._measured = False
        """Whether the rate in force came from a measurement; until then it grows fast (slow start)."""
        self._catch_up_to: float | None = None
        """After a slow start's throttle: the rate grows faster up to this one."""
        self._from_wave = False
        """Whether the rate in force is a cool-down's wave measurement, not yet served for ``SUSTAINED_S``."""
        self._good: float | None = None
        """A rate the API served for ``SUSTAINED_S`` without a throttle: a cut never goes below ``FLOOR`` of it."""
        self._first: tuple[float, int] | None = None
        """(time, successes) when items began to start: what the API served since, when no window measures it."""
        self._window_from = -math.inf
        """When the learnt rate was last forgotten (``forgot``): no window reaches back past it."""

    def started(self, now: float, succeeded: int) -> None:
        """Items begin to start now (``Cooldown.start``)."""
        self._first = (now, succeeded)

    def measured(self, rate: float, succeeded: int) -> None:
        """The rate was measured another way (a cool-down's wave of answers, ``succeeded`` the tally's successes at
        its latest throttle): no slow start from it, and the next window counts from there (the wave was served
        before the cool-down ended, which the window is timed from)."""
        self._measured = self._from_wave = True
        self._succeeded = succeeded
        self._catch_up_to = None

    def gained(self, succeeded: int) -> int:
        """Successes since the last throttle that learnt (or ``skipped``), ``succeeded`` the tally's."""
        return succeeded - self._succeeded

    def skipped(self, succeeded: int) -> None:
        """A throttle that teaches nothing (an outage): the next window counts from here."""
        self._succeeded = succeeded
        self._from_wave = False

    def forgot(self, now: float, succeeded: int) -> None:
        """The learnt rate was forgotten at ``now``: the next window counts from here. Counted from the last cool-down,
        it held the minute the forgotten rate (the 0.1/s floor after an outage, a rate ctl set) kept the run at, and
        the throttle of the first burst after it learnt that rate again, a minute later again, for good: 0.13/s
        against an API at 30/s."""
        self._succeeded = succeeded
        self._from_wave = False
        self._window_from = now
        # Nothing learnt is trusted any more: what the API serves is found as at the start (a slow start from what it
        # serves from now on). A measured rate grows 0.1% a step, so a rate learnt low stayed low (1.2/s against 30/s).
        self._measured = False
        self._catch_up_to = self._good = None
        self._first = (now, succeeded)

    def learn(self, seconds: float, succeeded: int, rate: float | None, now: float = 0.0) -> float | None:
        """The effective rate after a throttle ``seconds`` after the last cool-down ended (at ``now``)."""
        if self._first is None:
            self._first = (now, succeeded)
        seconds = min(seconds, now - self._window_from)
        gained, self._succeeded = succeeded - self._succeeded, succeeded
        from_wave, self._from_wave = self._from_wave, False
        if from_wave and rate is not None and 0 < seconds < SUSTAINED_S:
            deep = max(MIN_RATE, rate * WAVE_OVERSHOOT)
            drained = None if self._burst is None else (gained - self._burst) / seconds * DRAIN_MARGIN
            log.info("A rate measured from a cool-down's answers was throttled within %.2fs: it read high.", seconds)
            if drained is not None and drained > deep:  # never above a cut of RATE_BACKOFF: the rate was throttled
                self._catch_up_to = min(drained, rate * RATE_BACKOFF)
                log.info(
                    "The API served %d items since the cool-down (%.1f/s beyond a burst of %d): climbing back to %.1f/s.",
                    gained, drained / DRAIN_MARGIN, self._burst, self._catch_up_to,
                )
            return deep
        if gained < MIN_LEARNT or seconds <= 0:  # throttled before much succeeded: nothing learnt from this window
            if rate is None:
                return self._served_since_first(now, succeeded)
            return max(MIN_RATE, rate * RATE_CUT[0])
        self._burst = gained if self._burst is None else min(self._burst, gained)
        if rate is not None and not self._measured:  # a slow start (or the configured rate) overshot
            self._measured = True
            self._catch_up_to = rate * RATE_BACKOFF
            return max(MIN_RATE, rate * SLOW_START_CUT)
        self._catch_up_to = None
        sent = gained / max(seconds, GROW_INTERVAL_S / 10)
        if rate is not None:
            sent = min(sent, rate)
        served = (gained - self._burst) / seconds * RATE_MARGIN
        log.info(
            "The API served %d items in the %.2fs since the last cool-down (%.1f/s; %.1f/s beyond a burst of %d).",
            gained, seconds, gained / seconds, served / RATE_MARGIN, self._burst,
        )
        if self._measured and rate is not None:
            return max(MIN_RATE, self._backed_off(seconds, rate, sent))
        # Below half of what was sent, the window said too little (the first one holds only the burst).
        self._measured = self._measured or served >= sent * RATE_CUT[0]
        return max(MIN_RATE, min(max(served, sent * RATE_CUT[0]), sent * RATE_CUT[1]))

    def _served_since_first(self, now: float, succeeded: int) -> float | None:
        """With no rate yet and no window to measure one: what the API served since items began to start, at least
        ``MIN_WINDOW_S`` ago, to slow-start from; None before that. A strict API (a burst of 1) serves one item a
        cool-down and refuses the next at once, so no window ever held ``MIN_LEARNT`` successes: no rate was set,
        the concurrency fell to 1, and that one lane went at 1 item a Retry-After against an API at 5/s."""
        assert self._first is not None
        since, before = self._first
        if now - since < MIN_WINDOW_S or succeeded == before:  # nothing served yet: nothing to start from (a 0.1/s
            return None  # floor took a run the API had refused three times 10 s an item)
        served = (succeeded - before) / (now - since)
        log.info("Too few items succeeded between cool-downs to measure the API's rate: from the %.2f/s it served "
                 "since the run began.", served)  # fmt: skip
        return max(MIN_RATE, served)

    def _backed_off(self, seconds: float, rate: float, sent: float) -> float:
        """The rate after a throttle of a measured ``rate``, ``seconds`` after the last cool-down.

        Probing slowly from a measured rate overshot a little: back off a little, and never below most of a rate
        the API served for a while, so a throttle from jitter below its rate (a busy machine bunches requests)
        does not ratchet the rate down. Only a long window measures anything (a short one is a handful of items,
        and its measure is biased low: the burst is spent only at its end): after one, the cut is from what the
        API served over it.
        """
        if seconds < SUSTAINED_S:
            cut = rate * RATE_BACKOFF
            if self._good is not None:
                if rate <= self._good * FLOOR * 1.01:  # throttled at the floor again: the floor gives way, slowly
                    self._good *= FLOOR_DECAY
                cut = max(cut, self._good * FLOOR)
            return cut
        self._good = sent  # what the API served for a while (less than the rate in force if the items were slower)
        # What the run sent over the window is less than the rate in force when part of it was the climb after the
        # last cool-down, or the job's own failures took start slots; the growth of RATE_STEP never made that up,
        # so throttles (an outage's 503s) every 20-40 s ratcheted the rate down: 308/s to 99/s in ten minutes.
        # As CUBIC returns to the window it lost at, climb back quickly to most of the rate in force: a throttle
        # of the pace itself comes again within SUSTAINED_S, and cuts from there.
        self._catch_up_to = rate * RATE_BACKOFF
        return sent * RATE_BACKOFF

    @staticmethod
    def forgets(ceiling: float | None, quiet_s: float) -> bool:
        """Whether a learnt rate is forgotten after ``quiet_s`` seconds without a throttle, under a configured rate
        ``ceiling`` (None: no limit, the only case a learnt rate is forgotten in)."""
        return ceiling is None and quiet_s >= RATE_MEMORY_S

    def grown(self, rate: float | None, ceiling: float | None, quiet_s: float, per_s: float) -> float | None:
        """One step up from ``rate`` after ``quiet_s`` seconds without a throttle, ``per_s`` items a second
        succeeding; None is no limit."""
        if rate is None:
            return None
        if RateDiscovery.forgets(ceiling, quiet_s):
            return None
        if per_s < rate * USED:  # the run does not use this rate (the items, or this machine, are slower)
            return rate
        if self._measured:
            grown = rate * (1 + RATE_STEP * max(1.0, quiet_s / PROBE_AFTER_S))
            if self._catch_up_to is not None and rate < self._catch_up_to:
                grown = max(grown, min(self._catch_up_to, rate * (1 + CATCH_UP)))
        else:
            grown = rate * SLOW_START
        return grown if ceiling is None else min(ceiling, grown)


def _describe(limits: Limits) -> str:
    rate = "" if limits.rate_limit is None else f", rate_limit={per_second(limits.rate_limit)}"
    return f"concurrency={limits.concurrency}{rate}"


def _wait_text(wait: float) -> str:
    """A wait for the log: ``120s``, ``1.16e+295 days`` for an absurd one (``Throttled(1e300)`` printed 301 digits of
    seconds), or "for ever" for an infinite ``Retry-After`` (``Throttled(math.inf)``)."""
    if wait == math.inf:
        return "for ever"
    return f"{wait:.0f}s" if wait < 100_000 else f"{wait / 86_400:.3g} days"
