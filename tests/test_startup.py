"""A stop signal during start-up (issue 10, #9): a clean stop or a clear message, never a damaged run directory.

Start-up is everything before the run's own handlers: the interpreter, batchcli's imports, loading
the user's project (its imports and constructors may block), making the run directory and its
journal. The project ``slow_start`` can wait in its import or its Source's constructor, and keeps a
ledger of every item it processes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import PROJECTS, subprocess_env

JOB = PROJECTS / "slow_start" / "job.py"
STOP_SIGNALS = [signal.SIGTERM, signal.SIGINT]
NEVER_STARTED = "arrived before the run started; nothing ran and no run directory was made."


def start(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """``python -m batchcli exec slow_start -d out ARGS`` in the background, no terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(JOB), "-d", "out", "-p", f"ledger_dir={tmp_path}", *args],
        cwd=tmp_path,
        env=subprocess_env(SLOW_START_MARKERS=str(tmp_path), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """Wait for the exit (a generous bound, only so a hung run fails instead of hanging the suite)."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return output


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def batchcli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchcli", *args], cwd=tmp_path, env=subprocess_env(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def ledger(tmp_path: Path) -> Counter[int]:
    """How many times each item was processed, over every session."""
    path = tmp_path / "ledger"
    return Counter(int(line) for line in path.read_text().split()) if path.exists() else Counter()


def run_dirs(tmp_path: Path) -> list[Path]:
    out = tmp_path / "out"
    return sorted(out.iterdir()) if out.exists() else []


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=[s.name for s in STOP_SIGNALS])
def test_signal_while_the_project_is_imported_stops_before_the_run(tmp_path: Path, signum: signal.Signals) -> None:
    """A signal while the user's module is being imported abandons the import: exit 130, a message, no run directory."""
    proc = start(tmp_path, SLOW_START_IMPORT_S="60")
    wait_for(lambda: (tmp_path / "importing").exists(), proc, "the import")
    proc.send_signal(signum)
    output = finish(proc)
    assert proc.returncode == 130, output
    assert f"{signum.name} {NEVER_STARTED}" in output
    assert "Traceback" not in output
    assert run_dirs(tmp_path) == []


def test_signal_handled_inside_a_finaliser_still_stops_the_loading(tmp_path: Path) -> None:
    """A stop signal whose exception Python drops (it landed in a ``__del__``) is raised again, so loading still stops."""
    proc = start(tmp_path, "-p", "del_s=1", "-p", "init_s=60")
    wait_for(lambda: (tmp_path / "finalising").exists(), proc, "the finaliser")
    proc.send_signal(signal.SIGINT)
    output = finish(proc, timeout=30)  # far below the constructor's 60 s: the drop was made up for
    assert proc.returncode == 130, output
    assert NEVER_STARTED in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=[s.name for s in STOP_SIGNALS])
def test_signal_in_a_blocking_source_constructor_stops_before_the_run(tmp_path: Path, signum: signal.Signals) -> None:
    """A signal while the Source's constructor blocks stops at once, even through its ``except Exception``."""
    proc = start(tmp_path, "-p", "init_s=60")
    wait_for(lambda: (tmp_path / "constructing").exists(), proc, "the Source's constructor")
    proc.send_signal(signum)
    output = finish(proc)
    assert proc.returncode == 130, output
    assert f"{signum.name} {NEVER_STARTED}" in output
    assert "Traceback" not in output
    assert run_dirs(tmp_path) == []


def test_signal_while_the_run_directory_is_made_leaves_a_resumable_run(tmp_path: Path) -> None:
    """SIGTERM the moment the run directory appears: the run starts nothing, ends stopped (130), and resumes whole."""
    proc = start(tmp_path, "-p", "count=50")
    wait_for(lambda: bool(run_dirs(tmp_path)), proc, "the run directory")
    proc.send_signal(signal.SIGTERM)
    output = finish(proc)
    assert proc.returncode == 130, output
    assert "Traceback" not in output
    [run] = run_dirs(tmp_path)
    assert "damaged" not in batchcli(tmp_path, "runs", "-d", "out").stdout
    resumed = batchcli(tmp_path, "resume", str(run))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert ledger(tmp_path) == Counter(range(50))


