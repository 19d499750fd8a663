"""The run journal: ``journal.sqlite`` in the run directory, written in batches while a run goes.

It holds what the run is rebuilt from (target, configuration, raw params from ``-p`` and
``BATCHCLI_*`` variables, secrets left out but named), which items settled (successes as merged
ordinal ranges, or item keys; failures with a pickled copy of the input and the reason), a small
throughput timeline, and one row per session (a run resumed twice has three). ``resume`` and
``retry`` write and load it; ``runs`` and ``show`` only read it, through ``batchcli.journal.rundir``, and
never unpickle.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import socket
import sqlite3
import time
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from batchcli import __version__
from batchcli.errors import JournalError, UsageError
from batchcli.outcome import KEYED_DONE_BACKLOG_MAX, Failure, Sealed, Tally, error_text, writable
from batchcli.journal.records import failure_line, json_form, json_text, row_lines
from batchcli.journal.batches import BATCHES_TABLE, write_sealed
from batchcli.journal.inputs import InputRow, copy_inputs
from batchcli.journal.keyindex import KeyIndex, KeySet, key_set
from batchcli.journal.results import RESULTS_TABLE, Kept, write_results
from batchcli.journal.rundir import (
    FORMAT, JOURNAL_NAME, RetryLock, RunLock, check_format, check_safe, check_writable, connect, damaged, hold_failures,
    live_states, no_room, table_exists,
)  # fmt: skip
from batchcli.journal.selection import Selection, save_selection, save_skipped
from batchcli.journal.settled import Numbered, RangeSet, skip_keys, skip_ordinals
from batchcli.journal.shards import Shard, read_shard, record_shard
from batchcli.load.secret import mask_texts

if TYPE_CHECKING:
    from batchcli.load.wiring import Job, Wiring

log = logging.getLogger("batchcli")

LIMITS_TABLE = """
CREATE TABLE IF NOT EXISTS limits (
    session INTEGER NOT NULL,
    t REAL NOT NULL,
    concurrency INTEGER NOT NULL,
    rate_limit REAL,
    throttles INTEGER NOT NULL
);
"""
"""From ``t`` on, the limits in force (adaptive ones are cut on throttles) and the session's throttles so far.

A row is written only when they change after a throttle. Journals of older batchcli versions lack the
table; ``open`` adds it (readers treat a missing table as "never throttled"), so the format is unchanged.
"""

LIVE_TABLE = """
CREATE TABLE IF NOT EXISTS live (session INTEGER PRIMARY KEY, t REAL NOT NULL, state TEXT NOT NULL);
"""
"""What a live session is doing beyond the counts (in flight, retrying, limits, cool-down, breaker, paused), as
JSON, rewritten every flush for ``batchcli watch``. Older journals lack it; ``open`` adds it, like ``limits``."""

HANDED_OVER_TABLE = """
CREATE TABLE IF NOT EXISTS handed_over (session INTEGER PRIMARY KEY, done INTEGER NOT NULL);
"""
"""Whether each session's final failures reached the Source's ``persist_failed``: a row (done 0) as the session
starts, done 1 once the hook returned, for it and every session before. A session killed, or whose stop timed
out before the hook returned, stays 0, and the next session hands its failures over with its own. Sessions of
older journals have no row and count as handed over, as they were then assumed to be."""

INPUT_ERRORS_TABLE = """
CREATE TABLE IF NOT EXISTS input_errors (ordinal INTEGER PRIMARY KEY, error_type TEXT NOT NULL, shape TEXT NOT NULL);
"""
"""A retry run's inputs, by ordinal: how each failed in the run it retries (type, ``message_shape``), so that the
circuit breaker of a resumed retry, as of the retry itself, does not count the same failure again. Older
journals lack it; their resumed retries count every failure."""

INPUT_ORIGINS_TABLE = """
CREATE TABLE IF NOT EXISTS input_origins (
    ordinal INTEGER PRIMARY KEY, run TEXT NOT NULL, session INTEGER NOT NULL, origin INTEGER NOT NULL
);
"""
"""A retry run's inputs, by ordinal: the failure each one was (the name of the run directory that recorded it, a
shard's for a group's retry, with its session and ordinal there), so that a later ``retry`` leaves out what this
one processed successfully (``later_retries``). Older journals lack it: what they retried is retried again."""

HELD_ERRORS_TABLE = """
CREATE TABLE IF NOT EXISTS held_errors (ordinal INTEGER PRIMARY KEY, error_type TEXT NOT NULL, shape TEXT NOT NULL);
"""
"""The items the circuit breaker held when a session stopped, and how each failed (type, message shape): the next
session's breaker reads an item failing again as before as a bad record (final at once), as a retry does. Bad
records at the end of the source held every probe: each resume waited ``breaker_max_wait_s`` and stopped again.
Rewritten by each session's end; older journals lack it."""

