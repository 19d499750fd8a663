"""A run directory on disk: its journal file, the lock a live run holds, safety checks, a read-only view."""

from __future__ import annotations

import json
import os
import socket
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from batchcli.errors import JournalError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

JOURNAL_NAME = "journal.sqlite"
FORMAT = 1
"""The journal's schema version; a journal of a newer format is refused."""


def connect(path: Path, *, writer: bool = False) -> sqlite3.Connection:
    """A connection to an existing journal: read-write for the run that owns it, read-only otherwise."""
    uri = f"file:{quote(str(path.resolve()))}?mode={'rw' if writer else 'ro'}"
    # The writer is used by the main thread and the recorder thread, one after the other.
    conn = sqlite3.connect(uri, uri=True, check_same_thread=not writer, timeout=10)
    # Every commit reaches the disk: one fsync per flush (every 0.5 s), not per item.
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def damaged(path: Path, reason: str) -> JournalError:
    """The error for a journal that cannot be read."""
    return JournalError(
        f"The journal {str(path)!r} is damaged ({reason}), so this run cannot be resumed, retried or shown. "
        "What it recorded is also in failed.jsonl and summary.json next to it; start the job again with "
        "`batchcli exec` to redo it."
    )


def journal_path(run_dir: Path) -> Path:
    """``RUN_DIR/journal.sqlite``, or a clear error when the directory or its journal is missing."""
    if not run_dir.is_dir():
        raise JournalError(
            f"Run directory {str(run_dir)!r} does not exist. Give one of the directories "
            "`batchcli runs -d OUTPUT_DIR` lists."
        )
    path = run_dir / JOURNAL_NAME
    if not path.is_file() and never_started(run_dir):
        raise JournalError(
            f"Run {str(run_dir)!r} never started: it was stopped while its run directory was being made, "
            "before anything ran, so there is nothing to resume, retry or show. Start the job again with "
            f"`batchcli exec`; the directory can be deleted (rm -r '{run_dir}')."
        )
    if not path.is_file():
        raise JournalError(
            f"{str(run_dir)!r} has no {JOURNAL_NAME}: it is not a batchcli run directory (or its run was made "
            "by a batchcli without journals). Give one of the directories `batchcli runs -d OUTPUT_DIR` lists."
        )
    return path


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


class RunLock:
    """An exclusive ``flock`` on the run directory, held by the process running it.

    The kernel drops it when the process dies, even by ``kill -9``, so a journal still marked
    running whose lock is free belongs to a crashed run; and two resumes of one run cannot overlap.
    """

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

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
            pid = _last_pid(run_dir)
            raise JournalError(
                f"Run {str(run_dir)!r} is still running in another process{f' (pid {pid})' if pid else ''}. "
                "Wait for it to end, or stop it first (Ctrl-C in its terminal, or kill -INT PID)."
            ) from None
        return cls(fd)

    def release(self) -> None:
        """Unlock (idempotent)."""
        if self._fd is not None:
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


def _last_pid(run_dir: Path) -> int | None:
    try:
        conn = connect(run_dir / JOURNAL_NAME)
        try:
            row = conn.execute("SELECT pid FROM sessions ORDER BY id DESC LIMIT 1").fetchone()
        finally:
            conn.close()
        return int(row[0]) if row else None
    except (sqlite3.Error, OSError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    """Raw ``-p`` values; secrets are left out."""
    secrets: list[str]
    """Params whose values were secrets: give them again to resume or retry."""
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
    """Seconds spent running, over every session."""
    total: int | None
    succeeded: int
    failed: int
    fatal: dict[str, str] | None
    """The error that crashed the last session, if any."""
    version: str

    @property
    def unprocessed(self) -> int | None:
        """Items neither succeeded nor failed (None while the total is unknown)."""
        return None if self.total is None else self.total - self.succeeded - self.failed

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
            run = conn.execute(
                "SELECT job, target, config_name, configuration, params, secrets, parent, total, succeeded, failed,"
                " fatal, batchcli_version FROM run"
            ).fetchone()
            sessions = conn.execute(
                "SELECT pid, host, started_at, seen_at, ended_at, status FROM sessions ORDER BY id"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise damaged(path, str(error)) from error
    if run is None or not sessions:
        raise damaged(path, "it has no run record")
    pid, host, _, seen_at, ended_at, status = sessions[-1]
    if status == "running" and not _running(run_dir, pid, host):
        status = "crashed"
    now = time.time()
    live = status == "running"
    ends = [s[4] or s[3] for s in sessions[:-1]] + [ended_at or (now if live else seen_at)]
    return RunInfo(
        run_dir=run_dir,
        job=run[0],
        target=run[1],
        config_name=run[2],
        configuration=run[3],
        params=json.loads(run[4]),
        secrets=json.loads(run[5]),
        parent=run[6],
        status=status,
        pid=pid,
        sessions=len(sessions),
        started_at=sessions[0][2],
        ended_at=ends[-1],
        active_s=sum(end - s[2] for s, end in zip(sessions, ends)),
        total=run[7],
        succeeded=run[8],
        failed=run[9],
        fatal=json.loads(run[10]) if run[10] else None,
        version=run[11],
    )


def _running(run_dir: Path, pid: int, host: str) -> bool:
    if not RunLock.is_held(run_dir):
        return False
    # A pid only means something on the machine that wrote it.
    return host != socket.gethostname() or _pid_alive(pid)


_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


def message_shape(message: str | None) -> str:
    """An error message with its numbers replaced by ``N``, so "user 97 ..." and "user 194 ..." group together."""
    return _NUMBERS.sub("N", message or "")


def query(run_dir: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the journal of ``run_dir``."""
    path = journal_path(run_dir)
    try:
        conn = connect(path)
        conn.create_function("shape", 1, message_shape, deterministic=True)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise damaged(path, str(error)) from error
