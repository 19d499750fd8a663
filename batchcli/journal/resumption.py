"""``resume`` and ``retry``: what an earlier run's journal says to run again, as launches for the ``Session``.

They read the journal and give the wiring; the Session alone loads, wires and runs (``run.session``).
"""

from __future__ import annotations

import os
import sqlite3
from array import array
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from batchcli.load.environment import variable
from batchcli.load.project import recorded_by_name
from batchcli.errors import JournalError, NothingRetried, UsageError
from batchcli.journal.inputs import EarlierErrors, Pick, Progress, RetryInputs, SavedInputs, input_errors, resume_advice
from batchcli.journal.keyindex import KeySet
from batchcli.journal.writer import Journal, stable_target
from batchcli.journal.matching import FailureFilter, FailureRow, TypeMatch, matching_failures, recorded_types
from batchcli.journal.rundir import (
    JOURNAL_NAME, RetryLock, RunInfo, check_safe, has_table, hold_failures, query, quoted, read_run, retried_from,
    retried_place, stream,
)  # fmt: skip
from batchcli.journal.settled import RangeSet
from batchcli.journal.shards import Shard, shard_of
from batchcli.journal.selection import (
    Selection, check_skip_runs_there, keys_done_in, read_selection, record_selection, recorded_skips, widen_selection,
)  # fmt: skip
from batchcli.load.source import Source

if TYPE_CHECKING:
    from batchcli.load.wiring import Job, Wiring


@dataclass(frozen=True)
class Continuation:
    """How a run carries on from an earlier one; the default is a fresh run."""

    journal: Journal | None = None
    """resume: the opened (and locked) journal of the run to continue, in its own directory."""
    parent: Path | None = None
    """retry: the run whose failed inputs this run reprocesses."""
    inputs: RetryInputs | None = None
    """retry: the failed inputs it takes, copied into its journal when it starts (then ``items`` reads them)."""
    items: SavedInputs | None = None
    """A retry run (resumed, or once its journal holds ``inputs``): the inputs to process instead of the Source."""
    earlier_errors: EarlierErrors | None = None
    """A retry run: how each of ``items`` failed before, for the circuit breaker."""
    shard: Shard | None = None
    """A shard run (``--shard``): the share of the Source it processes."""
    run_dir: Path | None = None
    """A new shard run: its directory in its group (named by the shard, not by the time it started)."""
    selection: Selection | None = None
    """exec and resume: which items of the Source the run takes (``--limit``, ``--sample``, ``--skip-done-in``)."""
    done_elsewhere: KeySet = frozenset()
    """``--skip-done-in``: the item keys that succeeded in those runs."""
    held: tuple[RetryLock, ...] = ()
    """retry: its hold on the failures of the runs it retries, for the whole run (``Retry._hold``)."""


@dataclass(frozen=True)
class Notice:
    """A line ``resume`` or ``retry`` prints before running (or instead of it)."""

    text: str
    markup: bool = False
    """True when ``text`` is rich markup (a colour); else printed as is."""
    soft_wrap: bool = False