def test_signal_while_a_resume_loads_the_project_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    """SIGTERM while ``resume`` imports the project: exit 130, the run unchanged; the next resume does the rest once."""
    proc = start(tmp_path, "-p", "count=50", "-p", "init_s=0.01")
    wait_for(lambda: bool(run_dirs(tmp_path)), proc, "the run directory")
    proc.send_signal(signal.SIGTERM)
    output = finish(proc)
    assert proc.returncode == 130, output
    [run] = run_dirs(tmp_path)
    before = ledger(tmp_path)

    resuming = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "resume", str(run)], cwd=tmp_path, text=True,
        env=subprocess_env(SLOW_START_MARKERS=str(tmp_path), SLOW_START_IMPORT_S="60"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_for(lambda: (tmp_path / "importing").exists(), resuming, "the import")
    resuming.send_signal(signal.SIGTERM)
    output = finish(resuming)
    assert resuming.returncode == 130, output
    said = " ".join(output.split())
    assert "SIGTERM arrived before the run started; the run is as it was." in said
    assert f"Resume it again with: batchcli resume {run}" in said
    assert "Traceback" not in output
    assert ledger(tmp_path) == before
    shown = batchcli(tmp_path, "runs", "-d", "out").stdout
    assert "stopped" in shown and "damaged" not in shown, shown

    resumed = batchcli(tmp_path, "resume", str(run))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert ledger(tmp_path) == Counter(range(50))


@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8])
def test_sigterm_at_any_moment_of_start_up_leaves_no_damaged_run(tmp_path: Path, delay_s: float) -> None:
    """SIGTERM at one of several early moments: a clean stop (130, or 0 if it finished), or, before batchcli's first
    line runs, the interpreter's default death with nothing on disk; any run directory resumes, no item twice."""
    count = 3000
    proc = start(tmp_path, "-p", f"count={count}")
    time.sleep(delay_s)
    proc.send_signal(signal.SIGTERM)
    output = finish(proc)
    assert "Traceback" not in output
    dirs = run_dirs(tmp_path)
    if proc.returncode == -signal.SIGTERM:
        # Python's own defaults rule only before batchcli's first line (nothing on disk yet) and while the
        # interpreter shuts down, after the run has closed its journal and said how it ended.
        assert (dirs == [] and output == "") or "Run directory:" in output, output
        if not dirs:
            return
    else:
        assert proc.returncode in (0, 130), output
    if not dirs:
        assert NEVER_STARTED in output
        return
    runs = batchcli(tmp_path, "runs", "-d", "out").stdout
    assert "damaged" not in runs and "never started" not in runs, runs
    resumed = batchcli(tmp_path, "resume", str(dirs[0]))  # or "finished already"
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert ledger(tmp_path) == Counter(range(count))


def test_a_half_made_run_directory_says_it_never_started(cli: Any, tmp_path: Path) -> None:
    """A run directory holding only ``journal.sqlite.new`` (a kill -9 while it was made) is "never started",
    not "damaged" or "not a batchcli run directory", in resume, retry, show and runs."""
    run = tmp_path / "out" / "2026-01-01T00-00-00_job"
    run.mkdir(parents=True, mode=0o700)
    (run / "journal.sqlite.new").write_bytes(b"")
    for command in ("resume", "retry", "show"):
        result = cli(command, run)
        assert result.exit_code == 2, result.output
        assert f"Run {str(run)!r} never started" in " ".join(result.output.split())
        assert "batchcli exec" in result.output and "Traceback" not in result.output
    listed = cli("runs", "-d", tmp_path / "out")
    assert listed.exit_code == 0 and "never started" in listed.output and "damaged" not in listed.output
