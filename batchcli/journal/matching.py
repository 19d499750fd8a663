"""Which failures of a run ``retry`` and ``show --failures`` take: by error type, message, time, and how many.

Failure records name the exception's class (``module.Class``, ``Class`` for built-ins), not its bases.
``--error-type`` matches as retries do, subclasses included: a recorded type matches when it is the
type named (by its qualified name or its class name), or when it resolves to a class that is a
subclass of it. A recorded class resolves from ``sys.modules``: built-ins always, the project's own
classes once the project is loaded (``retry`` loads it anyway; ``show`` loads it only for this,
and only for a run directory you own, as ``retry`` requires).
"""

from __future__ import annotations

import builtins
import importlib
import re
import math
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from batchcli.errors import UsageError
from batchcli.journal.rundir import query, stream

FAILURE_COLUMNS = (
    "rowid, ordinal, item_json, error_type, error_message, attempts, first_failed_at, failed_at, item IS NOT NULL, session"
)


@dataclass(frozen=True)
class FailureFilter:
    """The ``--error-type``, ``--match``, ``--since``, ``--until`` and ``--limit`` options of ``retry`` and ``show``."""

    error_type: str | None = None
    """A class name, ``module.Class``, or a built-in exception; subclasses match."""
    pattern: re.Pattern[str] | None = None
    """Searched for in the error message."""
    since: float | None = None
    """Epoch seconds: only items that (finally) failed at or after this."""
    until: float | None = None
    """Epoch seconds: only items that failed before this."""
    limit: int | None = None
    """At most this many: the first in source order, the earliest session first (not by the time they failed)."""
    left_out: frozenset[tuple[str, int, int]] = frozenset()
    """Failures, as (run directory name, session, ordinal), that a later retry processed successfully
    (``later_retries``): ``retry`` leaves them out before the other options apply. Not one of the user's options
    (``active``). Named by run as well, since a group's shards number their failures alike."""

    @property
    def active(self) -> bool:
        """True when any option narrows the failures."""
        return any(v is not None for v in (self.error_type, self.pattern, self.since, self.until, self.limit))

    def describe(self) -> str:
        """The options as they were given, for messages."""
        parts = []
        if self.error_type is not None:
            parts.append(f"--error-type {self.error_type}")
        if self.pattern is not None:
            parts.append(f"--match {shlex.quote(self.pattern.pattern)}")  # as a shell takes it back: repr doubled \\
        if self.since is not None:
            parts.append(f"--since {_when(self.since)}")
        if self.until is not None:
            parts.append(f"--until {_when(self.until)}")
        if self.limit is not None:
            parts.append(f"--limit {self.limit}")
        return " ".join(parts)


@dataclass(frozen=True)
class FailureRow:
    """One recorded failure, as the journal keeps it (read without unpickling)."""

    rowid: int
    ordinal: int
    item_json: str
    error_type: str
    error_message: str
    attempts: int
    first_failed_at: float
    failed_at: float
    saved: bool
    """False when the input could not be pickled: ``retry`` cannot have it."""
    session: int
    """The session of the run that recorded it (with the run and ``ordinal``, what names it in ``FailureFilter.left_out``)."""


def failure_filter(
    error_type: str | None, match: str | None, since: str | None, until: str | None, limit: int | None
) -> FailureFilter:
    """The options checked; a bad value is a ``UsageError`` naming it and the fix."""
    pattern = None
    if match is not None:
        try:
            pattern = re.compile(match)
        except re.error as error:
            raise UsageError(
                f"--match {match!r} is not a regular expression ({error}). Fix the pattern (Python's re syntax): "
                r"escape a literal ( [ . * + ? with a backslash, e.g. --match 'timeout \(30s\)'."
            ) from None
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit} takes no failures. Give a positive number, e.g. --limit 10, or leave it out.")
    if error_type is not None and not error_type.strip():
        raise UsageError("--error-type '' names no type. Give an exception class, e.g. --error-type TimeoutError.")
    start, end = _moment("--since", since), _moment("--until", until)
    if start is not None and end is not None and start >= end:
        raise UsageError(
            f"--since {since} is not before --until {until}, so no failure can match. Swap them, or drop one."
        )
    return FailureFilter(error_type.strip() if error_type else None, pattern, start, end, limit)