class Resume:
    """``batchcli resume RUN_DIR``: the job of a stopped or crashed run, continued in its own directory.

    A launch for the ``Session``: ``wiring()`` tells what to build (nothing when the run finished), the
    Session loads and wires it, then ``carry_on(job)`` gives what the run continues from.
    """

    dry_run = False
    """Only ``exec`` has a dry run."""

    def __init__(self, run_dir: Path, overrides: dict[str, tuple[str, ...]], *, whole_source: bool = False) -> None:
        self.run_dir = run_dir
        self.overrides = overrides
        self.whole_source = whole_source
        """``--all``: carry a limited or sampled run on to the whole source."""
        self.notices: list[Notice] = []
        self.stopped_outcome = f"the run is as it was. Resume it again with: batchcli resume {quoted(run_dir)}"
        """What a stop signal during loading leaves behind, for the message."""
        self._earlier: RunInfo | None = None
        self._journal: Journal | None = None
        self._wiring: Wiring | None = None
        self._selection: Selection | None = None
        self._widened_from: Selection | None = None
        """The trial ``--all`` widened in the journal, put back if the run does not start after all."""
        self.progress: Progress | None = None
        """Told how the check of a retry run's many inputs goes (``Session``)."""

    def wiring(self) -> tuple[Wiring, dict[str, str]] | None:
        """The run's wiring and secrets; None when it finished already (``notices`` says so)."""
        run_dir = self.run_dir
        check_safe(run_dir)
        earlier = self._earlier = read_run(run_dir)
        selection = self._selection = read_selection(run_dir)
        trial = selection is not None and selection.is_trial
        if earlier.status == "finished" and not (trial and self.whole_source):
            retry = f" Reprocess its failed inputs with: batchcli retry {quoted(run_dir)}" if earlier.failed else ""
            if trial and retry:
                retry += "."
            if trial:
                assert selection is not None
                retry += f" It was a trial run ({selection.describe()}); carry it on to the whole source with: " \
                    f"batchcli resume {quoted(run_dir)} --all"
            unused = f" The -p values given ({', '.join(sorted(self.overrides))}) were not used." if self.overrides else ""
            self.notices.append(
                Notice(
                    f"Run {str(run_dir)!r} finished already ({earlier.succeeded} succeeded, {earlier.failed} failed); "
                    f"nothing to resume.{unused}{retry}",
                    soft_wrap=True,
                )
            )
            return None
        self._journal = Journal.open(run_dir)
        try:
            again = f"batchcli resume {quoted(run_dir)}" + (" --all" if self.whole_source else "")
            wired = _rewire(earlier, self.overrides, "resume", again)
        except BaseException:
            self.abandon()
            raise
        self._wiring = wired[0]
        return wired

    def explained(self, error: UsageError) -> UsageError:
        """``error`` with where its value came from, when the run recorded it (``explained``)."""
        return explained(error, self._earlier, self.overrides, "resume")

    def carry_on(self, job: Job) -> Continuation | None:
        """Continue in the run's directory, with its journal (and a retry run's own saved inputs)."""
        assert self._journal is not None and self._earlier is not None, "wiring() first"
        if self._journal.keyed and not defines_item_key(job.source):
            raise UsageError(
                f"Run {str(self.run_dir)!r} identified its items by {type(job.source).__qualname__}.item_key(), which "
                "the Source no longer defines. Define item_key(item) again to resume this run."
            )
        shard = self._journal.shard
        if shard is not None:
            from batchcli.journal.groups import check_resumed_shard  # groups builds on this module

            assert self._wiring is not None
            check_resumed_shard(self.run_dir, shard, job, self._wiring.with_environment(job.environment))
        # A retry run's own inputs, unpickled once the project is loaded so their classes resolve.
        items = errors = None
        if self._earlier.parent:  # only those it still takes: one it processed may not load any more, and is not needed
            settled = None if self._journal.keyed else self._journal.settled_ordinals()
            advice = resume_advice(self._earlier.parent)
            items, errors = SavedInputs(self.run_dir, settled, advice), input_errors(self.run_dir)
            items.check(self.progress)
        selection = self._selection
        if selection is not None and selection.is_trial and self.whole_source:
            widen_selection(self.run_dir, selection)
            self._widened_from = selection
            self.notices.append(Notice(f"Carrying the trial run ({selection.describe()}) on to the whole source; "
                                       "the items it settled are skipped.", soft_wrap=True))
            selection = selection.widened()
        elif selection is not None and selection.is_trial:
            self.notices.append(Notice(f"Resuming a trial run ({selection.describe()}); carry it on to the whole "
                                       f"source with: batchcli resume {quoted(self.run_dir)} --all", soft_wrap=True))
        done = keys_skipped(selection, job, self.run_dir)
        return Continuation(
            journal=self._journal, items=items, earlier_errors=errors, shard=self._journal.shard, selection=selection,
            done_elsewhere=done,
        )

    def abandon(self) -> None:
        """The run will not start after all: release its journal (still a trial, if ``--all`` widened it)."""
        if self._widened_from is not None:
            record_selection(self.run_dir, self._widened_from)
            self._widened_from = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None


