"""The circuit breaker: when most of the last items failed, stop starting new ones and take those failures back.

An outage or a dead credential turns the rest of the source into failures. The breaker watches final
failures (the retry scheduler calls ``Tally.watch``: the success path pays nothing) and the count of
successes between them. When at least ``breaker_failure_rate`` of the last ``breaker_window`` settled
items failed, it *opens*: the executor is paused and the failures in that window are taken back as
not final (``Tally.unfail``), held by the retry scheduler until the breaker closes. On a terminal the
pause shell opens with the reason; elsewhere the breaker probes: after a cool-down it lets one item
through at concurrency 1; a success closes it (concurrency doubles back per round of successes), a
failure opens it again with the cool-down doubled. Past ``breaker_max_wait_s`` the run stops, resumable.
Everything here runs on the loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol, Sequence

from batchcli.journal.rundir import message_shape
from batchcli.load.configuration import Configuration
from batchcli.outcome import Failure, Tally, clip, shown

log = logging.getLogger("batchcli.breaker")

MAX_COOLDOWN_S = 600.0
"""The cool-down doubles after each failed probe, up to this."""
TAKEN_SHOWN = 20
"""How many of the items a trip takes back its log line names."""
POLL_S = 0.05
"""How often a probing or recovering breaker reads the success count (only then: never on the success path)."""

Hold = Callable[[], Callable[[], int]]
"""Holds a failed item in its retry scheduler until the breaker closes; returns the scheduler's release."""


class BreakerHost(Protocol):
    """What the breaker steers: the driver's ``Run``."""

    @property
    def executor(self) -> Any:
        """The running executor (``hold_concurrency``, ``effective_concurrency``), or None before it starts."""

    def breaker_changed(self) -> None:
        """The breaker opened or closed: pause or resume the executor (loop thread)."""

    def breaker_tripped(self, reason: str) -> bool:
        """Tell the user; True when a person will decide (the pause shell opens), so no probing."""

    def breaker_gave_up(self, message: str) -> None:
        """The breaker stayed open too long: stop the run, resumable."""


@dataclass
class BreakerCounts:
    """What the breaker did in this session, for ``summary.json`` and ``show``."""

    trips: int = 0
    """Times it opened because too many items failed."""
    probes: int = 0
    """Items let through to test whether the cause is gone."""
    cooldowns: int = 0
    """Cool-downs waited out before a probe."""
    open_s: float = 0.0
    """Seconds spent open (no new item started)."""


