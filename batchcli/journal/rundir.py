"""A run directory on disk: its journal file, the lock a live run holds, safety checks, a read-only view."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import socket
import re
import shlex
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Sequence
from typing import Any, Iterator
from urllib.parse import quote

from batchcli import __version__
from batchcli.errors import JournalError, JournalNewer, JournalUnreadable, UsageError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

JOURNAL_NAME = "journal.sqlite"
GROUP_FILE = "group.json"  # a shard group (journal.groups): shard run directories under one directory
FLUSH_INTERVAL_S = 0.2
"""How often a run records what settled: the journal promises at most 0.5 s of lost work, and this also
bounds how many ordinals wait in memory."""
HOLDER_NAME = "batchcli.pid"
"""Written by the process that holds the run directory's lock, right after taking it: its pid and host."""
FORMAT = 1
"""The journal's schema version; a journal of a newer format is refused."""

BUSY_TIMEOUT_S = 10.0
"""How long a statement waits for a journal another connection holds locked (a reader, a sqlite3 shell) before
it fails with "database is locked"."""


def connect(path: Path, *, writer: bool = False) -> sqlite3.Connection:
    """A connection to an existing journal: read-write for the run that owns it, read-only otherwise."""
    if not writer:
        return _reader(path)
    uri = f"file:{_uri_path(path)}?mode=rw"
    # The writer is used by the main thread and the recorder thread, one after the other.
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    # Every commit reaches the disk: one fsync per flush (every FLUSH_INTERVAL_S), not per item.
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _uri_path(path: Path) -> str:
    """``path`` for an SQLite URI: its bytes as the file system has them, percent-encoded. A name that is not
    UTF-8 (Python holds its bytes as surrogates) made ``quote(str)`` raise, after the run directory was made."""
    return quote(os.fsencode(path.resolve()))


def _reader(path: Path) -> sqlite3.Connection:
    """A read-only connection, also for a journal in a directory we cannot write (another user's, a read-only disk).

    A WAL database opened read-only still needs its ``-shm`` file writable, or the directory writable to
    create it; without either SQLite refuses ("unable to open database file", "attempt to write a readonly
    database"), and so it does for a journal file that cannot be written. Then the journal and its WAL are
    copied and read from the copy instead.
    """
    conn: sqlite3.Connection | None = None
    try:
        # Not tied to this thread: a reader generator left half-read (read_results) is closed by whichever thread the
        # garbage collector runs on, and closing there raised ("Exception ignored ... same thread"), leaving it open.
        conn = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opening is lazy: make it happen here
        return conn
    except sqlite3.OperationalError as error:
        # Refused for want of write access somewhere (the directory, -shm, -wal, the file itself): the copy
        # needs none. A journal that is really damaged fails again there, with sqlite3's error.
        if conn is not None:
            conn.close()
        try:
            return _snapshot(path)
        except OSError as copy_error:
            raise JournalUnreadable(
                f"The journal {str(path)!r} cannot be read ({error}; copying it: {copy_error.strerror or copy_error}). "
                "Run the command as the user who owns the run directory, or ask them to copy it for you."
            ) from copy_error


def _snapshot(path: Path) -> sqlite3.Connection:
    """The journal (with what its WAL holds) as an in-memory database, read from a private copy."""
    with tempfile.TemporaryDirectory(prefix="batchcli-journal-") as scratch:
        copy = Path(scratch) / JOURNAL_NAME
        shutil.copyfile(path, copy)
        wal = Path(f"{path}-wal")
        if wal.exists():
            shutil.copyfile(wal, f"{copy}-wal")  # the last flushes may still be only there
        disk = sqlite3.connect(copy)
        try:
            memory = sqlite3.connect(":memory:", check_same_thread=False)  # as a reader is (see _reader)
            disk.backup(memory)
        finally:
            disk.close()
    return memory


def damaged(path: Path, reason: str) -> JournalError:
    """The error for a journal that cannot be read."""
    return JournalError(
        f"The journal {str(path)!r} is damaged ({reason}), so this run cannot be resumed, retried or shown. "
        "What it recorded is also in failed.jsonl and summary.json next to it; start the job again with "
        "`batchcli exec` to redo it."
    )