class Retry:
    """``batchcli retry RUN_DIR``: the same job over exactly the failed inputs of a run, in a new directory."""

    dry_run = False
    """``retry --dry-run`` lists the failures before any launch: a Retry always runs."""

    def __init__(
        self, run_dir: Path, overrides: dict[str, tuple[str, ...]], wanted: FailureFilter = FailureFilter()
    ) -> None:
        self.run_dir = run_dir
        self.overrides = overrides
        self.wanted = wanted
        """Which failures to retry (``--error-type``, ``--match``, ``--since``, ``--until``, ``--limit``)."""
        self.notices: list[Notice] = []
        self.stopped_outcome = "nothing ran and no run directory was made."
        """What a stop signal during loading leaves behind, for the message."""
        self.types: set[str] | None = None
        """The recorded types ``--error-type`` may name: a group's retry takes them from all its shards."""
        self._earlier: RunInfo | None = None
        self.progress: Progress | None = None
        """Told how the check of many inputs goes (``Session``)."""
        self.again = f"batchcli retry {quoted(run_dir)}"
        """The command as given (without -p and the filters), for messages that say how to run it again: a group's
        retry reads the record of its first failed shard (``run_dir``), and its messages name the group."""
        self._held: list[RetryLock] = []
        self._waiting = False
        """Some failures are left to a stopped retry of the run, for its resume (``LaterRetries.pending``)."""
        self._aside = False
        """Some failures' inputs were processed by another retry of the run this retry run retried (``_aside``)."""

    def _parents(self) -> list[Path]:
        """The runs whose failures this retry takes."""
        return [self.run_dir]

    def _hold(self) -> None:
        """Hold the failures of the runs retried, and of the runs they retried in turn, for the whole retry
        (``hold_failures``; ``Session`` lets them go): a second retry started while this one checked and copied a
        million inputs saw none running and took every input too, and one placed elsewhere with ``-d`` is not among
        the runs ``later_retries`` looks at."""
        self._held = hold_failures(self._parents(), "retry")

    def _later_retries(self) -> LaterRetries:
        """What later retries of the run did with its failures (a group's retry: of every shard)."""
        return later_retries(self.run_dir)

    def wiring(self) -> tuple[Wiring, dict[str, str]] | None:
        """The run's wiring and secrets; None when it has no failed inputs (``notices`` says so)."""
        run_dir = self.run_dir
        earlier = read_run(run_dir)
        if earlier.status == "running":
            raise JournalError(
                f"Run {str(run_dir)!r} is still running (pid {earlier.pid}), so its failures are not final yet. "
                f"Wait for it to end, or stop it first (Ctrl-C, or kill -INT {earlier.pid}), then retry."
            )
        if earlier.failed:
            self._hold()  # first: check_ended then sees every retry that let go of them
        try:
            return self._wired(earlier)
        except BaseException:
            self.abandon()
            raise

    def _wired(self, earlier: RunInfo) -> tuple[Wiring, dict[str, str]] | None:
        run_dir = self.run_dir
        if earlier.failed:
            later = self._later_retries()
            later.check_ended()
            self._waiting = bool(later.pending or later.aside_pending)
            self._aside = bool(later.aside)
            self.wanted = later.applied(self.wanted)
            self.notices += later.notices()
        check_safe(run_dir)
        if earlier.failed == 0:
            left = earlier.unprocessed
            rest = ""  # a stopped run: `retry` read as done, and a script took its exit 0 for the work being done
            if left:
                rest = f" Its {left:,} unprocessed item(s) are for resume: batchcli resume {quoted(run_dir)}"
            elif left is None and earlier.status != "finished":
                rest = f" Its source was not read to the end (the run {earlier.status}); continue it with: batchcli resume {quoted(run_dir)}"
            self.notices.append(Notice(f"Run {str(run_dir)!r} has no failed inputs; nothing to retry.{rest}"))
            return None
        if self.wanted.error_type is not None:  # an unknown type is bad input: say so before loading anything
            TypeMatch(self.wanted.error_type, set(recorded_types(run_dir)) if self.types is None else self.types, load=None)
        self._earlier = earlier
        again = " ".join(filter(None, [self.again, self.wanted.describe()]))  # the filters as given
        return _rewire(earlier, self.overrides, "retry", again)

    def explained(self, error: UsageError) -> UsageError:
        """``error`` with where its value came from, when the run recorded it (``explained``)."""
        return explained(error, self._earlier, self.overrides, "retry")

    def carry_on(self, job: Job) -> Continuation | None:
        """The failed inputs, unpickled now the project is loaded; None when none could be saved."""
        failed = failed_inputs(self.run_dir, self.wanted)
        listing = f"batchcli show {quoted(self.run_dir)} --failures"
        return self._continue(failed, f"run {str(self.run_dir)!r}", self.run_dir, "its failed.jsonl", listing)

    def _continue(self, failed: RetryInputs, what: str, where: Path, saved: str, listing: str) -> Continuation | None:
        """Say how many failures the filters take (none: nothing to retry, and the runs are let go) and which inputs
        are left out."""
        continuation = self._taken(failed, what, where, saved, listing)
        if continuation is None:
            self.abandon()
        return continuation

    def _taken(self, failed: RetryInputs, what: str, where: Path, saved: str, listing: str) -> Continuation | None:
        items, unsaved = failed.count, failed.unsaved
        if self.wanted.left_out and not self.wanted.active and not items and not unsaved:
            done = "was processed successfully by a later retry"
            if self._aside:
                done += " (of this run, or of the run its inputs came from)"
            if self._waiting:
                done += ", or is left to a stopped one to resume (said above)"
            self.notices.append(Notice(f"Every failure of {what} {done}; nothing to retry."))
            return None
        if self.wanted.active:
            count = items + unsaved
            if not count:
                # With failures left out (done by a later retry, or left to a stopped one): "matches" read as if the
                # option were wrong, though nothing was left to match.
                aside = " among those left to retry (the others are said above)" if self.wanted.left_out else ""
                self.notices.append(
                    Notice(
                        f"No failure of {what} matches {self.wanted.describe()}{aside}; nothing to retry. "
                        f"List its failures with: {listing}",
                        soft_wrap=True,
                    )
                )
                return None
            self.notices.append(Notice(f"{count} failure(s) match {self.wanted.describe()}; retrying them.", soft_wrap=True))
        if unsaved and not items:  # exit 0 here read as "retried" to a script (`retry RUN && echo fixed`)
            raise NothingRetried(
                f"Nothing was retried: none of the {unsaved} failure(s) of {what} to retry has its input saved (each "
                f"could not be pickled when it failed; the inputs are in {saved}). Make the Source yield picklable "
                "items (plain data, or objects pickle can rebuild), then run those inputs again with a new exec."
            )
        if unsaved:
            self.notices.append(
                Notice(
                    f"[yellow]{unsaved} failed input(s) of {what} could not be pickled and are left out; "
                    f"they are in {saved}.[/]",
                    markup=True,
                )
            )
        if not items:
            return None
        failed.check(self.progress)
        return Continuation(parent=where, inputs=failed, held=tuple(self._held))

    def abandon(self) -> None:
        """Let go of the runs retried (``_hold``)."""
        for lock in self._held:
            lock.release()
        self._held.clear()


