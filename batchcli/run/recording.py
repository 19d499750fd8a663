"""Recording settled items in the run directory: the journal first, then ``failed.jsonl``; a write that fails pauses the run.

The recorder thread calls ``flush`` every ``FLUSH_INTERVAL_S`` and the driver once more at the end.
When the run directory cannot be written (a full disk), nothing is lost from memory: the run is
paused at once (no new item starts) and retried each flush; after ``write_retry_s`` (a configuration
field) it stops resumably, and the result carries a ``RunDirWriteError`` for the CLI to show.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from collections.abc import Iterable
from typing import Callable, Protocol

from batchcli.errors import JournalLockedError, RunDirGoneError, RunDirWriteError
from batchcli.journal.records import FailedFile, failure_record
from batchcli.journal.rundir import FLUSH_INTERVAL_S, free_space, held_locked
from batchcli.journal.results import Kept
from batchcli.outcome import KEPT_NUDGE, Failure, Sealed, Tally, log_failures, merge_ranges, runs, sealed_ranges

log = logging.getLogger("batchcli")

class RunDirGone(OSError):
    """The run directory no longer holds the journal this run writes: it was deleted, moved or replaced.

    The journal's open files keep taking writes after that (a deleted one into nothing, a moved one in
    its new place), so nothing else would notice until the run's end; each flush looks first."""


class Recorder(Protocol):
    """Receives every settled item once, in batches, from the recorder thread."""

    def record(
        self, done: list[tuple[int, int]], failures: list[Failure], check: Callable[[], None] | None = None
    ) -> list[str]:
        """Record succeeded ordinals, as sorted merged ``[start, end)`` ranges, and final failures; return
        the ``failed.jsonl`` lines of the failures now durable. Raise ``OSError`` or ``sqlite3.Error``
        when the write failed, or what ``check`` raises before it, keeping the batch for the next call."""

    def forgive(self, ordinals: list[int]) -> None:
        """Recorded failures of this session that later succeeded; their ordinals come in ``done`` too."""

    def keep(self, kept: list[Kept]) -> None:
        """Results of items whose ordinals come in the next ``record``'s ``done``: written in its transaction."""

    def keep_sealed(self, sealed: list[Sealed], bounds: list[tuple[int, int]]) -> None:
        """Batches of plain-data results (``Tally.take_sealed``) of items whose ordinals come in the next
        ``record``'s ``done``, each with its lowest and highest ordinal: written in its transaction."""

    def release(self, ordinals: list[int]) -> None:
        """Recorded failures of this session taken back as not final; the items will settle again."""


class NullRecorder:
    """Records nothing beyond the run directory's plain files."""

    def record(
        self, done: list[tuple[int, int]], failures: list[Failure], check: Callable[[], None] | None = None
    ) -> list[str]:
        """Keep nothing; the failures go straight to ``failed.jsonl``."""
        if check is not None:
            check()
        return [json.dumps(failure_record(f), ensure_ascii=False) + "\n" for f in failures]

    def forgive(self, ordinals: list[int]) -> None:
        """Nothing to undo."""

    def keep(self, kept: list[Kept]) -> None:
        """Keep nothing."""

    def keep_sealed(self, sealed: list[Sealed], bounds: list[tuple[int, int]]) -> None:
        """Keep nothing."""

    def release(self, ordinals: list[int]) -> None:
        """Nothing to undo."""


