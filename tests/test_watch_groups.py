"""``watch`` on a run with many failures: the counts stay fresh every frame, the failure groups (a read of every
failure row) are read again only as often as their cost allows, and the screen says how old they are."""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path
from typing import Any

from conftest import PROJECTS
from rich.console import Console

from batchcli.cli.watch import frame
from batchcli.journal.live import GROUPS_SHARE, Watcher
from batchcli.journal.rundir import RunLock

FLOOD = PROJECTS / "flood" / "flood.py"


def test_groups_are_read_again_only_once_their_cost_allows_and_always_at_the_end(run_batchcli: Any, tmp_path: Path) -> None:
    result = run_batchcli("exec", FLOOD, "-d", "out", "-p", "count=200", "-p", "max_retries=0", "-p", "breaker_window=0")
    assert result.exit_code == 1 and result.run_dir is not None, result.output
    conn = sqlite3.connect(result.run_dir / "journal.sqlite")
    conn.execute("UPDATE sessions SET status = 'running', ended_at = NULL, pid = ?", (os.getpid(),))
    conn.commit()
    lock = RunLock.acquire(result.run_dir)  # this process stands for the run's: it reads as running

    ticks = iter([100.0, 101.0,  # the first snapshot: its groups read took 1 s
                  105.0,  # 5 s later: before 100 + 1 / GROUPS_SHARE, so the groups are not read
                  100.0 + 1 / GROUPS_SHARE, 100.0 + 1 / GROUPS_SHARE + 0.01])  # fmt: skip
    watcher = Watcher(result.run_dir, clock=lambda: next(ticks))
    first = watcher.snapshot()
    assert first.running and first.groups == [(200, "ValueError", "record N is malformed")] and first.groups_age_s == 0

    conn.execute("INSERT INTO failures SELECT ordinal + 1000, key, session, item, item_type, item_json, 'KeyError',"
                 " 'region 7', traceback, attempts, first_failed_at, failed_at FROM failures")  # fmt: skip
    conn.execute("UPDATE run SET failed = failed + 200")
    conn.commit()
    second = watcher.snapshot()
    assert second.info.failed == 400  # the counts are fresh
    assert second.groups == first.groups and second.groups_age_s == 5.0  # the groups are those of 5 s ago
    assert "failures (as of 5 s ago)" in render(frame(second))

    third = watcher.snapshot()
    assert sorted(third.groups) == [(200, "KeyError", "region N"), (200, "ValueError", "record N is malformed")]
    assert third.groups_age_s == 0 and "as of" not in render(frame(third))

    lock.release()
    conn.execute("UPDATE sessions SET status = 'finished', ended_at = seen_at")  # ended: always read again
    conn.execute("DELETE FROM failures WHERE error_type = 'KeyError'")
    conn.commit()
    conn.close()
    ended = Watcher(result.run_dir, clock=lambda: 0.0)
    ended.snapshot()
    assert ended.snapshot().groups == [(200, "ValueError", "record N is malformed")]


def render(renderable: Any) -> str:
    console = Console(width=200, file=io.StringIO())
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]