@dataclass(frozen=True)
class LaterRetries:
    """What the retry runs of a run, beside it, did with its failures (``later_retries``)."""

    done: frozenset[tuple[str, int, int]]
    """The failures, as (run directory name, session, ordinal), that one of them processed successfully."""
    by: list[Path]
    """The retry runs that processed some of them successfully."""
    unknown: list[Path]
    """Retry runs made by a batchcli that did not record which failures they took (unkeyed sources only)."""
    running: list[RunInfo]
    """Retry runs still running."""
    of: Path
    """The run (or group) retried, as notices name it."""
    held: tuple[tuple[Path, str, int | None], ...] = ()
    """``retry --dry-run`` and ``show --failures``: each run retried whose failures another process holds (a retry
    still getting ready, one placed elsewhere with ``-d``, a resume): the run, who (``holding``), and its pid."""
    pending: frozenset[tuple[str, int, int]] = frozenset()
    """The failures, named as in ``done``, that a stopped (or crashed) retry took and has not settled: its resume
    processes them, so a retry of the run leaves them to it (both processed them)."""
    waiting: tuple[tuple[Path, int, str], ...] = ()
    """Each such retry, how many of the run's failures it has still to process, and how it ended."""
    aside: frozenset[tuple[str, int, int]] = frozenset()
    """A retry run's failures whose inputs another retry of the run they came from processed successfully since
    (run X, its retry R1 failed some again, then ``retry X`` took those too): done, named as in ``done``."""
    aside_by: tuple[Path, ...] = ()
    """The retries that processed them: of the run (or runs) this retry run retried."""
    aside_pending: frozenset[tuple[str, int, int]] = frozenset()
    """A retry run's failures whose inputs a stopped retry of the run they came from has still to process."""
    aside_waiting: tuple[Path, ...] = ()
    """Those stopped retries."""

    def check_ended(self) -> None:
        """A retry of the run still running would process the same inputs twice at once: refused."""
        if self.running:
            live = self.running[0]
            raise JournalError(
                f"A retry of this run is still running ({str(live.run_dir)!r}, pid {live.pid}): retrying the run now "
                f"would process its inputs twice. Wait for it to end, or stop it (Ctrl-C, or kill -INT {live.pid}), then "
                "retry."
            )

    def applied(self, wanted: FailureFilter) -> FailureFilter:
        left = self.done | self.pending | self.aside | self.aside_pending
        return replace(wanted, left_out=left) if left else wanted

    def notices(self) -> list[Notice]:
        said = []
        if self.done:
            names = ", ".join(path.name for path in self.by)
            said.append(Notice(
                f"Leaving out {len(self.done):,} failure(s) of {str(self.of)!r} that a later retry of it processed "
                f"successfully ({names}): they are done.",
                soft_wrap=True,
            ))  # fmt: skip
        aside = self.aside - self.done
        if aside:
            names = ", ".join(path.name for path in self.aside_by)
            said.append(Notice(
                f"Leaving out {len(aside):,} failure(s) of {str(self.of)!r} whose inputs another retry of the run they "
                f"came from processed successfully since ({names}): they are done.",
                soft_wrap=True,
            ))  # fmt: skip
        aside_pending = self.aside_pending - self.done - self.aside
        if aside_pending:
            names = " ".join(quoted(path) for path in self.aside_waiting)
            said.append(Notice(
                f"Leaving out {len(aside_pending):,} failure(s) of {str(self.of)!r} whose inputs a stopped retry of the "
                f"run they came from has still to process: resume it with batchcli resume {names} (or, to retry them "
                "from here instead, move it away and do not resume it).",
                soft_wrap=True,
            ))  # fmt: skip
        for info in self.running:  # retry --dry-run says it; the retry itself refuses first (check_ended)
            said.append(Notice(
                f"[yellow]A retry of this run is still running ({escape(str(info.run_dir))}, pid {info.pid}): retry "
                "refuses until it has ended.[/]",
                markup=True,
            ))  # fmt: skip
        for path, count, status in self.waiting:
            said.append(Notice(
                f"Leaving out {count:,} failure(s) of {str(self.of)!r} that {path.name} ({status}) has still to "
                f"process: resume it with batchcli resume {quoted(path)} (or, to retry them from this run instead, move it "
                "away and do not resume it).",
                soft_wrap=True,
            ))  # fmt: skip
        pids = {info.pid for info in self.running}
        for run_dir, who, pid in self.held:
            if pid is None or pid not in pids:  # else said just above
                said.append(Notice(
                    f"[yellow]Run {escape(str(run_dir))} is being {escape(who)}: retry refuses until it has ended.[/]",
                    markup=True,
                ))  # fmt: skip
        for path in self.unknown:
            said.append(Notice(
                f"[yellow]{escape(path.name)} retried this run with an older batchcli, which did not record which "
                "failures it took: those it processed are retried again.[/]",
                markup=True,
            ))  # fmt: skip
        return said


