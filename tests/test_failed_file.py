"""failed.jsonl when failures are taken back (breaker, pause-shell retry): their lines are cut from the file's tail,
the rest left as it was; through the real CLI, the file and the journal agree after a trip over many failures."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from batchcli.journal import records
from batchcli.journal.records import FailedFile, failure_line
from conftest import PROJECTS, newest_run, subprocess_env


def line(ordinal: int, session_mark: str = "") -> str:
    return failure_line(ordinal, json.dumps(ordinal), "ValueError", f"item {ordinal} {session_mark}".strip(), 1, 1.0, 2.0, "Traceback")


def ordinals(path: Path) -> list[int]:
    return [json.loads(text)["ordinal"] for text in path.read_text().splitlines()]


def never() -> list[str]:
    raise AssertionError("the whole file was rewritten from the journal")


def test_taken_back_lines_are_cut_from_the_tail_and_the_file_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "failed.jsonl"
    file = FailedFile(path)
    file.sync([line(n) for n in range(1000)], never)
    inode = path.stat().st_ino

    file.drop([995, 990, 500])
    file.sync([line(1000)], never)  # the same flush's new failures come after the cut

    assert ordinals(path) == [n for n in range(1001) if n not in (500, 990, 995)]
    assert path.stat().st_ino == inode  # cut and appended in place, not replaced by a rewrite
    file.sync([line(1001)], never)  # and appending goes on from the new end
    assert ordinals(path)[-2:] == [1000, 1001]
    file.close()


def test_a_line_beyond_the_searched_tail_has_the_file_rewritten_from_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "CUT_TAIL_MAX", len(line(999)) * 50)  # about the last 50 lines
    path = tmp_path / "failed.jsonl"
    file = FailedFile(path)
    file.sync([line(n) for n in range(1000)], never)
    journal = [line(n) for n in range(1000) if n != 10]  # what the journal holds once it deleted the row

    file.drop([10])
    file.sync([], lambda: journal)

    assert ordinals(path) == [n for n in range(1000) if n != 10]
    assert not path.with_name("failed.jsonl.tmp").exists()
    file.close()


def test_a_rewrite_writes_the_journals_lines_as_it_reads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed run rewrites failed.jsonl from the journal: every line was held at once, three times over (a resume
    of a run with a million failures peaked at 1.4 GB). The lines are written a chunk at a time now: while the
    journal's lines are read, the draft already holds all but the last chunk of those read."""
    monkeypatch.setattr(records, "REWRITE_CHUNK", 1000)
    path = tmp_path / "failed.jsonl"
    draft = path.with_name("failed.jsonl.tmp")
    lines = [line(n) for n in range(2000)]
    read = 0

    def journal():  # type: ignore[no-untyped-def]
        nonlocal read
        for text in lines:
            written = draft.stat().st_size if draft.exists() else 0
            assert written >= read - 1000 - len(text), f"{read} characters read, {written} written"
            read += len(text)
            yield text

    file = FailedFile(path, stale=True)
    file.sync([], journal)
    assert path.read_text() == "".join(lines) and not draft.exists()
    file.close()


def test_an_ordinal_an_earlier_session_also_used_loses_only_this_sessions_line(tmp_path: Path) -> None:
    """A keyed run numbers each session's items from 0: the line taken back is the last one with the ordinal."""
    path = tmp_path / "failed.jsonl"
    earlier = [line(n, "earlier") for n in range(5)]
    file = FailedFile(path)
    file.sync(earlier + [line(n, "now") for n in range(3)], never)

    file.drop([1])
    file.sync([], never)

    messages = [json.loads(text)["error_message"] for text in path.read_text().splitlines()]
    assert messages == ["item 0 earlier", "item 1 earlier", "item 2 earlier", "item 3 earlier", "item 4 earlier",
                        "item 0 now", "item 2 now"]  # fmt: skip
    file.close()


def test_a_trip_over_many_journaled_failures_leaves_the_file_the_journal_and_the_console_agreeing(tmp_path: Path) -> None:
    """Real CLI: 1,500 lasting failures, then every item fails slowly and the breaker takes back the journaled ones;
    the console's failure groups then count only what stayed final."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "batchcli", "exec", str(PROJECTS / "misbehaving" / "job.py"), "-d", str(out),
         "-p", "count=7000", "-p", "fail_every=4", "-p", "down_from=6000", "-p", "slow_s=0.1", "-p", "concurrency=1",
         "-p", "max_retries=0",
         "-p", "breaker_window=20", "-p", "breaker_cooldown_s=0.2", "-p", "breaker_max_wait_s=0.5"],
        capture_output=True, text=True, timeout=120, env=subprocess_env(),
    )  # fmt: skip
    assert proc.returncode == 130, proc.stdout + proc.stderr
    run_dir = newest_run(out)
    assert run_dir is not None
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        journaled = [o for (o,) in conn.execute("SELECT ordinal FROM failures ORDER BY rowid")]
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(failures)")}
        timeline_failed = conn.execute("SELECT sum(failed) FROM timeline").fetchone()[0]
    finally:
        conn.close()
    lasting = [n for n in range(6000) if n % 4 == 0]
    # Every slow failure was taken back, and so were the lasting ones inside the window that tripped.
    in_window = len(lasting) - len(journaled)
    assert journaled == lasting[: len(journaled)] and 0 <= in_window <= 20
    assert timeline_failed > len(journaled) + in_window  # slow failures were journaled before the trip took them back
    assert ordinals(run_dir / "failed.jsonl") == journaled
    assert "failures_by_ordinal" in indexes
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["failed"], summary["unprocessed"]) == (len(journaled), 1000 + in_window)
    # The console's groups count what is final now: the taken-back ConnectionErrors are not among them.
    lines = (proc.stdout + proc.stderr).splitlines()
    last_progress = max(i for i, text in enumerate(lines) if re.match(r"\d+/7000 \(", text))
    groups = [m.groups() for text in lines[last_progress + 1 :] if (m := re.match(r"\s+failed ([\d,]+) × (.*)$", text))]
    assert groups == [(f"{len(journaled):,}", "ValueError: item N is not a valid record")]
    assert summary["succeeded"] + summary["failed"] + summary["unprocessed"] == summary["total"]
    assert os.stat(run_dir / "failed.jsonl").st_mode & 0o777 == 0o600