def check_format(conn: sqlite3.Connection, path: Path) -> None:
    """A clear error when a newer batchcli wrote the journal: its schema may differ (a query then fails), and it was
    called damaged, with the advice to redo the run with exec, where upgrading batchcli is all it takes."""
    try:
        row = conn.execute("SELECT format, batchcli_version FROM run").fetchone()
    except sqlite3.Error:
        return  # no run table, or no format column: the caller's own query says what is wrong
    if row is not None and isinstance(row[0], int) and row[0] > FORMAT:
        raise JournalNewer(
            f"The journal {str(path)!r} was written by batchcli {row[1]}, in a newer format than this batchcli "
            f"({__version__}) reads. Upgrade batchcli (pip install --upgrade batchcli) to show, resume or retry it."
        )


def journal_path(run_dir: Path) -> Path:
    """``RUN_DIR/journal.sqlite``, or a clear error when the directory or its journal is missing."""
    if not run_dir.is_dir():
        what = "is a file, not a run directory" if run_dir.exists() else "does not exist"
        raise JournalError(
            f"Run directory {str(run_dir)!r} {what}. Give one of the directories "
            "`batchcli runs -d OUTPUT_DIR` lists."
        )
    path = run_dir / JOURNAL_NAME
    if not path.is_file() and never_started(run_dir):
        raise JournalError(
            f"Run {str(run_dir)!r} never started: it was stopped while its run directory was being made, "
            "before anything ran, so there is nothing to resume, retry or show. Start the job again with "
            f"`batchcli exec`; the directory can be deleted (rm -r '{run_dir}')."
        )
    if not path.is_file() and (run_dir / GROUP_FILE).is_file():
        shards = sorted(p.name for p in run_dir.glob("shard-*-of-*") if p.is_dir())
        example = str(run_dir / (shards[0] if shards else "shard-0-of-N"))
        raise JournalError(
            f"{str(run_dir)!r} is a group of shards, not one run: this command takes one shard's run directory, "
            f"like {example!r} (its shards: {', '.join(shards) or 'none yet'}). Running a shard again with "
            "`batchcli exec ... --shard I/N` also continues it; `show`, `retry`, `results` and `runs` take the whole group."
        )
    if not path.is_file():
        raise JournalError(
            f"{str(run_dir)!r} has no {JOURNAL_NAME}: it is not a batchcli run directory (or its run was made "
            "by a batchcli without journals). Give one of the directories `batchcli runs -d OUTPUT_DIR` lists."
        )
    return path


def check_output_dir(output_dir: Path) -> None:
    """Create ``output_dir`` (and its parents) if it is missing; a UsageError when it cannot hold run directories."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise unusable_output_dir(output_dir, error) from error


def unusable_output_dir(output_dir: Path, error: OSError) -> UsageError:
    """The error for an output directory (``-d``) that cannot be created or written, naming the path and the fix."""
    shown = repr(str(output_dir))
    # A file in the way gives ENOTDIR or EEXIST; name the file, wherever it is on the path.
    blocker = next((p for p in (output_dir, *output_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocker == output_dir:
        return UsageError(
            f"Output directory {shown} is a file, not a directory. Give -d a directory (batchcli creates it "
            "if it is missing), or move the file away."
        )
    if blocker is not None:
        return UsageError(
            f"Output directory {shown} cannot be created: {str(blocker)!r} is a file, not a directory. "
            "Give -d a path whose parents are directories."
        )
    # mkdir names the directory it could not make; the one that refused it is its parent.
    where = str(Path(error.filename).parent if error.filename else output_dir)
    if error.errno == errno.EROFS:
        return UsageError(
            f"Output directory {shown} is on a read-only file system ({where!r}). Give -d a directory on a "
            "writable file system."
        )
    if isinstance(error, PermissionError):
        return UsageError(
            f"Cannot make a run directory in output directory {shown}: {where!r} is not writable "
            f"({error.strerror or 'permission denied'}). Give -d a directory you can write to, or make {where!r} "
            f"writable for you (chmod u+w {where!r})."
        )
    if no_room(error):  # as a run directory with no room for its journal: exit 3, "free some space"
        refused = UsageError(
            f"Cannot make a run directory in output directory {shown}: {error.strerror or error} ({where!r}; "
            f"{free_space(Path(where))} free{'; no inode is left for a new file' if out_of_inodes(Path(where)) else ''}), "
            "so the run did not start: no item was processed. Free some space on that disk, then run the command "
            "again (or give it another output directory with -d)."
        )
        refused.exit_code = 3
        return refused
    return UsageError(
        f"Cannot make a run directory in output directory {shown}: {error.strerror or error} ({where!r}). "
        "Give -d a directory you can write to."
    )


def free_space(path: Path) -> str:
    """The free space of ``path``'s file system, for messages."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "unknown space"
    return f"{free:,} bytes" if free < 1 << 20 else f"{free / (1 << 20):,.1f} MiB"