class Recording:
    """Flushes a run's settled items to its recorder and ``failed.jsonl``, and tracks whether writes work.

    Args:
        on_stall_change: called (from the flushing thread) when writes start or stop failing; the
            driver pauses or resumes the executor then (``stalled`` tells which).
        on_give_up: called once when writes kept failing for ``retry_s``: stop the run.
        retry_s: how long writes may keep failing before that (the configuration's ``write_retry_s``).
    """

    def __init__(
        self,
        run_dir: Path,
        tally: Tally,
        failed_file: FailedFile,
        on_stall_change: Callable[[], None],
        on_give_up: Callable[[], None],
        retry_s: float,
    ) -> None:
        self.run_dir = run_dir
        self.retry_s = retry_s
        self.tally = tally
        self.recorder: Recorder = NullRecorder()
        """Where settled items are recorded durably: the journal, once the run starts."""
        self.failure_lines: Callable[[], Iterable[str]] = lambda: ()
        """Every durable failure's ``failed.jsonl`` line, for rewriting the file (the journal's, once it starts)."""
        self._failed_file = failed_file
        self._on_stall_change = on_stall_change
        self._on_give_up = on_give_up
        self._stalled_since: float | None = None
        """When writing the run directory started failing (monotonic); None while writes work."""
        self._write_cause: BaseException | None = None
        self._gave_up = False
        self._lock = threading.Lock()
        self.interval_s = FLUSH_INTERVAL_S
        """How long the recorder thread waits before its next flush: shorter while results pour in, so the
        memory they may wait in (``KEPT_BACKLOG_MAX``) does not cap the run's rate."""
        self._place: tuple[Path, int, int] | None = None
        """The journal's path and its file's device and inode, once ``watch_place`` was called."""
        self._dir_fd: int | None = None
        """The run directory, held open: it tells whether the directory was deleted, and where it was moved."""
        self._gone: tuple[bool, Path | None] = (False, None)
        """Once the journal is not where it was: whether the directory was deleted, else where it went (None: unknown)."""

    def watch_place(self, journal_path: Path) -> None:
        """Check before each flush that ``journal_path`` is still the journal this run writes. Resolved (symlinks too),
        as ``/proc`` names a moved directory: the directory the run started in then compares equal."""
        journal_path = journal_path.resolve()
        st = os.stat(journal_path)
        self._place = (journal_path, st.st_dev, st.st_ino)
        try:
            self._dir_fd = os.open(journal_path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            self._dir_fd = None

    def _check_place(self) -> None:
        if self._place is None:
            return
        path, dev, ino = self._place
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise RunDirGone(f"{path} is gone") from None
        if (st.st_dev, st.st_ino) != (dev, ino):
            raise RunDirGone(f"{path} is another file now")

    def _where_now(self) -> tuple[bool, Path | None]:
        """Whether the run directory was deleted, and else where it is now (when the system says: Linux's /proc)."""
        fd = self._dir_fd
        if fd is None:
            return False, None
        try:
            if os.fstat(fd).st_nlink == 0:
                return True, None
            now = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return False, None
        if self._place is not None and now == self._place[0].parent:
            return not self._place[0].exists(), None  # in its place: a journal no longer there was deleted alone
        return False, now

    @property
    def stalled(self) -> bool:
        """True while the run directory cannot be written."""
        return self._stalled_since is not None

    def flush(self) -> None:
        """Record what the executor reported since the last flush (recorder thread, then once at the end).

        The journal first, then ``failed.jsonl`` with only what the journal committed. A write that
        fails keeps everything in memory for the next flush and pauses the executor until one succeeds.
        """
        with self._lock:
            taken = self.tally.taken_bytes
            kept = self.tally.take_kept()
            sealed = self.tally.take_sealed()
            busy = self.tally.taken_bytes - taken > KEPT_NUDGE
            self.interval_s = FLUSH_INTERVAL_S / 20 if busy else FLUSH_INTERVAL_S
            done = self.tally.take_done()
            if kept:  # items with a result are settled by it alone: their ordinals join the others here
                done = merge_ranges(done + runs(sorted(k[0] for k in kept)))
                self.recorder.keep(kept)
            if sealed:
                # Each batch's lowest and highest ordinal, found once here: its ranges and its row both need them.
                bounds = [(min(batch), max(batch)) for batch, _ in sealed]
                done = merge_ranges(done + sealed_ranges(sealed, bounds))
                self.recorder.keep_sealed(sealed, bounds)
            # Failures taken back (forgiven, released) first, then the new ones: one taken back once this flush holds
            # it is queued as recorded (it left ``new_failures``), and its delete, applied before this flush's insert
            # of the same row, deleted nothing: a breaker trip during a slow flush left failures it had taken back
            # in the journal and failed.jsonl, to be counted failed and retried though they succeeded.
            recovered = self.tally.recovered
            if recovered:
                forgiven = [recovered.popleft() for _ in range(len(recovered))]
                self.recorder.forgive(forgiven)
                self._failed_file.drop(forgiven)  # a forgiven failure's line goes
            released = self.tally.released
            if released:
                taken_back = [released.popleft() for _ in range(len(released))]
                self.recorder.release(taken_back)
                self._failed_file.drop(taken_back)  # a released failure's line goes too
            new = self.tally.new_failures
            waited = self.tally.failure_bytes  # read first: what comes meanwhile waits for the next flush
            failures = [new.popleft() for _ in range(len(new))]
            self.tally.failure_bytes_taken = waited
            unlogged = self.tally.unlogged
            if unlogged:  # taken back by the breaker before this flush: not recorded, but logged as they failed
                log_failures([unlogged.popleft() for _ in range(len(unlogged))])
            log_failures(failures)  # here, not on the loop thread: once each, even if the write below fails
            try:
                # Checked by the recorder once it holds the batch: raised here, it dropped what this flush took.
                lines = self.recorder.record(done, failures, self._check_place)
                self._failed_file.sync(lines, self.failure_lines)
            except (OSError, sqlite3.Error) as error:
                self.failed(error)
            else:
                self._works()

    def last_flush(self) -> None:
        """The final flush; while the run directory cannot be written, retry until ``retry_s`` is up."""
        self.flush()
        while self._stalled_since is not None and time.monotonic() - self._stalled_since < self.retry_s:
            time.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def failed(self, error: BaseException) -> None:
        """Writing the run directory failed: pause at once, then stop resumably if it keeps failing."""
        self._write_cause = error
        if isinstance(error, RunDirGone):
            self._gone = self._where_now()  # again each time: `rm -r` empties a directory before removing it
        now = time.monotonic()
        if self._stalled_since is None:
            self._stalled_since = now
            if isinstance(error, RunDirGone):
                deleted, moved_to = self._gone
                log.error(
                    "The run directory %s %s while the run went on: no new item starts while batchcli waits up to "
                    "%gs (write_retry_s) for it to come back, then stops.",
                    self.run_dir,
                    "was deleted" if deleted else f"was moved to {moved_to}" if moved_to else "was moved or replaced",
                    self.retry_s,
                )
            elif held_locked(error):
                log.error(
                    "Another process holds the journal of %s locked (%s): no new item starts while batchcli retries "
                    "for up to %gs (write_retry_s).",
                    self.run_dir,
                    describe(error),
                    self.retry_s,
                )
            else:
                log.error(
                    "Cannot write the run directory %s (%s; %s free): no new item starts while batchcli retries "
                    "for up to %gs (write_retry_s).",
                    self.run_dir,
                    describe(error),
                    free_space(self.run_dir),
                    self.retry_s,
                )
            self._on_stall_change()
        elif now - self._stalled_since >= self.retry_s and not self._gave_up:
            self._gave_up = True
            self._on_give_up()  # in-flight items finish; what they settle is kept, and redone on resume if never written

    def _works(self) -> None:
        if self._stalled_since is not None:
            self._stalled_since = None
            log.warning("The run directory %s can be written again; carrying on.", self.run_dir)
            self._on_stall_change()

    def write_error(self) -> RunDirWriteError | None:
        """Why the run stopped, when its run directory still cannot be written; else None."""
        if self._stalled_since is None or self._write_cause is None:
            return None
        if isinstance(self._write_cause, RunDirGone):
            return RunDirGoneError(self.run_dir, *self._gone)
        return write_stopped(self.run_dir, self._write_cause)

    def close(self) -> None:
        """Close ``failed.jsonl`` (and the run directory held open)."""
        self._failed_file.close()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


def describe(error: BaseException) -> str:
    """A write error for a message: SQLite's own words are vague ("disk I/O error"), so add its code."""
    name = getattr(error, "sqlite_errorname", None)
    return f"{error} ({name})" if name else str(error)


def write_stopped(run_dir: Path, error: BaseException) -> RunDirWriteError:
    """Why the run stopped when its run directory could not be written: another process holding the journal
    locked (where "free some space" would mislead), else a full disk or another write error."""
    if held_locked(error):
        return JournalLockedError(run_dir, describe(error))
    return RunDirWriteError(run_dir, describe(error), free_space(run_dir))