class Breaker:
    """One run's circuit breaker; ``watch`` is the tally's hook for every failed attempt."""

    def __init__(
        self,
        config: Configuration,
        tally: Tally,
        host: BreakerHost,
        loop: asyncio.AbstractEventLoop,
        run_dir: Any = "RUN_DIR",
        clock: Callable[[], float] = time.monotonic,
        earlier_errors: Sequence[tuple[str, str]] = (),
        held_before: dict[int, tuple[str, str]] | None = None,
    ) -> None:
        self.window = config.breaker_window
        self.threshold = max(1, math.ceil(config.breaker_failure_rate * config.breaker_window))
        """Final failures inside the window that open the breaker."""
        self.base_cooldown_s = config.breaker_cooldown_s
        self.max_wait_s = config.breaker_max_wait_s
        self.counts = BreakerCounts()
        self.state = "closed"
        """closed, open (nothing starts), or probing (one item at a time, deciding)."""
        self.reason = ""
        """Why it last opened: "50 of the last 50 items failed: ConnectionRefusedError: ..."."""
        self._run_dir = run_dir
        self._tally = tally
        self._host = host
        self._loop = loop
        self._clock = clock
        self._failures = 0
        """Final failures seen (never taken back): with ``succeeded``, a position in the settled sequence."""
        self._base = 0
        """The position where the current window starts counting (the breaker last closed)."""
        self._recent: deque[tuple[int, Failure, Hold]] = deque()
        """Final failures inside the window: position, failure, how to hold it."""
        self._releases: set[Callable[[], int]] = set()
        self._cooldown_s = self.base_cooldown_s
        self._opened_at: float | None = None
        """When this outage's first trip happened (monotonic); None while closed."""
        self._episode_open_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._held = 0
        """The cap the breaker holds the concurrency at (``hold_concurrency``) since a probe; 0 for none."""
        self._mark = 0
        self._ended = False
        self._earlier = earlier_errors
        """A retry's items, by ordinal: how each failed before (type, message shape). Failing the same way again
        says the item is still bad, not that the service went down (``watch``)."""
        self._held_as: dict[int, tuple[str, str]] = dict(held_before or {})
        """Items the breaker took back, by ordinal: how they failed (as ``_earlier``), until they fail again; at the
        start, those it held when the run's last session stopped (``Journal.held_errors``)."""
        self._trusted_after = -1
        """``_held_as`` says an item is bad only once more items than this have succeeded: a probe's success, or
        one after the user closed the breaker (``close_by_user``), shows the service works."""
        self._suspects: deque[tuple[int, Failure, Hold]] = deque(maxlen=max(1, self.window))
        """Held items that failed again as before (``_as_before``), final, with the success count when they failed:
        the API answered them, or went down again (a flapping API). A trip taken before ``breaker_window`` items
        succeeded since takes them back too."""
        self._last_probe = False
        """The probe before ``breaker_max_wait_s`` is scheduled or made: the next failure gives up."""

    @property
    def blocking(self) -> bool:
        """True while no new item may start."""
        return self.state == "open"

    def _position(self) -> int:
        return self._tally.succeeded + self._failures

    # The hook, called by the retry scheduler.

    def watch(self, failure: Failure | None, hold: Hold | None) -> None:
        """A failed attempt: ``failure`` when the item finally failed (``hold`` takes it back), else None."""
        if self._ended:
            # The run is stopping. An item that was in flight when the breaker opened is no more final now than
            # it was before the stop: taken back, it stays unprocessed for the resume (its hold would never end).
            if failure is not None and self.state != "closed":
                self._tally.unfail(failure)
            return
        if failure is None:
            if self.state == "probing":
                self._reopen("the probe attempt failed")
            return
        self._failures += 1
        assert hold is not None
        if self.state == "closed" and (self._earlier or self._held_as) and self._as_before(failure):
            # Final, as it was: bad records must not hold the run, and be its probes, for an hour. Unless the API is
            # down again (it flaps): a trip before the window's worth of items succeeded takes it back (``_trip``).
            self._suspects.append((self._tally.succeeded, failure, hold))
            return
        if self.state != "closed":  # started before the breaker opened, or the probe itself: not final
            self._take_back(failure, hold)
            if self.state == "probing":
                self._reopen(f"the probe failed: {shown(failure.error_type)}: {_first_line(failure.error_message)}")
            return
        position = self._position()
        recent = self._recent
        recent.append((position, failure, hold))
        while recent and recent[0][0] <= position - self.window:
            recent.popleft()
        if len(recent) >= self.threshold:
            span = min(self.window, position - self._base)
            self._trip(f"{len(recent)} of the last {span} items failed: {shown(failure.error_type)}: {_first_line(failure.error_message)}")

    def _as_before(self, failure: Failure) -> bool:
        """Whether an item failed as it did before (the same type, the same message but for its numbers): when the
        breaker held it, or in the run a retry comes from. Settled, but not counted toward the window: after a probe
        succeeded, the held bad records failing again in a row tripped the breaker again, on a healthy API."""
        ordinal = failure.ordinal
        before = self._held_as.pop(ordinal, None)
        if before is not None and self._tally.succeeded <= self._trusted_after:
            # The user closed the breaker and nothing has succeeded since (a fix that did not work): the item
            # counts, as a failure of the service. Final and uncounted, the held items became final failures with
            # no probe succeeding, and a resume with the real fix never redid them.
            return False
        now = (failure.error_type, message_shape(failure.error_message))
        if before == now:
            return True
        # As in the run a retry comes from counts too: a retry stopped while its API was gone (refused connections),
        # resumed with the API back, fails as its inputs did at first, not as they did when the breaker held them.
        return 0 <= ordinal < len(self._earlier) and self._earlier[ordinal] == now

    # Opening.

    def _trip(self, reason: str) -> None:
        self.counts.trips += 1
        self._tally.breaker_trips = self.counts.trips
        self.reason = reason
        recent, self._recent = self._recent, deque()
        taken = [failure.ordinal for _, failure, hold in recent if self._take_back(failure, hold)]
        succeeded, suspects = self._tally.succeeded, self._suspects
        while suspects:
            since, failure, hold = suspects.popleft()
            # Unless the API served a window's worth of items after it: then it is a bad record.
            if succeeded - since < self.window and self._take_back(failure, hold):
                taken.append(failure.ordinal)
        if self._opened_at is None:
            self._opened_at = self._clock()
        self._cancel_timer()
        self._open()
        shown_ordinals = ", ".join(f"#{ordinal}" for ordinal in sorted(taken)[:TAKEN_SHOWN])
        more = f" and {len(taken) - TAKEN_SHOWN:,} more" if len(taken) > TAKEN_SHOWN else ""
        log.warning(
            "Circuit breaker open: %s. No new item starts; the %d failed item(s) of the window will be processed "
            "again%s.",
            reason,
            len(taken),
            f" ({shown_ordinals}{more}: their failures are in this log, not in failed.jsonl)" if taken else "",
        )
        if not self._host.breaker_tripped(reason):
            self._schedule_probe()

    def _take_back(self, failure: Failure, hold: Hold) -> bool:
        if self._tally.unfail(failure):
            self._releases.add(hold())
            self._held_as[failure.ordinal] = (failure.error_type, message_shape(failure.error_message))
            return True
        return False

    def _open(self) -> None:
        self._set_state("open")
        self._episode_open_since = self._clock()
        self._host.breaker_changed()

    def _schedule_probe(self) -> None:
        assert self._opened_at is not None
        left = self.max_wait_s - (self._clock() - self._opened_at)
        if self._last_probe or left <= 0:
            self._timer = self._loop.call_later(max(left, 0.0), self._give_up)
            return
        wait = self._cooldown_s
        if wait >= left:
            # The last probe, early enough to answer (a base cool-down) before the max wait: giving up when the next
            # cool-down would not end in time said "the cause did not go away" with nothing tried for up to 10 minutes.
            wait = max(0.0, left - self.base_cooldown_s)
            self._last_probe = True
        log.info("Circuit breaker: cooling down for %gs before letting one item through.", wait)
        self.counts.cooldowns += 1
        self._tally.breaker_probe_at = time.monotonic() + wait  # the display's clock
        self._timer = self._loop.call_later(wait, self._probe)

    def _out_of_time(self) -> bool:
        """Open (probing included) for ``breaker_max_wait_s``: give up. A probe that hangs (no client timeout, no
        ``item_timeout_s``) kept the run probing for as long as it hung."""
        if self._opened_at is not None and self._clock() - self._opened_at >= self.max_wait_s:
            self._give_up()
            return True
        return False

    def _reopen(self, why: str) -> None:
        log.warning("Circuit breaker: %s; open again.", why)
        self._cancel_timer()
        self._cooldown_s = min(self._cooldown_s * 2, max(MAX_COOLDOWN_S, self.base_cooldown_s))  # a longer base stays
        self._open()
        self._schedule_probe()

    # Probing and closing.

    def _probe(self) -> None:
        self._timer = None
        executor = self._host.executor
        if executor is None or self._ended or self._out_of_time():
            return
        if self._tally.in_flight and not self._tally.exhausted:
            # Items started before the breaker opened still run: one of them succeeding (its call answered before
            # the outage, the rest of its work slow) closed the breaker with the API still down, and at
            # concurrency 1 they kept the probe itself from starting. The probe, a new item, waits for them; what
            # they settle counts as before (a failure is taken back, a success is no probe). Not once the source is
            # used up: the held items are all that is left to probe with, and a success of those in flight is the
            # only sign left that the API works (bad records ending a healthy run's source held every probe).
            self._tally.breaker_probe_at = 0.0
            self._timer = self._loop.call_later(POLL_S, self._probe)
            return
        self.counts.probes += 1
        self._add_open_time()
        self._set_state("probing")
        self._mark = self._tally.succeeded
        self._hold(executor, 1)
        # A new item is the probe while the source has one: the held ones failed already, and when they are bad
        # records (fast 400s settling before a slow API's successes) probing them stopped a run on a healthy API.
        held = self._releases_now() if self._tally.exhausted else 0
        log.info(
            "Circuit breaker: letting one item through (probe %d)%s.", self.counts.probes,
            f"; the {held} held item(s) go back to be processed first" if held else "",
        )  # fmt: skip
        self._host.breaker_changed()
        self._timer = self._loop.call_later(POLL_S, self._check_probe)

    def _check_probe(self) -> None:
        self._timer = None
        if self.state != "probing" or self._ended or self._out_of_time():
            return
        tally = self._tally
        if tally.succeeded > self._mark:
            self._close("a probe succeeded")
            return
        if self._releases and tally.exhausted and not tally.in_flight:  # no new item left to probe with
            held = self._releases_now()
            log.info("Circuit breaker: no new item left to probe with; the %d held item(s) go back to be processed.", held)
        self._timer = self._loop.call_later(POLL_S, self._check_probe)

    def close_by_user(self) -> None:
        """The user resumed the run (left the pause shell or attach, or `ctl resume`): close, and process the held items again."""
        if self.state != "closed":
            executor = self._host.executor
            if executor is not None:  # the run goes on at its own concurrency, not at a probe's 1
                self._hold(executor, 0)
            self._trusted_after = self._tally.succeeded
            self._close("the run was resumed: the pause shell was left, or ctl resume")

    def _close(self, why: str) -> None:
        self._cancel_timer()
        if self.state == "open":
            self._add_open_time()
        self._set_state("closed")
        self._opened_at = None
        self._last_probe = False
        self._cooldown_s = self.base_cooldown_s
        self._base = self._position()
        count = self._releases_now()  # none when a probe ran out of new items: they went back then
        if count:
            log.warning("Circuit breaker closed (%s): %d held item(s) go back to be processed.", why, count)
        else:
            log.warning("Circuit breaker closed (%s).", why)
        self._host.breaker_changed()
        if self._held:
            self._mark = self._tally.succeeded
            self._timer = self._loop.call_later(POLL_S, self._grow)

    def _grow(self) -> None:
        """Double the concurrency after each round of as many successes, back up to what it was."""
        self._timer = None
        executor = self._host.executor
        if executor is None or self.state != "closed" or self._ended:
            return
        current, target = self._held, executor.effective_concurrency  # the target follows `ctl set` and throttles
        if not current or current >= target:
            self._hold(executor, 0)
            return
        if self._tally.succeeded - self._mark >= current:
            new = min(current * 2, target)
            self._hold(executor, 0 if new >= target else new)
            self._mark = self._tally.succeeded
            log.info("Circuit breaker: concurrency back up to %d of %d.", new, target)
            if new >= target:
                return
        self._timer = self._loop.call_later(POLL_S, self._grow)

    def _hold(self, executor: Any, concurrency: int) -> None:
        """Cap the run's concurrency at ``concurrency`` (0: lift the cap), leaving the user's limits as they are."""
        self._held = concurrency
        executor.hold_concurrency(concurrency or None)

    def _set_state(self, state: str) -> None:
        self.state = self._tally.breaker_state = state
        self._tally.breaker_probe_at = 0.0

    def _releases_now(self) -> int:
        releases, self._releases = self._releases, set()
        return sum(release() for release in releases)

    # Giving up and ending.

    def _give_up(self) -> None:
        self._timer = None
        if self._ended:
            return
        self._add_open_time()
        self._ended = True
        message = (
            f"The circuit breaker stayed open for {self.max_wait_s:g}s (breaker_max_wait_s) and the cause did not "
            f"go away ({self.reason}). Stopping; nothing is lost: the held items stay unprocessed. Fix the cause, "
            f"then resume with: batchcli resume {self._run_dir} (add -p name=value to change a param, e.g. a new token)."
        )
        if self._tally.exhausted:
            message += (
                " Only the items it holds are left; if they are bad records rather than an outage, the resume makes "
                "those that fail again as they did final failures, for batchcli retry once they are fixed."
            )
        log.info("%s", message)  # the log file; the console shows it as the run's last words
        self._host.breaker_gave_up(message)

    def held_errors(self) -> dict[int, tuple[str, str]]:
        """The items held now (and others taken back since, which have settled), and how each failed: for the next
        session, which reads one failing again as before as a bad record (``Journal.finish``)."""
        return dict(self._held_as)

    def end(self) -> None:
        """The run stops or ends: no more timers, no more decisions."""
        if self.state == "open":
            self._add_open_time()
        self._ended = True
        self._cancel_timer()

    def counts_now(self) -> dict[str, float]:
        """The counts so far, with the open time of an episode still going: a session killed while the breaker was
        open (``kill -9``) lost that time from the run's ``open_s``, its live state holding closed episodes only."""
        counts = asdict(self.counts)
        since = self._episode_open_since
        if since is not None:
            counts["open_s"] += self._clock() - since
        return counts

    def _add_open_time(self) -> None:
        if self._episode_open_since is not None:
            self.counts.open_s += self._clock() - self._episode_open_since
            self._episode_open_since = None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def breaker_note(tally: Tally, now: Callable[[], float] = time.monotonic) -> str:
    """The breaker's state for the progress display: empty while it never opened."""
    state = tally.breaker_state
    if state == "open":
        left = tally.breaker_probe_at - now()
        probing = tally.breaker_probe_at and left > 0 and not tally.ended  # no probe after the run's end
        return "breaker open" + (f": probe in {math.ceil(left)}s" if probing else "")
    if state == "probing":
        return "breaker probing"
    if tally.breaker_trips:
        return f"breaker closed after {tally.breaker_trips} trip" + ("s" if tally.breaker_trips > 1 else "")
    return ""


def _first_line(message: str, width: int = 160) -> str:
    """The first line of an error message, clipped: a reason stays one line."""
    lines = message.strip("\r\n").splitlines()
    return clip(shown(lines[0]) if lines else "", width)