def out_of_inodes(path: Path) -> bool:
    """True when ``path``'s file system has room but no inode left for a new file (a tmpfs made with few)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return False
    return stats.f_files > 0 and stats.f_favail == 0  # some file systems report no inode counts at all


def never_started(run_dir: Path) -> bool:
    """A run directory left by a process killed while making its journal: only the half-made draft is there.

    The journal is built as ``journal.sqlite.new`` and renamed when complete (``Journal.create``), so
    the draft alone means the run had not started; a ``kill -9`` or a power cut there leaves it.
    """
    return (run_dir / f"{JOURNAL_NAME}.new").is_file() and not (run_dir / JOURNAL_NAME).exists()


def check_safe(run_dir: Path) -> Path:
    """The journal's path, after checking nobody but its owner (you) could have written it.

    A journal holds pickles, and unpickling runs code, so a journal someone else could have
    written is a way into your account: refuse it.
    """
    path = journal_path(run_dir)
    uid = os.getuid() if hasattr(os, "getuid") else None
    for part in (run_dir, path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            st = part.stat()
        except FileNotFoundError:
            continue
        if uid is not None and st.st_uid != uid:
            raise JournalError(
                f"{str(part)!r} belongs to user id {st.st_uid}, not to you (user id {uid}). A journal holds pickled "
                "inputs, and loading a pickle runs code, so batchcli only loads journals you own. If you trust it, "
                "copy the run directory (the copy is yours) and resume or retry the copy."
            )
        if st.st_mode & 0o022:
            who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002)) if st.st_mode & bit)
            fix = f"'{run_dir}'" if part == run_dir else f"'{run_dir}'/{JOURNAL_NAME}*"
            raise JournalError(
                f"{str(part)!r} is writable by {who} (mode {oct(st.st_mode & 0o777)}). A journal holds pickled inputs, "
                "and loading a pickle runs code, so batchcli refuses one that others could have changed. If nobody "
                f"else wrote to it, make it yours alone: chmod go-w {fix}"
            )
    return path


def check_writable(run_dir: Path) -> None:
    """Resuming writes the journal in place: refuse a run directory or journal files this user cannot write."""
    for part in (run_dir, *(p for p in run_dir.glob(f"{JOURNAL_NAME}*") if p.is_file())):
        if not os.access(part, os.W_OK):
            raise JournalError(
                f"{str(part)!r} is not writable (a read-only disk, an immutable file, or not yours to write), and "
                "resume continues a run in its own directory, writing its journal. Make it writable "
                f"(chmod u+w {str(part)!r}), or copy the run directory and resume the copy."
            )


class RunLock:
    """An exclusive ``flock`` on the run directory, held by the process running it.

    The kernel drops it when the process dies, even by ``kill -9``, so a journal still marked
    running whose lock is free belongs to a crashed run; and two resumes of one run cannot overlap.
    """

    def __init__(self, fd: int | None, run_dir: Path | None = None) -> None:
        self._fd = fd
        self._run_dir = run_dir

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Lock ``run_dir``, or raise a JournalError when another process runs it."""
        if fcntl is None:
            return cls(None)
        fd = os.open(run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = lock_holder(run_dir) or _live_session_pid(run_dir)
            raise JournalError(
                f"Run {str(run_dir)!r} is still running in another process{f' (pid {pid})' if pid else ''}. "
                f"Wait for it to end, or stop it first (Ctrl-C in its terminal, or kill -INT {pid or 'PID'})."
            ) from None
        _write_holder(run_dir)
        return cls(fd, run_dir)

    def release(self) -> None:
        """Unlock (idempotent)."""
        if self._fd is not None:
            if self._run_dir is not None:
                # Before unlocking: once unlocked, the file may already be the next holder's.
                with contextlib.suppress(OSError):
                    (self._run_dir / HOLDER_NAME).unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def is_held(run_dir: Path) -> bool:
        """True when some process holds the lock of ``run_dir``."""
        if fcntl is None:
            return True
        try:
            fd = os.open(run_dir, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)


RETRYING_NAME = "batchcli.retrying"
"""The lock file held by each process that takes a run's failed inputs or adds to them (``RetryLock``)."""

_HOLDING = {
    "retry": ("retried", "which reprocesses its failed inputs"),
    "resume": ("resumed", "which adds to its failures"),
}
"""What a holder of ``RETRYING_NAME`` does, by the role it wrote there, for the message that refuses another."""


class RetryLock:
    """An exclusive ``flock`` on ``RETRYING_NAME`` in a run's directory, held for the whole run by each process that
    takes the run's failed inputs or adds to them: a retry of the run (or of a retry of it: they take the same
    inputs), a resume of such a retry, and a resume of the run itself (``hold_failures``). Two retries at once
    processed each input twice; a retry that checked and copied the failures while a resume of the run recorded
    more took some it had never checked. Not the run's own lock: ``runs``, ``show`` and ``ctl`` would read the run
    as running. The kernel drops it when the process dies."""

    def __init__(self, fd: int | None, dir_fd: int | None = None) -> None:
        self._fd = fd
        self._dir_fd = dir_fd
        """The run's directory, where ``release`` removes the file (the run may have been moved meanwhile); None
        when the lock is on the run's journal instead (``_journal_locked``)."""

    @classmethod
    def acquire(cls, run_dir: Path, role: str, whose: str = "") -> RetryLock:
        """Take it as ``role`` (a key of ``_HOLDING``), or raise a JournalError naming the holder; ``whose`` says, for
        that message, why this command needs ``run_dir`` when it is not the run named on the command line."""
        if fcntl is None:
            return cls(None)
        try:
            dir_fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return cls(None)  # a run gone meanwhile: the command's own checks say so
        try:
            fd = _locked(run_dir, dir_fd, whose)
            if fd is None:  # no file can be made there (a read-only or another user's run): its journal holds it
                fd = _journal_locked(run_dir, dir_fd, whose)
                os.close(dir_fd)
                return cls(fd)
        except BaseException:
            os.close(dir_fd)
            raise
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {role}\n".encode())
        return cls(fd, dir_fd)

    def release(self) -> None:
        """Let go (idempotent). The file goes first, when it is still ours: a process that opened it just before
        finds, once it has the lock, that the file is no longer there, and takes the new one (``_locked``)."""
        if self._fd is not None:
            if self._dir_fd is not None:
                with contextlib.suppress(OSError):
                    if _same_file(os.fstat(self._fd), RETRYING_NAME, self._dir_fd):
                        os.unlink(RETRYING_NAME, dir_fd=self._dir_fd)
            os.close(self._fd)
            self._fd = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


LOCK_WAIT_S = 0.5
"""How long ``RetryLock`` tries again before it refuses: ``holding`` (``show --failures``) takes it shared for an
instant, and a holder writes who it is just after it takes it."""


def _same_file(st: os.stat_result, name: str, dir_fd: int) -> bool:
    """Whether ``name`` in ``dir_fd`` is the file ``st`` describes (not removed, nor made again, meanwhile)."""
    try:
        there = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino)


