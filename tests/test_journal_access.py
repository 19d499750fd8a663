"""Reading a journal never needs write access, and a refused resume names the process that really holds the run."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from conftest import subprocess_env
from test_bad_paths import immutable, refused  # noqa: F401 - immutable is a fixture
from test_resume import wait_for

from batchcli.journal.rundir import HOLDER_NAME, RunLock

PROJECTS = Path(__file__).resolve().parent / "projects"
RETRIES = PROJECTS / "retries" / "retries_job.py"
SLOW = PROJECTS / "slow_resume" / "slow_job.py"


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def finished_run(cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A finished run with 2 successes and 2 failures; its WAL folded back in, as a clean end leaves it."""
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("exec", RETRIES, "-d", "out", "-p", "backoff_s=0")
    assert result.exit_code == 1, result.output
    assert not Path(f"{result.run_dir}/journal.sqlite-wal").exists()
    return result.run_dir


def check_readable(cli, run_dir: Path, job: str = "retries_job") -> None:
    """runs and show report the run, not a damaged journal."""
    runs = cli("runs", "-d", run_dir.parent)
    assert runs.exit_code == 0, runs.output
    assert "damaged" not in runs.output
    assert re.search(rf"{job} Configuration finished 2 / 2 / 4 .* {run_dir.name}", flat(runs.output)), runs.output
    show = cli("show", run_dir)
    assert show.exit_code == 0, show.output
    assert "Traceback" not in show.output and "damaged" not in show.output
    text = flat(show.output)
    assert f"job {job}" in text
    assert "items 2 succeeded, 2 failed, 0 unprocessed, of 4" in text
    assert "Failures: 2, by error (2 kinds)" in text


@pytest.mark.parametrize("locked", [("journal.sqlite",), ("journal.sqlite", ".")], ids=["journal", "journal-and-dir"])
def test_runs_and_show_read_a_run_directory_nobody_can_write(
    cli, finished_run: Path, immutable: Callable[[Path], None], locked: tuple[str, ...]
) -> None:
    """runs and show work on a journal or run directory that cannot be written (read-only disk, another user's):
    no "damaged (unable to open database file)"."""
    for name in locked:
        immutable(finished_run / name)
    check_readable(cli, finished_run)


def test_runs_and_show_read_the_wal_of_a_read_only_journal(
    cli, finished_run: Path, tmp_path: Path, immutable: Callable[[Path], None]
) -> None:
    """A read-only journal whose last writes are still only in its WAL (and whose -shm cannot be written) is
    read whole: no "attempt to write a readonly database", and the WAL's content shows."""
    journal = finished_run / "journal.sqlite"
    holder = sqlite3.connect(journal)  # keeps the WAL from being folded back in while we copy
    holder.execute("PRAGMA wal_autocheckpoint=0")
    with holder:
        holder.execute("UPDATE run SET job = 'renamed_in_wal'")
    copy = tmp_path / "copied" / finished_run.name
    copy.mkdir(parents=True)
    for name in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"):
        shutil.copyfile(finished_run / name, copy / name)
    holder.close()
    assert (copy / "journal.sqlite-wal").stat().st_size > 0
    for path in (*copy.iterdir(), copy):
        immutable(path)
    check_readable(cli, copy, job="renamed_in_wal")


