"""A run as ``batchcli watch`` sees it: the journal's counts, the recent rate and the live state of each flush.

Read-only, through ``rundir.query`` (never a pickle, never a lock): watching a run cannot slow it down
beyond what any reader of a WAL database costs, and works on a finished run too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from batchcli.errors import JournalError
from batchcli.journal.rundir import RunInfo, query, read_run

RATE_WINDOW_S = 10.0
"""The current rate is the items settled over this many seconds of the journal's timeline."""
GROUPS_SHARE = 0.1
"""The share of its time ``watch`` may spend grouping failures while the run goes. Grouping reads every failure
row and shapes its message (300,000 failures: 1.6 s), so with many failures the groups are made again less often
than the counts, which stay fresh; the screen says how old they are."""


@dataclass(frozen=True)
class Snapshot:
    """One frame of ``watch``: what the journal holds now."""

    info: RunInfo
    """Counts, status and sessions."""
    rate: float | None
    """Items settled per second: over the last ``RATE_WINDOW_S`` while running, over the run once it ended."""
    live: dict[str, Any]
    """The live session's state at its last flush (in flight, retrying, limits, cool-down, breaker, paused);
    empty when the run is not running or its batchcli wrote none."""
    groups: list[tuple[int, str, str]]
    """Failure groups, most frequent first: (count, error type, message with its numbers as N)."""
    groups_age_s: float = 0.0
    """How long ago ``groups`` were read (a ``Watcher`` reads them less often when reading them is slow)."""

    @property
    def running(self) -> bool:
        """True while a process runs the run."""
        return self.info.status == "running"

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate, when the total is known; None while a throttle's cool-down holds every
        start (the rate before it says nothing of when the run ends), as on the run's own display."""
        left, cooling = self.info.unprocessed, self.live.get("cooling_down_s")
        if left is None or not self.rate or (isinstance(cooling, (int, float)) and cooling > 0):
            return None
        return max(left, 0) / self.rate


def snapshot(run_dir: Path, groups: int = 5) -> Snapshot:
    """The run in ``run_dir`` now; a ``JournalError`` when it is not a readable run directory."""
    return Watcher(run_dir, groups).snapshot()


class Watcher:
    """Snapshots of one run, one after another: the failure groups are read again only once the time since
    they were last read is ``1 / GROUPS_SHARE`` times what reading them took (always once the run has ended)."""

    def __init__(self, run_dir: Path, groups: int = 5, clock: Callable[[], float] = time.monotonic) -> None:
        self.run_dir = run_dir
        self._count = groups
        self._clock = clock
        self._groups: list[tuple[int, str, str]] | None = None
        self._read_at = 0.0
        self._next_at = 0.0

    def snapshot(self) -> Snapshot:
        """The run now; a ``JournalError`` when it is not a readable run directory."""
        run_dir = self.run_dir
        info = read_run(run_dir)
        live: dict[str, Any] = {}
        rate: float | None
        running = info.status == "running"
        if info.starting:  # a resume loading the project: the newest session's frame and rate are the ended one's
            rate = None  # (it read "stopping" at 3.0/s with an ETA while nothing ran)
        elif running:
            rate = recent_rate(run_dir)
            live = _live_state(run_dir)
        else:
            rate = info.rate
        now = self._clock()
        if self._groups is None or not running or now >= self._next_at:
            found = query(
                run_dir,
                "SELECT count(*), error_type, shape(error_message) FROM failures GROUP BY 2, 3 ORDER BY 1 DESC LIMIT ?",
                (self._count,),
            )
            self._groups = [(int(n), t, m) for n, t, m in found]
            self._read_at = now
            self._next_at = now + (self._clock() - now) / GROUPS_SHARE
        return Snapshot(info, rate, live, self._groups, now - self._read_at)


def recent_rate(run_dir: Path, window_s: float = RATE_WINDOW_S, now: float | None = None) -> float:
    """Items settled per second over the last ``window_s`` of the newest session's timeline."""
    now = time.time() if now is None else now
    rows = query(
        run_dir,
        "SELECT coalesce(sum(succeeded + failed), 0), min(t) FROM timeline"
        " WHERE session = (SELECT max(id) FROM sessions) AND t > ?",
        (now - window_s,),
    )
    settled, first = rows[0] if rows else (0, None)
    if not settled or first is None:
        return 0.0
    started = query(run_dir, "SELECT started_at FROM sessions ORDER BY id DESC LIMIT 1")[0][0]
    # A session younger than the window: its rate is over its own life, not over time before it started.
    span = min(window_s, now - started)
    return float(settled) / span if span > 0 else 0.0


def _live_state(run_dir: Path) -> dict[str, Any]:
    try:
        rows = query(run_dir, "SELECT state FROM live WHERE session = (SELECT max(id) FROM sessions)")
    except JournalError:  # a journal written before the live table: counts only
        return {}
    state = json.loads(rows[0][0]) if rows else {}
    return state if isinstance(state, dict) else {}