def merged(found: list[LaterRetries], of: Path) -> LaterRetries:
    """What later retries did with the failures of several runs (a group's shards), as one."""
    by = list(dict.fromkeys(path for each in found for path in each.by))
    unknown = list(dict.fromkeys(path for each in found for path in each.unknown))
    running = list({info.run_dir: info for each in found for info in each.running}.values())
    held = tuple(dict.fromkeys(hold for each in found for hold in each.held))
    pending = frozenset().union(*(each.pending for each in found))
    waiting = tuple(dict.fromkeys(wait for each in found for wait in each.waiting))
    return LaterRetries(
        frozenset().union(*(each.done for each in found)), by, unknown, running, of, held, pending, waiting,
        frozenset().union(*(each.aside for each in found)),
        tuple(dict.fromkeys(path for each in found for path in each.aside_by)),
        frozenset().union(*(each.aside_pending for each in found)),
        tuple(dict.fromkeys(path for each in found for path in each.aside_waiting)),
    )


def later_retries(run_dir: Path) -> LaterRetries:
    """The runs ``batchcli retry`` made of ``run_dir`` in its own directory (where they go unless ``-d`` says
    otherwise), and which of its failures they processed successfully: by key when the Source has ``item_key``,
    else through the failure each retry input came from (``INPUT_ORIGINS_TABLE``). For a shard of a group, the
    group's retries count too (they sit in the same directory), and so do retries of those retries, back through
    the retry each retried (run → R1 → R2: what R2 processed is done for the run). A directory that is not a
    readable run is passed over. ``retry --limit 5`` followed by ``retry`` processed those five again. For a retry run,
    what other retries of the run it retried did with its failures' inputs counts too (``_aside``)."""
    return _later_retries(run_dir, set())


def _later_retries(run_dir: Path, seen: set[Path]) -> LaterRetries:
    """``later_retries``; ``seen``: the runs looked at on the way up from a retry run (``_aside``)."""
    from batchcli.journal.groups import GROUP_FILE  # groups builds on this module

    home = run_dir.resolve()
    seen.add(home)
    parents = {str(home)}
    if (home.parent / GROUP_FILE).is_file():
        parents.add(str(home.parent))  # a retry of the whole group took this shard's failures too
    return _aside(run_dir, home, _later(run_dir, home.name, parents, _retries_in(home.parent), set()), seen)


def _aside(run_dir: Path, home: Path, later: LaterRetries, seen: set[Path]) -> LaterRetries:
    """``later`` with what other retries of the runs a retry run retried did with its failures' inputs since.

    Run X, its retry R1 fails some inputs again, ``retry X`` (R2) takes those as X's failures and processes them:
    ``retry R1`` then processed them a second time, as R2 is a retry of X, not of R1. A failure of R1 is done when its
    input's origin (``input_origins``) is done for the run it came from (``later_retries`` of that run, which looks
    further up in turn), and left to a stopped retry of that run when it is pending there."""
    try:
        place = retried_from(run_dir)
        if place is None or not has_table(run_dir, "input_origins"):
            return later
        names = [name for (name,) in query(run_dir, "SELECT DISTINCT run FROM input_origins")]
        found: dict[str, tuple[str, LaterRetries]] = {}
        for name in names:  # the run retried, or each shard of a group retried
            origin = place / name if (place / name / JOURNAL_NAME).is_file() else place if len(names) == 1 else None
            if origin is None or origin.resolve() in seen or not (origin / JOURNAL_NAME).is_file():
                continue
            up = _later_retries(origin, seen)
            if up.done or up.pending:
                found[name] = (origin.resolve().name, up)  # its failures are named as it is called now
        if not found:
            return later
        aside: set[tuple[str, int, int]] = set()
        aside_pending: set[tuple[str, int, int]] = set()
        rows = stream(
            run_dir,
            "SELECT f.session, f.ordinal, o.run, o.session, o.origin FROM failures f"
            " JOIN input_origins o ON o.ordinal = f.ordinal",
        )
        for session, ordinal, run, origin_session, origin in rows:
            if run not in found:
                continue
            now, there = found[run]
            if (now, origin_session, origin) in there.done:
                aside.add((home.name, session, ordinal))
            elif (now, origin_session, origin) in there.pending:
                aside_pending.add((home.name, session, ordinal))
    except (JournalError, sqlite3.Error, IndexError):
        return later
    if not aside and not aside_pending:
        return later
    mine = {home, *(path.resolve() for path in later.by)}
    ups = [up for _, up in found.values()]
    by = tuple(dict.fromkeys(path for up in ups for path in up.by if path.resolve() not in mine))
    stopped = (path for up in ups for path in (*(each[0] for each in up.waiting), *up.aside_waiting))
    waiting = tuple(dict.fromkeys(path for path in stopped if path.resolve() != home))
    return replace(
        later, aside=frozenset(aside), aside_by=by, aside_pending=frozenset(aside_pending), aside_waiting=waiting
    )