FAILURES_BY_ORDINAL = "CREATE INDEX IF NOT EXISTS failures_by_ordinal ON failures (session, ordinal)"
"""Made the first time a session looks failures up by ordinal (the breaker releases them, the pause shell
forgives them): without it, each lookup reads the whole table, and a trip that releases 100 journaled
failures from 300,000 took the recorder 8 s. Made then, not with the table, so that a flood, which never
looks one up, does not pay for keeping it (a microsecond a failure). Older journals simply lack it."""

INSERT_FAILURE = f"INSERT INTO failures VALUES ({', '.join('?' * 12)})"
INSERT_UNKEYED_FAILURE = f"INSERT INTO failures VALUES (?, NULL, {', '.join('?' * 10)})"
"""A row of a run that is not keyed, whose key is always NULL: written in the statement, not bound (see
``_insert_failures``)."""
_without_key = itemgetter(0, *range(2, 12))

SCHEMA = """
CREATE TABLE run (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    format INTEGER NOT NULL,
    job TEXT NOT NULL,
    target TEXT NOT NULL,
    config_name TEXT,
    configuration TEXT NOT NULL,
    params TEXT NOT NULL,
    secrets TEXT NOT NULL,
    environment TEXT NOT NULL DEFAULT '[]',
    keyed INTEGER NOT NULL,
    parent TEXT,
    batchcli_version TEXT NOT NULL,
    total INTEGER,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    fatal TEXT
);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL
);
CREATE TABLE done_ranges (start INTEGER PRIMARY KEY, stop INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE done_keys (key PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE failures (
    ordinal INTEGER NOT NULL,
    key,
    session INTEGER NOT NULL,
    item BLOB,
    item_type TEXT NOT NULL,
    item_json TEXT NOT NULL,
    error_type TEXT NOT NULL,
    error_message TEXT NOT NULL,
    traceback TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_failed_at REAL NOT NULL,
    failed_at REAL NOT NULL
);
CREATE TABLE inputs (ordinal INTEGER PRIMARY KEY, item BLOB NOT NULL);
CREATE TABLE timeline (session INTEGER NOT NULL, t REAL NOT NULL, succeeded INTEGER NOT NULL, failed INTEGER NOT NULL);
""" + LIMITS_TABLE + LIVE_TABLE + RESULTS_TABLE + BATCHES_TABLE + HANDED_OVER_TABLE + INPUT_ERRORS_TABLE + INPUT_ORIGINS_TABLE