@pytest.fixture
def slow_resume(cli, tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A crashed run, and a resume of it (a real process) that holds its lock while it loads the project."""
    crashed = cli("exec", SLOW, "-d", "out", "-p", "crash_at=5")
    assert crashed.exit_code == 3, crashed.output
    run_dir = crashed.run_dir
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "resume", str(run_dir), "--no-shell"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=subprocess_env(SLOW_IMPORT_S="120"),
    )
    try:
        wait_for(lambda: RunLock.is_held(run_dir), "the resume to take the lock")
        yield run_dir, proc
    finally:
        proc.kill()
        proc.wait()


def test_refused_resume_names_the_live_holder_not_the_dead_session(cli, slow_resume) -> None:
    """A resume refused because another resume holds the run names that live process's pid, even before it has
    written its session (the newest session row is still the crashed run's, whose pid is gone)."""
    run_dir, proc = slow_resume
    out = refused(cli("resume", run_dir))
    assert f"is still running in another process (pid {proc.pid})" in out
    assert f"kill -INT {proc.pid})" in out  # the command to stop it names it too
    assert (run_dir / HOLDER_NAME).read_text().split()[0] == str(proc.pid)


def test_holder_record_is_removed_when_the_run_ends(cli, finished_run: Path) -> None:
    """The lock holder's pid file does not outlive the run that wrote it."""
    assert not (finished_run / HOLDER_NAME).exists()


@pytest.fixture
def as_nobody(tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """Run ``python -m batchcli ARGS...`` as the user nobody, with this checkout and the test's libraries.

    Our own interpreter may sit where nobody cannot reach it (a pyenv under /root), so this uses a system
    Python of the same version with our site-packages on the path; the test is skipped when there is none.
    """
    import os
    import sysconfig

    runuser = shutil.which("runuser")
    python = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/usr/local/bin")
    if os.geteuid() != 0 or runuser is None or python is None:
        pytest.skip("needs root, runuser and a system Python of this version to run batchcli as nobody")
    env = subprocess_env(COLUMNS="200")
    env["PYTHONPATH"] += os.pathsep + sysconfig.get_paths()["purelib"]

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [runuser, "-u", "nobody", "--", python, "-m", "batchcli", *map(str, args)],
            capture_output=True, text=True, env=env, cwd="/", timeout=120,
        )

    probe = run("--help")
    if probe.returncode != 0:
        pytest.skip(f"batchcli does not start as nobody here: {probe.stderr.strip()[-200:]}")
    yield run


@pytest.fixture
def foreign_copy(finished_run: Path) -> Iterator[Path]:
    """A copy of a finished run that nobody may read (directory 0755, journal 0644) but not write: root's."""
    import tempfile

    outer = Path(tempfile.mkdtemp(prefix="batchcli-foreign-"))  # under /tmp, which nobody can traverse
    try:
        outer.chmod(0o755)
        copy = outer / finished_run.name
        shutil.copytree(finished_run, copy)
        copy.chmod(0o755)
        (copy / "journal.sqlite").chmod(0o644)
        yield copy
    finally:
        shutil.rmtree(outer)


def test_runs_and_show_read_another_users_run_directory(as_nobody, foreign_copy: Path) -> None:
    """Another user can list and show a run they may read but not write."""
    runs = as_nobody("runs", "-d", foreign_copy.parent)
    assert runs.returncode == 0, runs.stderr
    assert re.search(rf"finished 2 / 2 / 4 .* {foreign_copy.name}", flat(runs.stdout)), runs.stdout
    show = as_nobody("show", foreign_copy)
    assert show.returncode == 0, show.stderr
    assert "items 2 succeeded, 2 failed, 0 unprocessed, of 4" in flat(show.stdout)
    assert "Traceback" not in show.stderr


def test_a_journal_another_user_cannot_read_is_unreadable_not_damaged(as_nobody, foreign_copy: Path) -> None:
    """A journal the user may not read at all is named as unreadable, with who can read it, not as damaged."""
    (foreign_copy / "journal.sqlite").chmod(0o600)
    show = as_nobody("show", foreign_copy)
    assert show.returncode == 2
    out = flat(show.stdout + show.stderr)
    assert "Traceback" not in out and "damaged" not in out
    assert f"The journal '{foreign_copy}/journal.sqlite' cannot be read" in out
    assert "Run the command as the user who owns the run directory" in out
    runs = as_nobody("runs", "-d", foreign_copy.parent)
    assert runs.returncode == 0, runs.stderr
    assert re.search(rf"unreadable .*{foreign_copy.name}", flat(runs.stdout)), runs.stdout


def test_resume_of_a_run_directory_it_cannot_write(cli, tmp_path: Path, immutable: Callable[[Path], None]) -> None:
    """resume of a read-only run says what is not writable and how to fix it, not that the journal is damaged."""
    crashed = cli("exec", SLOW, "-d", "out", "-p", "crash_at=5")
    assert crashed.exit_code == 3, crashed.output
    immutable(crashed.run_dir / "journal.sqlite")
    out = refused(cli("resume", crashed.run_dir))
    assert f"'{crashed.run_dir}/journal.sqlite' is not writable" in out
    assert "or copy the run directory and resume the copy" in out
    assert "damaged" not in out


@pytest.mark.parametrize("schema_changed", [True, False], ids=["new-schema", "same-columns"])
def test_a_journal_a_newer_batchcli_wrote_says_upgrade_not_damaged(cli, finished_run: Path, schema_changed: bool) -> None:
    """A newer format was read as far as a query got: called damaged, with the advice to redo the run with exec (a new
    column's absence), or read as if it were ours (same columns). Every command now says a newer batchcli wrote it
    and to upgrade; runs lists it as newer."""
    conn = sqlite3.connect(finished_run / "journal.sqlite")
    conn.execute("UPDATE run SET format = format + 1, batchcli_version = '9.9.0'")
    if schema_changed:
        conn.execute("ALTER TABLE run RENAME COLUMN fatal TO fatal_v2")
    conn.commit()
    conn.close()
    for command in (["show", finished_run], ["show", finished_run, "--failures"], ["watch", finished_run],
                    ["retry", finished_run], ["resume", finished_run], ["results", finished_run]):  # fmt: skip
        said = refused(cli(*command))
        assert "was written by batchcli 9.9.0, in a newer format" in said and "Upgrade batchcli" in said, said
        assert "damaged" not in said
    runs = cli("runs", "-d", finished_run.parent)
    row = next(line for line in runs.output.splitlines() if finished_run.name in line)
    assert runs.exit_code == 0 and row.split()[4] == "newer", runs.output


def test_a_run_record_edited_to_what_is_not_json_is_called_damaged_not_a_traceback(cli, finished_run: Path) -> None:
    """A run record whose params were edited to what is not JSON gave show and retry a JSONDecodeError traceback."""
    conn = sqlite3.connect(finished_run / "journal.sqlite")
    conn.execute("UPDATE run SET params = '{not json'")
    conn.commit()
    conn.close()
    for command in (["show", finished_run], ["retry", finished_run], ["resume", finished_run]):
        said = refused(cli(*command))
        assert "its run record does not read as JSON" in said and "damaged" in said, said