def _retries_in(place: Path) -> dict[str, list[tuple[Path, bool]]]:
    """The retry runs in ``place`` (and whether each is keyed), by the run or group each retried."""
    found: dict[str, list[tuple[Path, bool]]] = {}
    try:
        entries = sorted(entry.path for entry in os.scandir(place) if entry.is_dir(follow_symlinks=False))
    except OSError:
        entries = []
    for entry in entries:
        child = Path(entry)
        if not (child / JOURNAL_NAME).is_file():
            continue
        try:
            (parent, keyed) = query(child, "SELECT parent, keyed FROM run")[0]
        except (JournalError, sqlite3.Error, IndexError):
            continue
        retried = retried_place(child, parent) if parent else None  # recorded, or moved with it
        if retried is not None:
            found.setdefault(str(retried.resolve()), []).append((child, bool(keyed)))
    return found


def _later(
    run_dir: Path, name: str, parents: set[str], retries: dict[str, list[tuple[Path, bool]]], seen: set[Path]
) -> LaterRetries:
    """``later_retries`` of ``run_dir`` (named ``name`` in the failures' keys), from the retries of ``parents``."""
    done: set[tuple[str, int, int]] = set()
    by: list[Path] = []
    unknown: list[Path] = []
    running: list[RunInfo] = []
    pending: set[tuple[str, int, int]] = set()
    waiting: list[tuple[Path, int, str]] = []
    for child, keyed in (each for parent in sorted(parents) for each in retries.get(parent, ())):
        if child in seen:  # a run directory copied onto its own chain
            continue
        seen.add(child)
        try:
            info = read_run(child)
            if info.status == "running":
                running.append(info)
                continue
            deeper = _later(child, child.name, {str(child)}, retries, seen)  # what retries of this retry did
            running += deeper.running
            unknown += deeper.unknown
            origins = has_table(child, "input_origins")
            left = _unsettled(child, run_dir, name, keyed) if origins and info.status != "finished" else set()
            if left:
                waiting.append((child, len(left), info.status))
            if deeper.pending:
                left |= _origins_of(child, name, deeper.pending)
                waiting += deeper.waiting
            if keyed:
                keys = {key for (key,) in query(child, "SELECT key FROM done_keys")}  # what the retry did: few
                deeper_keys = {  # and what retries of it did, by the keys of its failures
                    key for session, ordinal, key in stream(child, "SELECT session, ordinal, key FROM failures")
                    if (child.name, session, ordinal) in deeper.done
                }  # fmt: skip
                failures = stream(run_dir, "SELECT session, ordinal, key FROM failures")  # the run's: maybe millions
                found, further = set(), set()
                for session, ordinal, key in failures:
                    if key is not None and key in keys:
                        found.add((name, session, ordinal))
                    elif key is not None and key in deeper_keys:
                        further.add((name, session, ordinal))
            elif origins:
                found = set(query(
                    child,
                    "SELECT o.run, o.session, o.origin FROM input_origins o JOIN done_ranges d"
                    " ON d.start = (SELECT max(start) FROM done_ranges WHERE start <= o.ordinal)"
                    " WHERE o.ordinal < d.stop AND o.run = ?",
                    (name,),
                ))  # fmt: skip
                further = _origins_of(child, name, deeper.done) if deeper.done else set()
            else:
                unknown.append(child)
                continue
        except (JournalError, sqlite3.Error, IndexError):
            continue
        if found - done:
            by.append(child)
        if further - done - found:
            by += [path for path in deeper.by if path not in by]
        done |= found | further
        pending |= left
    return LaterRetries(
        frozenset(done), by, unknown, running, run_dir, pending=frozenset(pending - done), waiting=tuple(waiting)
    )


def _unsettled(retry: Path, run_dir: Path, name: str, keyed: bool) -> set[tuple[str, int, int]]:
    """The failures of ``run_dir`` (named ``name``) that the stopped or crashed ``retry`` took and has not settled
    (neither succeeded nor failed again): what a resume of it will process. Through its ``input_origins`` (older
    retries have none, and then nothing is known)."""
    origins = stream(retry, "SELECT ordinal, run, session, origin FROM input_origins WHERE run = ?", (name,))
    if not keyed:
        done = RangeSet(query(retry, "SELECT start, stop FROM done_ranges"))
        failed = {ordinal for (ordinal,) in stream(retry, "SELECT ordinal FROM failures")}
        return {(run, session, origin) for ordinal, run, session, origin in origins if ordinal not in done and ordinal not in failed}
    # A keyed retry settles keys: each input's is the key its failure in the run was recorded with.
    taken = {(run, session, origin) for _, run, session, origin in origins}
    settled = {key for (key,) in query(retry, "SELECT key FROM done_keys UNION SELECT key FROM failures")}
    return {
        (name, session, ordinal) for session, ordinal, key in stream(run_dir, "SELECT session, ordinal, key FROM failures")
        if (name, session, ordinal) in taken and key not in settled
    }  # fmt: skip