class Journal:
    """The writer of one run's journal; implements the run's ``Recorder``.

    ``record`` is called from the recorder thread at every flush (0.2 s) and once more at the end,
    one call at a time, and commits once per call. Completed ordinals arrive as merged ranges, are
    kept merged in memory, and only the rows of ranges that changed are rewritten, so an in-order
    run of 10 million items stays a few rows.
    """

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, lock: RunLock, tally: Tally | None = None) -> None:
        self.run_dir = run_dir
        self._conn = conn
        self._lock = lock
        self._held: list[RetryLock] = []
        """A continued run's hold on its failures and on those of the runs it retries (``open``)."""
        self.tally = tally or Tally()
        """The run's live counts; the journal stores their ``total``."""
        row = conn.execute("SELECT keyed, succeeded, failed, total, parent FROM run").fetchone()
        if row is None:
            raise damaged(run_dir / JOURNAL_NAME, "it has no run record")
        self.keyed = bool(row[0])
        """True when the source defines ``item_key``: items are journaled by key, not position."""
        self.ranges = RangeSet(conn.execute("SELECT start, stop FROM done_ranges"))
        self.failed = int(row[2])
        self.total: int | None = row[3]
        self.parent: str | None = row[4]
        """The run directory a retry run reprocesses the failures of."""
        self.shard: Shard | None = read_shard(conn)
        """The share of the source a shard run processes (``--shard``); None for the whole source."""
        self._keys_count = int(row[1]) if self.keyed else 0
        self._pending: dict[int, Any] = {}
        self._unwritten: list[tuple[Any, ...]] = []
        self._unwritten_keys: list[Any] = []
        self._unwritten_results: list[tuple[Any, ...]] = []
        self._unwritten_sealed: list[tuple[Any, ...]] = []
        self._forgiven: list[int] = []
        self._released: list[int] = []
        self._by_ordinal = False  # FAILURES_BY_ORDINAL made (or known to be there)
        self._unpicklable: dict[str, int] = {}  # failed inputs this session could not pickle, by type
        self._repeated_keys = 0  # succeeded items whose key an earlier item of the run already had
        self._unpointed = (0, 0)  # successes and failures of flushes whose timeline point was not written
        self._limit_rows: list[tuple[Any, ...]] = []
        """Limit changes taken from the Tally and not committed yet (a failed flush keeps them)."""
        self._throttles_seen = 0
        self.handed_over = False
        """Set once ``persist_failed`` returned with this session's failures and those of ``unhanded_failures``:
        ``finish`` records it."""
        self.session = 0
        sessions = conn.execute(
            "SELECT min(started_at), sum(coalesce(ended_at, seen_at) - started_at), count(*) FROM sessions"
        ).fetchone()
        self.started_at: float = sessions[0] if sessions[0] is not None else time.time()
        """When the run's first session started (epoch seconds)."""
        self._earlier_active_s = float(sessions[1] or 0.0)
        self.session_count = int(sessions[2])
        """Sessions so far: 1, plus one per resume."""
        self._session_started = time.time()
        self.live: Callable[[], dict[str, Any]] | None = None
        """The run's live state, written with every flush for ``batchcli watch``; None writes nothing."""

    @property
    def succeeded(self) -> int:
        """Items that succeeded, over every session."""
        return self._keys_count if self.keyed else self.ranges.count

    @property
    def recorded(self) -> tuple[int, int]:
        """Succeeded and failed items the journal holds: ``succeeded`` and ``failed`` without what a failed write
        keeps in memory for the next one (a run that stops on a full disk redoes those on resume)."""
        succeeded = self._keys_count if self.keyed else max(0, self.ranges.count - self._unpointed[0])
        return succeeded, self.failed - len(self._unwritten)

    @property
    def unrecorded(self) -> int:
        """Settled items that failed writes keep in memory for the next one, which the journal does not hold: a run
        that stops so processes the successes among them again on resume. Counted as they settled, not from
        ``succeeded``: a keyed run counts a key once it is written, so its unwritten successes were in neither."""
        return self._unpointed[0] + len(self._unwritten)

    # Opening.

    @classmethod
    def create(
        cls,
        run_dir: Path,
        job: Job,
        wiring: Wiring,
        *,
        keyed: bool,
        parent: Path | None,
        inputs: Iterator[InputRow] | None,
        shard: Shard | None = None,
        selection: Selection | None = None,
        skipped: KeySet | None = None,
    ) -> Journal:
        """Start the journal of a new run in ``run_dir`` (owner-only, like the directory), its first session running.
        ``skipped``: the keys ``--skip-done-in`` skips, kept for a resume."""
        path = run_dir / JOURNAL_NAME
        draft = run_dir / f"{JOURNAL_NAME}.new"
        lock = RunLock.acquire(run_dir)
        now = time.time()
        try:
            # Built under another name and renamed, so a reader never sees a journal without its run record.
            os.close(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            conn = connect(draft, writer=True)
            conn.executescript(SCHEMA)
            with conn:
                values, secrets, environment = _recorded(job, wiring)
                conn.execute(
                    "INSERT INTO run (id, format, job, target, config_name, configuration, params, secrets, environment,"
                    " keyed, parent, batchcli_version) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        FORMAT,
                        job.project.name,
                        stable_target(wiring.target),
                        wiring.config_name,
                        type(job.config).__name__,
                        values,
                        json.dumps(secrets),
                        environment,
                        int(keyed),
                        None if parent is None else str(parent.resolve()),
                        __version__,
                    ),
                )
                _insert_session(conn, now)
                if shard is not None:
                    record_shard(conn, shard)
                save_selection(conn, selection)  # --limit, --sample, --skip-done-in: resume takes the same items
                if skipped is not None:
                    save_skipped(conn, skipped)
                if inputs is not None:
                    copy_inputs(conn, inputs)
            conn.close()
            os.replace(draft, path)
            conn = connect(path, writer=True)
            conn.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as error:
            lock.release()
            draft.unlink(missing_ok=True)  # a half-made journal would only make the directory look damaged
            if no_room(error):  # the run's own "no room to start" (exit 3), which removes a new run's directory
                raise
            raise JournalError(
                f"Cannot create the journal {str(path)!r}: {error}. Check the disk and the output directory."
            ) from error
        except BaseException:  # a retry's inputs that cannot be read from the journal they failed in, a Ctrl-C
            lock.release()
            draft.unlink(missing_ok=True)
            raise
        journal = cls(run_dir, conn, lock)
        journal.session, journal._session_started = 1, now
        return journal

    @classmethod
    def open(cls, run_dir: Path) -> Journal:
        """Open the journal of an earlier run to continue it; refused when unsafe or still running."""
        path = check_safe(run_dir)
        check_writable(run_dir)  # else SQLite's refusal would read as a damaged journal
        lock = RunLock.acquire(run_dir)
        try:
            conn = connect(path, writer=True)
            journal = cls(run_dir, conn, lock)
            check_format(conn, path)
            with conn:
                conn.executescript(LIMITS_TABLE + LIVE_TABLE + RESULTS_TABLE + BATCHES_TABLE + HANDED_OVER_TABLE)
            # Its failures grow as it goes on, and a retry run's inputs are another run's failures: a retry of either
            # at once would take the same inputs, or failures it had not checked.
            journal._held = hold_failures([run_dir], "resume")
            return journal
        except sqlite3.DatabaseError as error:
            lock.release()
            raise damaged(path, str(error)) from error
        except BaseException:
            lock.release()
            raise

    def rewired(self, job: Job, wiring: Wiring) -> None:
        """A resume's params (``-p`` overrides the recorded ones) become the run's: `show` listed the first session's
        while `summary.json` had the new ones, and the next resume went back to the old values."""
        values, secrets, environment = _recorded(job, wiring)
        before = self._conn.execute("SELECT secrets FROM run").fetchone()[0]
        given = sorted(set(json.loads(before)) | set(secrets))  # a secret given once is asked for again
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(run)")}
        update = {"params": values, "secrets": json.dumps(given), "environment": environment}
        update = {name: value for name, value in update.items() if name in columns}  # an older journal's run record
        with self._conn:
            self._conn.execute(f"UPDATE run SET {', '.join(f'{name} = ?' for name in update)}", tuple(update.values()))

    def begin(self, tally: Tally) -> None:
        """Start a session (a new run's first one is already there): running, in this process, from now."""
        self.tally = tally
        if self.keyed:  # each success costs the journal a key's row: the run goes no faster than it takes them
            tally.done_max = KEYED_DONE_BACKLOG_MAX
        if not self.session:
            now = time.time()
            with self._conn:
                self.session = _insert_session(self._conn, now)
            self._session_started = now
            self.session_count += 1
        if self.total is not None and tally.total is None:
            tally.total = self.total
        tally.earlier_succeeded, tally.earlier_failed = self.succeeded, self.failed  # shown as done from the start

    # What an earlier session settled.

    def skip_settled(self, items: Numbered, tally: Tally, key_of: Any) -> Numbered:
        """``items`` without those an earlier session settled; ``key_of`` is the source's ``item_key``."""
        if self.keyed:
            count = self._conn.execute("SELECT (SELECT count(*) FROM done_keys) + (SELECT count(*) FROM failures)")
            settled = key_set(count.fetchone()[0], self._settled_keys())
            if isinstance(settled, KeyIndex):
                log.info("Resuming: the %s keys settled earlier are looked up on disk, not held in memory.",
                         f"{len(settled):,}")
            return skip_keys(items, settled, key_of, self._pending, tally)
        return skip_ordinals(items, self.settled_ordinals(), tally)

    def settled_ordinals(self) -> RangeSet:
        """The ordinals of the items earlier sessions settled, succeeded or failed (an unkeyed run's)."""
        ranges = RangeSet(self.ranges.ranges())
        ranges.add(o for (o,) in self._conn.execute("SELECT ordinal FROM failures"))
        return ranges

    def _settled_keys(self) -> Iterator[Any]:
        """The keys of the items earlier sessions settled: succeeded (``done_keys``) or failed, read a batch at a time."""
        for sql in ("SELECT key FROM done_keys", "SELECT key FROM failures"):
            cursor = self._conn.execute(sql)
            while rows := cursor.fetchmany(1000):
                for (key,) in rows:
                    yield key

    # Recording, from the recorder thread.

    def forgive(self, ordinals: list[int]) -> None:
        """Failures of this session that succeeded on a later try (from the pause shell); the next ``record``
        drops their failure rows, in its transaction."""
        self._index_by_ordinal()
        self._forgiven.extend(ordinals)

    def keep(self, kept: list[Kept]) -> None:
        """Results of items in the next ``record``'s ``done``: written in its transaction, keyed like the items."""
        if self.keyed:
            self._unwritten_results.extend((o, text, blob, self._key_of(o)) for o, text, blob in kept)
        else:
            self._unwritten_results.extend(kept)

    def keep_sealed(self, sealed: list[Sealed], bounds: list[tuple[int, int]]) -> None:
        """Batches of plain-data results of items in the next ``record``'s ``done``, as the loop encoded them, each
        with its lowest and highest ordinal: written as ``write_sealed`` says."""
        for (ordinals, data), (low, high) in zip(sealed, bounds):
            keys = [self._key_of(o) for o in ordinals] if self.keyed else None
            self._unwritten_sealed.append((ordinals, data, keys, low, high))

    def _key_of(self, ordinal: int) -> Any:
        """The key of the item at ``ordinal``: waiting to settle, or a journaled failure retried from the pause shell."""
        key = self._pending.get(ordinal)
        if key is not None:
            return key
        self._index_by_ordinal()
        where = (self.session, ordinal)
        row = self._conn.execute("SELECT key FROM failures WHERE session = ? AND ordinal = ?", where).fetchone()
        return None if row is None else row[0]

    def _repeated_key(self, count: int) -> None:
        """``count`` more succeeded items had a key that was done already: say so once, and count them."""
        if not self._repeated_keys:
            log.warning(
                "item_key() gave an item a key that an earlier item of this run already had: the item was processed, "
                "but a key counts once, so such items show as unprocessed and a resume does not redo them. Keys must "
                "tell items apart (an id, a file name); the count is logged when the session ends."
            )
        self._repeated_keys += count

    def _index_by_ordinal(self) -> None:
        """Make ``FAILURES_BY_ORDINAL`` before the first lookup of a failure by ordinal."""
        if not self._by_ordinal:
            try:
                self._conn.execute(FAILURES_BY_ORDINAL)
            except sqlite3.Error:  # a full disk: the lookups read the table, as without it, and the next one tries again
                return
            self._by_ordinal = True

    def release(self, ordinals: list[int]) -> None:
        """Failures of this session taken back as not final (the circuit breaker): the next ``record`` drops
        their rows first, in its transaction, and the items count as unprocessed until they settle again."""
        if self._unwritten:  # rows a failed write kept: they must not be written after the delete that misses them
            taken, kept = set(ordinals), []
            for row in self._unwritten:
                if row[0] not in taken:
                    kept.append(row)
                elif self.keyed:  # the key waits again, as below
                    self._pending[row[0]] = row[1]
            self.failed -= len(self._unwritten) - len(kept)
            self._unwritten = kept
        self._index_by_ordinal()
        if self.keyed:  # the key waits again for the item to settle (before this flush records it)
            for ordinal in ordinals:
                where = (self.session, ordinal)
                row = self._conn.execute("SELECT key FROM failures WHERE session = ? AND ordinal = ?", where).fetchone()
                if row is not None:
                    self._pending[ordinal] = row[0]
        self._released.extend(ordinals)

    def _drop_released(self, conn: sqlite3.Connection) -> int:
        """Delete the released failure rows. Returns rows dropped."""
        dropped = 0
        for ordinal in self._released:
            cursor = conn.execute("DELETE FROM failures WHERE session = ? AND ordinal = ?", (self.session, ordinal))
            dropped += max(cursor.rowcount, 0)
        return dropped

    def _drop_forgiven(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """Delete the forgiven failure rows; a keyed run marks their keys done. Returns (rows dropped, keys added)."""
        dropped = keys_added = 0
        for ordinal in self._forgiven:
            where = (self.session, ordinal)
            rows = conn.execute("SELECT key FROM failures WHERE session = ? AND ordinal = ?", where).fetchall()
            conn.execute("DELETE FROM failures WHERE session = ? AND ordinal = ?", where)
            dropped += len(rows)
            if self.keyed and rows:
                keys_added += conn.execute("INSERT OR IGNORE INTO done_keys VALUES (?)", (rows[0][0],)).rowcount
        return dropped, keys_added

    def record(
        self, done: list[tuple[int, int]], failures: list[Failure], check: Callable[[], None] | None = None
    ) -> list[str]:
        """Journal a batch of successes (merged ``[start, end)`` ordinal ranges) and final failures in one
        transaction; returns the ``failed.jsonl`` lines of the failures it committed.

        Raises ``sqlite3.Error`` when the write fails (a full disk), or the ``OSError`` that ``check`` raises before
        it (the run directory is gone): nothing is dropped, the batch is kept in memory and written by the next call.
        """
        now = time.time()
        succeeded = sum(end - start for start, end in done) + self._unpointed[0]
        failed_now = len(failures) + self._unpointed[1]
        # The failures' rows first: building one runs the user's code (pickle, repr), and what raises there must
        # find the successes not yet counted in memory, or the run's end would claim them with no row to show.
        self._unwritten.extend(self._failure_rows(failures))
        if self.keyed:
            pending = self._pending
            for start, end in done:
                self._unwritten_keys.extend(pending.pop(o) for o in range(start, end) if o in pending)
        else:
            for start, end in done:
                self.ranges.add_range(start, end)
        self.failed += len(failures)
        upserts, deletes = self.ranges.take_dirty()
        added = dropped = keys_added = 0
        try:
            if check is not None:
                check()
            with self._conn:
                conn = self._conn
                # Released rows go first: the same item may have failed again since, in this batch.
                released = self._drop_released(conn) if self._released else 0
                if deletes:
                    conn.executemany("DELETE FROM done_ranges WHERE start = ?", ((s,) for s in deletes))
                if upserts:
                    conn.executemany("INSERT OR REPLACE INTO done_ranges VALUES (?, ?)", upserts)
                if self._unwritten_keys:
                    keys = ((k,) for k in self._unwritten_keys)
                    added = conn.executemany("INSERT OR IGNORE INTO done_keys VALUES (?)", keys).rowcount
                if self._unwritten:
                    self._insert_failures(conn)
                if self._unwritten_results:  # with the item's success: a crash keeps both or neither
                    write_results(conn, self._unwritten_results)
                if self._unwritten_sealed:
                    write_sealed(conn, self._unwritten_sealed)
                if self._forgiven:
                    dropped, keys_added = self._drop_forgiven(conn)
                dropped += released
                if succeeded or failed_now:  # an idle flush adds no point: the chart reads a gap as zero
                    point = (self.session, now, succeeded, failed_now)
                    conn.execute("INSERT INTO timeline VALUES (?, ?, ?, ?)", point)
                changes = self.tally.limit_changes  # appended on the loop thread: take what is there now
                taken = len(changes)
                self._limit_rows += [(self.session, *change) for change in changes[:taken]]
                del changes[:taken]
                tally = self.tally
                throttles, in_force = tally.throttles, tally.limits
                seen = self._limit_rows[-1][-1] if self._limit_rows else self._throttles_seen
                if throttles != seen and in_force is not None:  # throttled, limits unchanged (adaptive off)
                    self._limit_rows.append((self.session, now, in_force[0], in_force[1], throttles))
                if self._limit_rows:
                    conn.executemany("INSERT INTO limits VALUES (?, ?, ?, ?, ?)", self._limit_rows)
                self.total = self.tally.total
                keys_done = self._keys_count + added + keys_added
                counts = (keys_done if self.keyed else self.succeeded, self.failed - dropped, self.total)
                conn.execute("UPDATE run SET succeeded = ?, failed = ?, total = ?", counts)
                conn.execute("UPDATE sessions SET seen_at = ? WHERE id = ?", (now, self.session))
                if self.live is not None:
                    live = (self.session, now, json.dumps(self.live()))
                    conn.execute("INSERT OR REPLACE INTO live VALUES (?, ?, ?)", live)
        except (sqlite3.Error, OSError):
            # Keep what was not written for the next flush: a full disk that clears loses nothing.
            self.ranges.dirty.update(s for s, _ in upserts)
            self.ranges.dirty.update(deletes)
            self._unpointed = (succeeded, failed_now)
            raise
        self._keys_count += max(added, 0) + keys_added
        if self._unwritten_keys and 0 <= added < len(self._unwritten_keys):
            self._repeated_key(len(self._unwritten_keys) - added)
        if self._limit_rows:
            self._throttles_seen = self._limit_rows[-1][-1]
        self._limit_rows = []
        self.failed -= dropped
        lines = row_lines(self._unwritten)
        self._unwritten, self._unwritten_keys, self._forgiven, self._released = [], [], [], []
        self._unwritten_results, self._unwritten_sealed = [], []
        self._unpointed = (0, 0)
        return lines

    def unhanded_failures(self) -> list[bytes | None]:
        """The pickled inputs of the final failures of earlier sessions that never reached ``persist_failed`` (killed,
        or stopped while the hook ran), in (session, ordinal) order; None for an input that could not be pickled."""
        rows = self._conn.execute(
            "SELECT f.item FROM failures f JOIN handed_over h ON h.session = f.session"
            " WHERE h.done = 0 AND f.session < ? ORDER BY f.session, f.ordinal",
            (self.session,),
        )
        return [blob for (blob,) in rows]

    def failure_lines(self) -> Iterator[str]:
        """Every committed failure as its ``failed.jsonl`` line, in the order they were journaled, a batch of rows at
        a time: a million of them held at once took a resume 1.4 GB."""
        rows = self._conn.execute(
            "SELECT ordinal, item_json, error_type, error_message, attempts, first_failed_at, failed_at, traceback"
            " FROM failures ORDER BY rowid"
        )
        while batch := rows.fetchmany(1000):
            for row in batch:
                yield failure_line(*row)

    def _insert_failures(self, conn: sqlite3.Connection) -> None:
        """Insert the rows of ``_unwritten``. sqlite3 binds an int, float, str or bytearray as it is, but looks every
        other value up in its adapter registry first (0.45 µs each, about a sixth of a row's insert): a run that is
        not keyed leaves its key out of the parameters (always NULL), and an input's pickle is a bytearray."""
        if self.keyed:
            conn.executemany(INSERT_FAILURE, self._unwritten)
        else:
            conn.executemany(INSERT_UNKEYED_FAILURE, map(_without_key, self._unwritten))

    def _failure_rows(self, failures: list[Failure]) -> list[tuple[Any, ...]]:
        """The ``failures`` table's row of each failure. One loop for the batch, each input's type named once: a
        flood makes a row per item, and a call per row, with its type's name made and an int's JSON form checked for
        surrogates each time (digits: nothing to check), took 0.98 µs a row, this 0.57."""
        rows = []
        session, keyed, pending = self.session, self.keyed, self._pending
        pickled, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
        type_names: dict[type, str] = {}
        for failure in failures:
            ordinal, item, error_type, message, traceback, attempts, first_failed_at, failed_at = failure
            key = pending.pop(ordinal, None) if keyed else None
            item_type = type(item)
            type_name = type_names.get(item_type)
            if type_name is None:
                type_name = type_names[item_type] = f"{item_type.__module__}.{item_type.__qualname__}"
            try:
                blob: bytearray | None = bytearray(pickled(item, protocol))  # bound as it is (``_insert_failures``)
            except Exception as error:
                blob = None
                self._unpicklable_input(failure, type_name, error)
            if item_type is int:
                item_json = json_text(item)
            else:
                item_json = writable(json_text(item if item_type is str else json_form(item)))
            rows.append((
                ordinal, key, session, blob, type_name, item_json, error_type, message, traceback, attempts,
                first_failed_at, failed_at,
            ))  # fmt: skip
        return rows

    def _unpicklable_input(self, failure: Failure, type_name: str, error: Exception) -> None:
        """Count a failed input that cannot be pickled (its row keeps no copy); warn at the first of its type."""
        seen = self._unpicklable.get(type_name, 0)
        self._unpicklable[type_name] = seen + 1
        if not seen:  # a flood of them must not print a warning each
            log.warning(
                "Item #%d cannot be pickled (%s): `batchcli retry` will not have it. Other failed %s items that "
                "cannot be pickled are counted, and the count is logged when the session ends.",
                failure.ordinal, error, type_name,
            )  # fmt: skip

    # The end.

    def cooldown_left_s(self) -> float:
        """Seconds left now of the cool-down the session before this one was in when it ended (stopped, or killed,
        while the API's ``Retry-After`` ran): its last ``live`` row says how long was left then. 0 for none."""
        try:
            row = self._conn.execute(
                "SELECT t, state FROM live WHERE session < ? ORDER BY session DESC LIMIT 1", (self.session,)
            ).fetchone()
            state = json.loads(row[1]) if row is not None else {}
        except (sqlite3.OperationalError, ValueError):  # no live table yet, or a row that is not JSON
            return 0.0
        cooling = state.get("cooling_down_s") if isinstance(state, dict) else None
        if not isinstance(cooling, (int, float)) or not math.isfinite(cooling) or not isinstance(row[0], float):
            return 0.0
        return max(0.0, row[0] + cooling - time.time())

    def earlier_states(self) -> list[dict[str, Any]]:
        """The last ``live`` state of each earlier session (a killed one's too), oldest first; [] for none."""
        return live_states(self._conn, but=self.session)

    def active_s(self) -> float:
        """Seconds the run has been running, over every session so far (pauses between sessions left out)."""
        return self._earlier_active_s + time.time() - self._session_started

    def held_errors(self) -> dict[int, tuple[str, str]]:
        """How the items the breaker held when the last session stopped had failed (``HELD_ERRORS_TABLE``)."""
        if not table_exists(self._conn, "held_errors"):
            return {}
        return {ordinal: (kind, shape) for ordinal, kind, shape in self._conn.execute("SELECT * FROM held_errors")}

    def finish(
        self, status: str, fatal: BaseException | None, fatal_traceback: str = "",
        held: dict[int, tuple[str, str]] | None = None,
    ) -> None:  # fmt: skip
        """Write the session's final status (finished, stopped or crashed) and the counts; ``held``: the items the
        circuit breaker holds, and how they failed, for the next session (``HELD_ERRORS_TABLE``)."""
        if self._repeated_keys:
            log.warning(
                "%d succeeded item(s) of this session had a key an earlier item already had; they count once "
                "(see item_key() in the Source).", self._repeated_keys,
            )  # fmt: skip
        for type_name, count in self._unpicklable.items():
            if count > 1:
                log.warning(
                    "%d failed %s items could not be pickled: `batchcli retry` will not have them "
                    "(failed.jsonl and `batchcli show RUN --failures` list them).", count, type_name,
                )  # fmt: skip
        now = time.time()
        fatal_json = None
        if fatal is not None:
            message = mask_texts(error_text(fatal), self.tally.secrets)
            error = {"type": type(fatal).__qualname__, "message": message, "traceback": fatal_traceback}
            fatal_json = json.dumps(error)
        with self._conn:
            self._conn.execute(
                "UPDATE run SET succeeded = ?, failed = ?, total = ?, fatal = ?",
                (self.succeeded, self.failed, self.tally.total, fatal_json),
            )
            self._conn.execute(
                "UPDATE sessions SET seen_at = ?, ended_at = ?, status = ? WHERE id = ?",
                (now, now, status, self.session),
            )
            if self.handed_over:
                self._conn.execute("UPDATE handed_over SET done = 1 WHERE session <= ?", (self.session,))
            # Rewritten: emptied when nothing is held now but an earlier stop left the table.
            if held or (held is not None and table_exists(self._conn, "held_errors")):
                self._conn.execute(HELD_ERRORS_TABLE)
                self._conn.execute("DELETE FROM held_errors")
                rows = ((ordinal, kind, shape) for ordinal, (kind, shape) in held.items())
                self._conn.executemany("INSERT INTO held_errors VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        """Close the database (which folds the WAL back in) and let other processes open the run."""
        try:
            self._conn.close()
        except sqlite3.Error:  # folding the WAL back in needs space; the WAL itself keeps every commit
            pass
        finally:
            for held in self._held:
                held.release()
            self._lock.release()


def check_recordable(target: str) -> None:
    """The job's path must be text the journal can keep (UTF-8): ``resume`` imports the job from it again. A path
    with bytes that are not UTF-8 (Python holds them as lone surrogates) raised as the journal was made, leaving
    a half-made run directory; a UsageError before the directory is made now, saying what to rename."""
    try:
        stable_target(target).encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"The job's path {target!r} is not valid UTF-8 (the escaped characters are bytes that are not), and the "
            "run's journal keeps it as text, for resume to import the job from. Rename that file or directory to a "
            "UTF-8 name, then run it again."
        ) from None


def _recorded(job: Job, wiring: Wiring) -> tuple[str, list[str], str]:
    """The run record's params (JSON, secrets left out), secret names and environment-given names (JSON)."""
    # Every secret that was given a value, by -p or the environment: resume and retry ask for them all.
    secrets = sorted(n for n in wiring.values if n in job.secret_names)
    values = {name: list(raw) for name, raw in wiring.without(job.secret_names).values.items()}
    environment = sorted(n for n in wiring.environment if n in wiring.values)
    return json.dumps(values), secrets, json.dumps(environment)


def _insert_session(conn: sqlite3.Connection, now: float) -> int:
    cursor = conn.execute(
        "INSERT INTO sessions (pid, host, started_at, seen_at, status) VALUES (?, ?, ?, ?, 'running')",
        (os.getpid(), socket.gethostname(), now, now),
    )
    session = int(cursor.lastrowid or 0)
    conn.execute("INSERT INTO handed_over VALUES (?, 0)", (session,))
    return session


def stable_target(target: str) -> str:
    """An absolute path when the target is a path, so a resume from another directory finds it (the journal's
    ``target``: compare a job's with it through this too)."""
    path = Path(target).expanduser()
    return str(path.resolve()) if path.exists() else target