def _moment(option: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(
            f"{option} {value!r} is not an ISO date or time. Give e.g. {option} 2024-05-01 or {option} "
            "2024-05-01T14:30 (local time, unless it ends with an offset such as +00:00)."
        ) from None
    try:
        epoch = moment.timestamp()  # a naive time is local time
        _when(epoch)  # and back, as the filter is described
    except (ValueError, OverflowError, OSError):  # 0001-01-01 in a zone east of UTC, 9999-12-31 west of it
        raise UsageError(
            f"{option} {value!r} is a time this machine cannot count in its local time (too near year 1 or "
            f"year 9999). Give a nearer one, e.g. {option} 2024-05-01, or leave {option} out."
        ) from None
    return epoch


def _micros(epoch: float) -> int:
    """``epoch`` in whole microseconds, rounded as ``failed.jsonl`` and ``show`` write a time: a failure's time copied
    from there and given to ``--since`` compares equal to it (as floats, about half of them fell a hair off)."""
    second = math.floor(epoch)
    return second * 1_000_000 + round((epoch - second) * 1e6)


def _when(epoch: float) -> str:
    """Local time, to the second, or to the microsecond when it has a fraction: the printed "Retry them with:" command
    must select what the filter did."""
    moment = datetime.fromtimestamp(epoch)
    return moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")


def recorded_types(run_dir: Path) -> list[str]:
    """The exception types of a run's failures, most frequent first."""
    return [t for (t,) in query(run_dir, "SELECT error_type FROM failures GROUP BY 1 ORDER BY count(*) DESC, 1")]


def group_types(run_dirs: list[Path]) -> set[str]:
    """The recorded exception types of every run in ``run_dirs`` (a group's shards): ``--error-type`` takes a type
    recorded by any of them (checked against one shard at a time, a type the others lacked was refused)."""
    return {t for run_dir in run_dirs for t in recorded_types(run_dir)}


def matching_failures(
    run_dir: Path,
    wanted: FailureFilter,
    load: Callable[[], None] | None = None,
    keep: int | None = None,
    types: set[str] | None = None,
    unchecked: dict[str, str] | None = None,
    into: Callable[[FailureRow], None] | None = None,
) -> tuple[list[FailureRow], int, int]:
    """The failures of ``run_dir`` that ``wanted`` takes, in (session, ordinal) order (only the first ``keep``
    when given), how many it takes, and how many there are in all. ``types``: the recorded types a name given to
    ``--error-type`` must be among (``group_types``: a group's, over all its shards); this run's when None.

    The rows are read a batch at a time and only those kept are held: ``show --failures`` of a run with
    300,000 failures held all of them (220 MB) to print 50. ``load`` imports the run's project, called at
    most once when a recorded type's module is not imported yet (``show``); ``retry`` has loaded it already.
    ``unchecked`` gets the recorded types that could not be checked for a subclass of ``--error-type`` (``TypeMatch``).
    ``into`` gets each row taken instead, and none is kept: ``retry --match`` of a million failures held them all.
    """
    since = None if wanted.since is None else _micros(wanted.since)
    until = None if wanted.until is None else _micros(wanted.until)
    if wanted.error_type is None:
        is_type = None
    else:
        is_type = TypeMatch(wanted.error_type, set(recorded_types(run_dir)) if types is None else types, load)
    chosen: list[FailureRow] = []
    matched = total = 0
    left_out = wanted.left_out
    name = run_dir.resolve().name if left_out else ""
    for values in stream(run_dir, f"SELECT {FAILURE_COLUMNS} FROM failures ORDER BY session, ordinal"):
        if wanted.limit is not None and matched >= wanted.limit:  # the rest only counts: SQLite counts it
            total = query(run_dir, "SELECT count(*) FROM failures")[0][0]
            break
        total += 1
        row = FailureRow(*values)
        if left_out and (name, row.session, row.ordinal) in left_out:
            continue
        if is_type is not None and not is_type(row.error_type):
            continue
        if wanted.pattern is not None and not wanted.pattern.search(row.error_message):
            continue
        if since is not None and _micros(row.failed_at) < since:
            continue
        if until is not None and _micros(row.failed_at) >= until:
            continue
        matched += 1
        if into is not None:
            into(row)
        elif keep is None or len(chosen) < keep:
            chosen.append(row)
    if unchecked is not None and is_type is not None:
        unchecked.update(is_type.unchecked)
    return chosen, matched, total


class TypeMatch:
    """``--error-type NAME``: does a recorded type name match it (subclasses included)?"""

    def __init__(self, name: str, recorded: set[str], load: Callable[[], None] | None) -> None:
        self.name = name
        self._load = load
        self._cache: dict[str, bool] = {}
        self.unchecked: dict[str, str] = {}
        """Recorded types, other than the one named, whose class could not be found to check it for a subclass, and
        why: they match by name only (a project that no longer loads, a class renamed since)."""
        self.wanted = _resolve(name, importing=True)
        if self.wanted is None and not any(self._named(r) for r in recorded):
            seen = ", ".join(sorted(recorded)[:8]) or "none"
            raise UsageError(
                f"--error-type {name!r} is not an exception type batchcli can find: not a built-in exception, not "
                f"importable as module.Class, and no failure of this run has that type (its types: {seen}). Give one "
                "of those, or a base class such as OSError or ValueError (subclasses match)."
            )

    def __call__(self, recorded: str) -> bool:
        known = self._cache.get(recorded)
        if known is None:
            known = self._cache[recorded] = self._named(recorded) or self._subclass(recorded)
        return known

    def _named(self, recorded: str) -> bool:
        return recorded == self.name or recorded.endswith("." + self.name)

    def _subclass(self, recorded: str) -> bool:
        if self.wanted is None:
            return False
        cls = _resolve(recorded, importing=False)
        if cls is None and self._load is not None:
            load, self._load = self._load, None
            try:
                load()
            except Exception as error:  # the project no longer loads: names still match, and show says so
                lines = str(error).strip().splitlines()  # a user's traceback ends with its exception's line
                why = lines[-1] if lines else type(error).__name__
                self._load_error = f"the run's project does not load here: {why if len(why) <= 200 else why[:199] + '…'}"
            cls = _resolve(recorded, importing=False)
        if cls is None:
            self.unchecked[recorded] = self._load_error
            return False
        return issubclass(cls, self.wanted)

    _load_error = "no class of that name can be imported"


def _resolve(name: str, *, importing: bool) -> type[BaseException] | None:
    """The exception class ``name`` names: a built-in, or ``module.Class`` (imported only when ``importing``)."""
    found: Any = None
    if "." not in name:
        found = getattr(builtins, name, None)
    else:
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:cut])
            module = sys.modules.get(module_name)
            if module is None and importing:
                try:
                    module = importlib.import_module(module_name)
                except Exception:
                    module = None
            if module is None:
                continue
            found = module
            for part in parts[cut:]:
                found = getattr(found, part, None)
            break
    return found if isinstance(found, type) and issubclass(found, BaseException) else None