def _locked(run_dir: Path, dir_fd: int, whose: str) -> int | None:
    """The lock file in ``dir_fd``, opened and locked; None when no file can be made there."""
    path = run_dir / RETRYING_NAME
    while True:
        try:
            # Never through a symlink planted there (a copied run keeps one): it would truncate the file it names.
            fd = os.open(RETRYING_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600, dir_fd=dir_fd)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise JournalError(
                    f"{str(path)!r} is a symbolic link, which batchcli never makes: remove it, then retry."
                ) from None
            if error.errno == errno.EISDIR:
                raise JournalError(f"{str(path)!r} is a directory, which batchcli never makes: remove it, then retry.") from None
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
                raise JournalError(
                    f"{str(path)!r} is not a file of yours that batchcli made (a FIFO, a device, a hard link, or "
                    "another user's): remove it, then retry."
                )
            if not _flocked(fd):
                raise JournalError(_held(run_dir, os.read(fd, 64).decode(errors="replace"), whose))
            if _same_file(st, RETRYING_NAME, dir_fd):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder let it go and removed it as we opened it: the lock is the file there now


def _journal_locked(run_dir: Path, dir_fd: int, whose: str) -> int | None:
    """The run's journal, opened read-only and locked (``flock``, apart from SQLite's own locks), for a run in whose
    directory no lock file can be made: a read-only or another user's run, retried elsewhere with ``-d`` (two such
    retries each processed every input). Kept open until ``release``: closing another descriptor of an SQLite file
    would drop the process's own SQLite locks on it. None when the journal cannot be opened either."""
    try:
        fd = os.open(JOURNAL_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    if not _flocked(fd):
        os.close(fd)
        raise JournalError(_held(run_dir, "", whose))
    return fd


def _flocked(fd: int) -> bool:
    """Take ``fd``'s exclusive ``flock``, trying again for ``LOCK_WAIT_S``; False when another process keeps it."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def holding(run_dir: Path) -> tuple[str, int | None] | None:
    """Who holds ``run_dir``'s ``RetryLock``, as ("retried by another process (pid 123)", 123); None when no one does
    (or it cannot be told). For ``retry --dry-run`` and ``show --failures``, which list what a retry would take."""
    if fcntl is None:
        return None
    try:
        fd = os.open(run_dir / RETRYING_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        done, _, pid = _holder(os.read(fd, 64).decode(errors="replace"))
        return f"{done} by another process{_pid_text(pid)}", pid
    except OSError:
        return None
    finally:
        os.close(fd)


def _holder(record: str) -> tuple[str, str, int | None]:
    """What the holder that wrote ``record`` does, what that does to the failures, and its pid while it lives."""
    pid, _, role = record.strip().partition(" ")
    done, which = _HOLDING.get(role, _HOLDING["retry"])  # a batchcli before roles wrote only its pid: a retry
    if not pid.isdigit() or not pid_alive(int(pid)):  # a holder that has not written yet over one killed -9
        return done, which, None
    return done, which, int(pid)


def _pid_text(pid: int | None) -> str:
    return "" if pid is None else f" (pid {pid})"


def _held(run_dir: Path, record: str, whose: str) -> str:
    done, which, pid = _holder(record)
    return (
        f"Run {str(run_dir)!r}{whose} is being {done} by another process{_pid_text(pid)}, {which}. Running this command "
        "now would process inputs twice, or take failures still being recorded: wait for that process to end, or stop "
        f"it (Ctrl-C, or kill -INT {pid or 'PID'}), then run this command again."
    )


def lineage(runs: Sequence[Path]) -> list[Path]:
    """``runs`` and, for each retry run among them, the runs whose failures it reprocesses, back to the first: a
    retry of a retry takes the same inputs as the first, and a group's retry every shard's. Runs that are gone or
    unreadable are passed over."""
    from batchcli.journal.groups import is_group, shard_runs  # groups builds on this module

    found: dict[Path, None] = {}
    todo = list(runs)
    while todo:
        run = todo.pop(0)
        if run in found:
            continue
        found[run] = None
        try:
            place = retried_from(run)
            if place is not None:
                todo += shard_runs(place).values() if is_group(place) else [place]
        except (JournalError, sqlite3.Error, OSError, IndexError):
            continue
    return [run for run in found if run in runs or (run / JOURNAL_NAME).is_file()]


def quoted(path: Path | str) -> str:
    """``path`` as a shell reads it back, for the commands messages suggest (a path with a space in it)."""
    return shlex.quote(str(path))


def retried_place(retry: Path, parent: str) -> Path | None:
    """Where the run (or group) that the retry run ``retry`` reprocesses is now (its journal records ``parent``): at
    that path, or, moved together with the retry (an output directory renamed), beside it under the same name, or
    the retry's own directory for a group's retry (the group renamed too); with any symbolic link resolved. None when it is in none of these
    places. A link made since is followed only to a directory of this user's: the retry's lock is written there, and
    someone who could change the path could send it anywhere else."""
    recorded = Path(parent)
    here = retry.resolve().parent
    group = (here / GROUP_FILE).is_file()  # a group's retry sits in it, renamed or not; a shard's retry too
    for place in (recorded, here / recorded.name, here):
        if place == here and not (group or here.name == recorded.name):
            continue
        try:
            real = Path(os.path.realpath(place))
            if real.is_dir() and (real == place or not hasattr(os, "getuid") or real.stat().st_uid == os.getuid()):
                return real
        except OSError:
            continue
    return None


def retried_from(run_dir: Path) -> Path | None:
    """Where the run (or group) that the retry run ``run_dir`` reprocesses is now (``retried_place``); None for a
    run that is no retry, or whose parent is in none of the places looked at."""
    parent = query(run_dir, "SELECT parent FROM run")[0][0]
    return retried_place(run_dir, parent) if parent else None


_HAS_TABLE = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"


def has_table(run_dir: Path, table: str) -> bool:
    """Whether the journal of ``run_dir`` has ``table`` (an optional one: older journals lack it)."""
    return bool(query(run_dir, _HAS_TABLE, (table,)))


def table_exists(conn: sqlite3.Connection, table: str) -> bool:
    """``has_table`` on a connection already open."""
    return conn.execute(_HAS_TABLE, (table,)).fetchone() is not None


def hold_failures(runs: Sequence[Path], role: str) -> list[RetryLock]:
    """The ``RetryLock`` of each of ``runs``, taken as ``role``, and of each run they retried (``lineage``), taken as
    a retry: all of them, or a JournalError and none."""
    held: list[RetryLock] = []
    try:
        for run in lineage(runs):
            first = run in runs
            whose = "" if first else f", whose failed inputs {str(runs[0])!r} reprocesses,"
            held.append(RetryLock.acquire(run, role if first else "retry", whose))
    except BaseException:
        for lock in held:
            lock.release()
        raise
    return held


def _write_holder(run_dir: Path) -> None:
    """Record who holds the lock. The journal's newest session row cannot say: a resume holds the lock
    while it loads the project, before it adds its session, and until then that row is the dead run's."""
    draft = run_dir / f"{HOLDER_NAME}.new"
    try:
        draft.write_text(f"{os.getpid()} {socket.gethostname()}\n")
        os.replace(draft, run_dir / HOLDER_NAME)  # whole or absent for a reader
    except OSError:  # only the message names the holder; the lock itself is what keeps runs apart
        draft.unlink(missing_ok=True)  # on a full disk an empty draft was left in a resumed run's directory


def no_room(error: BaseException) -> bool:
    """Whether a write failed for want of room: no space, no inode or a quota (``OSError``), or SQLite's "full"."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return getattr(error, "sqlite_errorname", None) == "SQLITE_FULL"


def held_locked(error: BaseException) -> bool:
    """Whether a write failed because another connection held the journal locked past the wait (``SQLITE_BUSY``)."""
    return (getattr(error, "sqlite_errorname", None) or "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def _read_holder(run_dir: Path) -> tuple[int, str] | None:
    try:
        pid, host = (run_dir / HOLDER_NAME).read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def lock_holder(run_dir: Path, wait_s: float = 2.0) -> int | None:
    """The pid of the process holding ``run_dir``'s lock, from what it wrote under the lock; None if unknown.

    A process that has just taken the lock may not have written its pid yet: wait up to ``wait_s`` for it
    rather than name the previous holder.
    """
    deadline = time.monotonic() + wait_s
    while True:
        holder = _read_holder(run_dir)
        if holder is not None and _alive(*holder):
            return holder[0]
        if time.monotonic() >= deadline or not RunLock.is_held(run_dir):
            return None
        time.sleep(0.05)


def _live_session_pid(run_dir: Path) -> int | None:
    """The newest session's pid if that process is alive: for a holder that wrote no record (an older batchcli)."""
    try:
        conn = connect(run_dir / JOURNAL_NAME)
        try:
            row = conn.execute("SELECT pid, host FROM sessions ORDER BY id DESC LIMIT 1").fetchone()
        finally:
            conn.close()
    except (sqlite3.Error, OSError, JournalError):
        return None
    return int(row[0]) if row and _alive(int(row[0]), row[1]) else None


def _alive(pid: int, host: str) -> bool:
    # A pid only means something on the machine that wrote it: elsewhere, trust the lock.
    return host != socket.gethostname() or pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` of this machine runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has died and waits for its parent to reap it, which ``kill(pid, 0)`` still answers: a run
    killed under an attached console read as running until its parent (a shell, a test) reaped it, and the console
    said it did not know what became of the run. Read from ``/proc`` (Linux); elsewhere, not known: False."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] in (b"Z", b"X")  # the state follows the name's ")"
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class RunInfo:
    """One run as its journal tells it, read without loading any pickle."""

    run_dir: Path
    job: str
    target: str
    """The project path (absolute) or installed job name."""
    config_name: str | None
    """The ``-c`` name the run was started with."""
    configuration: str
    """The configuration class's name."""
    params: dict[str, list[str]]
    """Raw values from ``-p`` and ``BATCHCLI_*`` variables; secrets are left out."""
    secrets: list[str]
    """Params whose values were secrets (given by ``-p`` or the environment): give them again to resume or retry."""
    parent: str | None
    """The run a retry reprocesses the failures of."""
    status: str
    """running, finished, stopped or crashed (a run marked running whose process is gone)."""
    pid: int | None
    sessions: int
    """1, plus one per resume."""
    started_at: float
    """Epoch seconds the first session started."""
    ended_at: float
    """Epoch seconds of the last sign of life: the end, or the last flush of a crashed run."""
    active_s: float
    """Seconds spent running, over every session, time paused in the pause shell left out (as in ``summary.json``)."""
    total: int | None
    succeeded: int
    failed: int
    fatal: dict[str, str] | None
    """The error that crashed the last session, if any."""
    version: str
    environment: tuple[str, ...] = ()
    """Names (in ``params`` or ``secrets``) whose values came from ``BATCHCLI_*`` variables, not ``-p``."""
    starting: bool = False
    """Running, but not begun yet: a resume that holds the run's lock while it loads the project, before it adds
    its session (so ``pid`` is its process, not the newest session's)."""
    breaker: dict[str, float] | None = None
    """The circuit breaker's counts summed over each session's last ``live`` row, a killed session's too (its open
    episode included); None in a journal older than those counts, or with the breaker off."""

    @property
    def unprocessed(self) -> int | None:
        """Items neither succeeded nor failed (None while the total is unknown); never below 0, also for a run whose
        source lost settled items before it ran out (its total counts them only then)."""
        return None if self.total is None else max(0, self.total - self.succeeded - self.failed)

    @property
    def rate(self) -> float | None:
        """Items settled per second of running."""
        return (self.succeeded + self.failed) / self.active_s if self.active_s > 0 else None


def read_run(run_dir: Path) -> RunInfo:
    """The journal of ``run_dir`` as a RunInfo; a clear error when it is missing or damaged."""
    path = journal_path(run_dir)
    try:
        conn = connect(path)
        try:
            check_format(conn, path)
            run = conn.execute(
                "SELECT job, target, config_name, configuration, params, secrets, parent, total, succeeded, failed,"
                " fatal, batchcli_version FROM run"
            ).fetchone()
            sessions = conn.execute(
                "SELECT pid, host, started_at, seen_at, ended_at, status FROM sessions ORDER BY id"
            ).fetchall()
            environment = _environment_names(conn)
            paused, breaker = _from_live(conn)
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise damaged(path, str(error)) from error
    if run is None or not sessions:
        raise damaged(path, "it has no run record")
    pid, host, _, seen_at, ended_at, status = sessions[-1]
    holder = _running(run_dir, pid, host)
    starting = False
    if status == "running":
        starting = holder is not None and holder != pid  # resuming a killed session, not begun yet
        status, pid = ("crashed", pid) if holder is None else ("running", holder)
    elif holder is not None:
        # A resume holds the lock while it loads the project, before it adds its session: until then the newest
        # row is the ended session's, and the run must not read as stopped (ctl was refused, a retry accepted).
        status, pid, starting = "running", holder, True
    now = time.time()
    live = status == "running"
    ends = [s[4] or s[3] for s in sessions[:-1]] + [ended_at or (now if live else seen_at)]
    try:  # a record edited by hand (or by a tool) to what is not JSON: the journal's damage, not a traceback
        params, secrets, fatal = json.loads(run[4]), json.loads(run[5]), json.loads(run[10]) if run[10] else None
    except (ValueError, TypeError) as error:
        raise damaged(path, f"its run record does not read as JSON ({error})") from error
    return RunInfo(
        run_dir=run_dir,
        job=run[0],
        target=run[1],
        config_name=run[2],
        configuration=run[3],
        params=params,
        secrets=secrets,
        parent=run[6],
        status=status,
        pid=pid,
        sessions=len(sessions),
        started_at=sessions[0][2],
        ended_at=ends[-1],
        active_s=max(0.0, sum(end - s[2] for s, end in zip(sessions, ends)) - paused),
        total=run[7],
        succeeded=run[8],
        failed=run[9],
        fatal=fatal,
        version=run[11],
        environment=environment,
        starting=starting,
        breaker=breaker,
    )


def number(value: object) -> float:
    """A count or seconds read back from a journal or an earlier summary; 0 for what is not a finite number (a damaged
    file)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


def breaker_totals(sessions: Iterable[object], counts: dict[str, float] | None = None) -> dict[str, float] | None:
    """The circuit breaker's counts summed over ``sessions`` (each session's own counts, from its ``live`` state or a
    summary; what is not a dict counts nothing), added to ``counts`` (this session's); None when nothing counted.
    Counts of events stay whole numbers ("trips": 2, not 2.0, in summary.json); only ``open_s`` is seconds."""
    total = dict(counts) if counts is not None else None
    for session in sessions:
        if not isinstance(session, dict) or not session:
            continue
        total = total or {name: 0 for name in session}
        for name, value in session.items():
            total[name] = total.get(name, 0) + number(value)
    if total is None:
        return None
    return {name: round(value, 3) if name == "open_s" else int(value) for name, value in total.items()}


def live_states(conn: sqlite3.Connection, but: int | None = None) -> list[dict[str, Any]]:
    """The last ``live`` state of each session (a killed one's too; not session ``but``'s), oldest first: [] in a
    journal written before the live table. A state that is not a JSON object is left out."""
    try:
        rows = conn.execute("SELECT state FROM live WHERE session IS NOT ? ORDER BY session", (but,)).fetchall()
    except sqlite3.OperationalError:
        return []
    states = []
    for (state,) in rows:
        try:
            value = json.loads(state)
        except ValueError:
            continue
        if isinstance(value, dict):
            states.append(value)
    return states


def _from_live(conn: sqlite3.Connection) -> tuple[float, dict[str, float] | None]:
    """What each session's last ``live`` row says over every session: the seconds spent in the pause shell, and the
    circuit breaker's counts (``breaker_totals``; None when no row holds them)."""
    states = live_states(conn)
    values = (state.get("paused_s") for state in states)
    paused = sum(value for value in values if isinstance(value, (int, float)))
    counts = [state["breaker_counts"] for state in states if isinstance(state.get("breaker_counts"), dict)]
    return paused, breaker_totals(counts)


def _environment_names(conn: sqlite3.Connection) -> tuple[str, ...]:
    """The run's names given by ``BATCHCLI_*`` variables; none in a journal written before they were recorded."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(run)")}
    if "environment" not in columns:
        return ()
    row = conn.execute("SELECT environment FROM run").fetchone()
    return tuple(json.loads(row[0])) if row else ()


def _running(run_dir: Path, pid: int, host: str) -> int | None:
    """The pid of the live process running ``run_dir``, or None when its session's process is gone."""
    if not RunLock.is_held(run_dir):
        return None
    # The lock holder's own record first; the session row for runs of a batchcli that wrote none.
    for candidate in (_read_holder(run_dir), (pid, host)):
        if candidate is not None and _alive(*candidate):
            return candidate[0]
    return None


_NUMBERS = re.compile(r"\b\w*\d\w*(?:\.\d+)?")
"""A word with a digit in it. The word boundary (``\\b``) keeps it linear: without it, every position of a long
word with no digit (a 50 KB response body in a message) started a scan to the word's end, and ``show`` spent
minutes on 20 failures."""


def message_shape(message: str | None) -> str:
    """An error message with its numbers, and the words with digits in them (ids, hashes: ``3fa9c1``), replaced
    by ``N``, so "user 97 ..." and "user 194 ...", or "key 'a3f9' ..." and "key '0bc2' ...", group together."""
    return _NUMBERS.sub("N", message or "")


def message_shapes(messages: list[str]) -> list[str]:
    """``message_shape`` of each message, in one pass of the pattern over them all joined by newlines when none holds
    one: a word never spans a newline, which is a word boundary as the ends of a message are. A flood's console
    shapes every failure's message, and a call each cost a sixth more."""
    shapes = _NUMBERS.sub("N", "\n".join(messages)).split("\n")
    if len(shapes) != len(messages):  # a message of several lines: split, it would not line up
        return [_NUMBERS.sub("N", message) for message in messages]
    return shapes


def stream(run_dir: Path, sql: str, args: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The rows of a read-only query on the journal of ``run_dir``, a batch at a time: for the failures table,
    which may hold millions (``query`` holds every row at once). The connection closes with the iterator."""
    path = journal_path(run_dir)
    try:
        conn = connect(path)
    except sqlite3.Error as error:
        raise damaged(path, str(error)) from error
    try:
        conn.create_function("shape", 1, message_shape, deterministic=True)
        cursor = conn.execute(sql, args)
        while rows := cursor.fetchmany(1000):
            yield from rows
    except sqlite3.Error as error:
        raise damaged(path, str(error)) from error
    finally:
        conn.close()


def query(run_dir: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the journal of ``run_dir``, all at once."""
    return list(stream(run_dir, sql, args))


ROWIDS_AT_ONCE = 500
"""Rowids looked up in one query (SQLite allows 999 parameters in older builds)."""


def failures_by_rowid(run_dir: Path, columns: str, rowids: Sequence[int]) -> Iterator[tuple[Any, ...]]:
    """``columns`` of the failures with these rowids, in the order given, a batch of rowids at a time."""
    for start in range(0, len(rowids), ROWIDS_AT_ONCE):
        part = tuple(rowids[start : start + ROWIDS_AT_ONCE])
        sql = f"SELECT rowid, {columns} FROM failures WHERE rowid IN ({', '.join('?' * len(part))})"
        found = {row[0]: row[1:] for row in query(run_dir, sql, part)}
        for rowid in part:
            yield found[rowid]