def _origins_of(retry: Path, name: str, failures: frozenset[tuple[str, int, int]]) -> set[tuple[str, int, int]]:
    """The failures of the run ``name`` that these failures (or unsettled inputs) of the ``retry`` run came from."""
    ordinals = {ordinal for run, _, ordinal in failures if run == retry.name}  # a retry's failure: one per input
    rows = stream(retry, "SELECT ordinal, run, session, origin FROM input_origins WHERE run = ?", (name,))
    return {(run, session, origin) for ordinal, run, session, origin in rows if ordinal in ordinals}


def failed_inputs(
    run_dir: Path, wanted: FailureFilter = FailureFilter(), types: set[str] | None = None
) -> RetryInputs:
    """The finally failed inputs of ``run_dir`` that ``wanted`` takes, still in its journal (``RetryInputs``).

    Load the project first: ``--error-type`` finds the recorded exception classes in its modules, and ``check``
    the inputs' classes. ``types`` as for ``matching_failures``.
    """
    check_safe(run_dir)
    if wanted.active or wanted.left_out:
        rowids = array("q")  # 8 bytes a failure taken, not its row

        def take(row: FailureRow) -> None:
            if row.saved:
                rowids.append(row.rowid)

        matched = matching_failures(run_dir, wanted, types=types, into=take)[1]
        return RetryInputs((Pick(run_dir, rowids, len(rowids)),), matched - len(rowids))
    (saved, unsaved), = query(run_dir, "SELECT count(item), count(*) - count(item) FROM failures")
    return RetryInputs((Pick(run_dir, None, saved),), unsaved)


def defines_item_key(source: object) -> bool:
    """True when the source overrides ``Source.item_key``."""
    method = getattr(type(source), "item_key", None)
    return method is not None and method is not Source.item_key


def explained(error: UsageError, earlier: RunInfo | None, overrides: dict[str, tuple[str, ...]], command: str) -> UsageError:
    """``error`` (the job refused a value as it was built) with where the value came from, when it names one the
    run recorded as it started and that was not given again now: the job changed since (a param renamed, removed
    or retyped), and "Unknown param 'n'" named a value the user never typed, with no way out."""
    if earlier is None or isinstance(error, RecordedValueError):
        return error
    message = error.format_message()
    recorded = [n for n in earlier.params if n not in overrides and (f"'{n}'" in message or f"{n}=" in message)]
    if not recorded:
        return error
    given = " ".join(f"-p {n}={','.join(earlier.params[n])}" for n in recorded)
    return RecordedValueError(
        f"{message} That value is the run's own: it started with {given}, recorded in its journal, and the job no "
        f"longer takes it as it was (changed since). {command.capitalize()} cannot drop a recorded value: put the job "
        f"back as it was to {command} {earlier.run_dir}, or give the value in the form the job takes now with -p, or "
        "start a new run (with --skip-done-in RUN_DIR, for a Source with item_key, it skips what this run did)."
    )


class RecordedValueError(UsageError):
    """A value the run recorded as it started, which the job no longer takes (``explained``)."""


def _rewire(
    earlier: RunInfo, overrides: dict[str, tuple[str, ...]], command: str, again: str
) -> tuple[Wiring, dict[str, str]]:
    """The wiring the run started with: its recorded values, then ``overrides`` (``-p`` wins); and its secrets again.
    ``again``: the command as given, without its -p values, for the messages.

    Only the secrets are read from the environment: every other value the run started with, from
    ``-p`` or a ``BATCHCLI_*`` variable, is in the journal, and a variable set (or unset) since must
    not quietly change the job. A secret is never taken from its default either: it was given once,
    so it must be given again.
    """
    from batchcli.load.wiring import Wiring

    target = earlier.target
    if os.path.isabs(target) and not os.path.exists(target):  # a path when the run was made (else a job name)
        raise UsageError(
            f"Run {str(earlier.run_dir)!r} was made by the job at {target!r}, which is no longer there (moved, renamed "
            f"or deleted). {command.capitalize()} loads the job from where the run was made: put it back there (a copy "
            f"will do), then run: {again}"
        )
    given = overrides.get("shards")
    if given is not None and not _same(given, tuple(earlier.params.get("shards", ()))) and not _same(given, _shard_count(earlier)):
        retried = command == "retry" or earlier.parent  # a retry run, resumed, takes them too
        kept = "takes the failed inputs, not the Source" if retried else "keeps the share of the source it started with"
        others = " (and your other -p values)" if len(overrides) > 1 else ""
        raise UsageError(
            f"-p shards={','.join(given)} splits a source only as exec starts it: a {command} {kept}, so it would not be "
            f"used. Run it without -p shards: {again}{others}"
        )
    missing = [name for name in earlier.secrets if name not in overrides and variable(name) not in os.environ]
    if missing:
        raise UsageError(_secrets_missing(earlier, missing, again))
    values = {name: tuple(raw) for name, raw in earlier.params.items()}
    values.update(overrides)
    environment = frozenset(name for name in earlier.environment if name not in overrides)
    # A target that is no absolute path was an installed job's name (stable_target): that job again, even where a
    # path of that name exists now (path wins only for exec; a resume loaded it and mixed two jobs in one run).
    wiring = Wiring(
        target=earlier.target, config_name=earlier.config_name, values=values, environment=environment,
        by_name=recorded_by_name(target),
    )  # fmt: skip
    secrets = {variable(name): os.environ[variable(name)] for name in earlier.secrets if name not in overrides}
    return wiring, secrets


