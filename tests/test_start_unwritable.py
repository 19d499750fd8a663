"""A run directory that cannot be written as the run starts (no inode for the journal, a log file that cannot be
opened): one paragraph and exit 3, not a Python traceback with exit 1 ("some items failed"), and a resumable run
stays resumable."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS, subprocess_env

ROWS = PROJECTS / "trials" / "rows.py"
JOB = PROJECTS / "unattended" / "job.py"


def test_resume_whose_log_file_cannot_be_opened_says_so_and_stays_resumable(cli: Any, tmp_path: Path) -> None:
    """The log file was opened after the session began: the run read as crashed, with a traceback. Now the session
    ends stopped, the message says what to do, and the resume after the fix runs the rest."""
    (tmp_path / "rows.txt").write_text("a b c d e")
    crashed = cli("exec", ROWS, "-p", "input=rows.txt", "-p", "ledger=ledger", "-p", "crash_at=c", "-d", "out")
    assert crashed.exit_code == 3, crashed.output
    run_dir = crashed.run_dir
    (run_dir / "batchcli.log").unlink()
    (run_dir / "batchcli.log").mkdir()  # open() fails with a real OSError (IsADirectoryError)
    refused = cli("resume", run_dir, "-p", "crash_at=")
    assert refused.exit_code == 3, refused.output
    said = " ".join(refused.output.split())
    assert f"Cannot write the run directory '{run_dir}'" in said and "batchcli.log" in said
    assert "so the run did not start: no item was processed" in said and f"then resume it again: batchcli resume {run_dir}" in said
    assert "Traceback" not in refused.output
    assert "process c" not in (tmp_path / "ledger").read_text()
    listed = cli("runs", "-d", "out")
    assert "stopped" in listed.output and "crashed" not in listed.output
    (run_dir / "batchcli.log").rmdir()
    resumed = cli("resume", run_dir, "-p", "crash_at=")
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["unprocessed"]) == (5, 0)


def _small_tmpfs(place: Path, options: str) -> None:
    """Mount a tmpfs on ``place`` (needs root and mount), or skip."""
    place.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(place)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")


# (tmpfs options, whether to fill it first, what the message names). With 6 inodes the journal fits and its log
# file does not; with 4 not even the journal's draft; filled, SQLite finds the database or disk full.
NO_ROOM = {
    "no inode for the log file": ("size=5m,nr_inodes=6", False, "no inode is left for a new file"),
    "no inode for the journal": ("size=5m,nr_inodes=4", False, "No space left on device"),
    "no space for the journal": ("size=1m", True, "SQLITE_FULL"),
    "no space for a shard's group": ("size=1m", True, "No space left on device"),
}


@pytest.mark.parametrize("case", NO_ROOM)
def test_a_new_run_with_no_room_for_its_files_is_one_paragraph_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    """No room for the log file was a traceback with exit 1; no room for the journal was exit 2 ("Cannot create the
    journal", the code for a usage error) and left a half-made run directory behind, one more per attempt on a disk
    out of inodes; a shard left its group's hidden draft. Now all are exit 3, the cause named, and nothing is left."""
    options, fill, cause = NO_ROOM[case]
    place = tmp_path / "small"
    _small_tmpfs(place, options)
    try:
        out = place / "out"
        out.mkdir()
        if fill:
            with open(place / "fill", "wb") as filler, contextlib.suppress(OSError):
                while True:
                    filler.write(bytes(64 << 10))
                    filler.flush()
        shard = ["--shard", "0/2", "--group", "gg"] if "shard" in case else []
        proc = subprocess.run(
            [sys.executable, "-m", "batchcli", "exec", str(JOB), "-p", "count=3", "-d", str(out), "--no-shell", *shard],
            capture_output=True, text=True, env=subprocess_env(), timeout=120,
        )  # fmt: skip
        assert proc.returncode == 3, proc.stdout + proc.stderr
        said = " ".join(proc.stderr.split())
        assert "so the run did not start" in said and cause in said, said
        assert "then run the command again (or give it another output directory with -d)" in said
        assert "Traceback" not in proc.stderr
        assert list(out.iterdir()) == []
    finally:
        subprocess.run(["umount", str(place)], check=False)