def _same(given: tuple[str, ...], recorded: tuple[str, ...] | None) -> bool:
    """Whether a -p value given again is the recorded one, as numbers when both are (``shards=03`` is 3)."""
    if recorded is None:
        return False
    try:
        return [int(v) for v in given] == [int(v) for v in recorded]
    except ValueError:
        return given == recorded


def _shard_count(earlier: RunInfo) -> tuple[str, ...] | None:
    """A shard's count of shards, as ``-p shards`` would give it: a shard started with ``--shard I/N`` records no
    ``shards`` param, and N given again is the value it runs with."""
    shard = shard_of(earlier.run_dir)
    return None if shard is None else (str(shard.count),)


def _secrets_missing(earlier: RunInfo, missing: list[str], again: str) -> str:
    """Which secrets ``again`` (the command) needs again, and the two ways to give them."""
    many = len(missing) > 1
    names, given = ", ".join(map(repr, missing)), " ".join(f"-p {name}=..." for name in missing)
    return (
        f"Run {str(earlier.run_dir)!r} was started with the secret {'params' if many else 'param'} {names}, which "
        f"the journal does not keep (and {'their defaults are' if many else 'its default is'} not used instead). "
        f"Give {'them' if many else 'it'} again: {again} {given} "
        f"(or set {', '.join(map(variable, missing))})."
    )


def keys_skipped(selection: Selection | None, job: Job, run_dir: Path | None = None) -> KeySet:
    """The item keys ``--skip-done-in`` skips: those that succeeded in its runs; none without it. A run continued
    (``run_dir``) skips the keys it kept as it started, not what those runs say now."""
    if selection is None or not selection.skip_done_in:
        return frozenset()
    if run_dir is not None:
        kept = recorded_skips(run_dir)
        if kept is not None:
            return kept
        check_skip_runs_there(run_dir, selection)
    return keys_done_in(selection.skip_done_in, type(job.source).__qualname__, job.source.item_key)


def fresh_continuation(job: Job, selection: Selection | None, dry_run: bool, notices: list[Notice]) -> Continuation:
    """What a new run carries on from: nothing, or for ``--skip-done-in`` the keys those runs did."""
    if selection is None or selection.takes_all:
        return Continuation()
    selection = selection.for_source(defines_item_key(job.source))
    if selection.is_trial and not dry_run:  # the plain progress line has no title: say it first
        notices.append(Notice(f"Trial run ({selection.describe()}). Carry it on to the whole source "
                              "later with: batchcli resume RUN_DIR --all", soft_wrap=True))
    done: KeySet = frozenset()
    if selection.skip_done_in:
        check_keyed(job)
        done = keys_skipped(selection, job)
        notices.extend(_other_jobs(job, selection.skip_done_in))
        runs = "that run" if len(selection.skip_done_in) == 1 else f"those {len(selection.skip_done_in)} runs"
        notices.append(Notice(f"Skipping the items whose item_key() is one of the {len(done):,} that succeeded in "
                              f"{runs} (--skip-done-in).", soft_wrap=True))
    return Continuation(selection=selection, done_elsewhere=done)


def _other_jobs(job: Job, runs: tuple[Path, ...]) -> list[Notice]:
    """A warning for each ``--skip-done-in`` run made by another job: its keys are compared all the same, and a
    job whose keys look alike (0, 1, 2 ...) would skip items it never did, without a word."""
    here = stable_target(job.project.target)
    warnings = []
    for run_dir in runs:
        other = read_run(run_dir).target
        if other != here:
            warnings.append(Notice(
                f"[yellow]Warning:[/] --skip-done-in {escape(repr(str(run_dir)))} was made by another job "
                f"({escape(repr(other))}, not {escape(repr(here))}): an item is skipped when its item_key() equals a "
                "key that succeeded there, whatever that job did. Leave that run out if its keys mean other items.",
                markup=True, soft_wrap=True,
            ))
    return warnings


def check_keyed(job: Job) -> None:
    """``--skip-done-in`` tells items apart by ``item_key``; a UsageError explaining why when the Source has none."""
    if not defines_item_key(job.source):
        name = type(job.source).__qualname__
        raise UsageError(
            f"--skip-done-in needs {name}.item_key(item), which {name} does not define. A grown input moves rows "
            "around, so an item's position says nothing about whether an earlier run did it; only a key that names "
            f"the item (an id, a file name) does. Define item_key(self, item) on {name}, returning a unique str or "
            "int, run once with it, then give that run to --skip-done-in."
        )
