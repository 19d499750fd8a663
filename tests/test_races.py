"""Commands that meet on one run directory: a resume that is still loading, a stop during retry-failed, a run
directory that moves while `runs` lists it, and --skip-done-in a run that is still going."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS, subprocess_env
from joblog import wait_for

import batchcli.journal.history as history
from batchcli.journal.rundir import RunLock, read_run

SLOW = PROJECTS / "slow_resume" / "slow_job.py"
UNATTENDED = PROJECTS / "unattended" / "job.py"
KEYED = PROJECTS / "journal_keyed" / "keyed.py"


def batchcli(*args: Any, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m batchcli ARGS`` as a process of its own, without a terminal, waited for."""
    return subprocess.run(
        [sys.executable, "-m", "batchcli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=subprocess_env(**env),
    )  # fmt: skip


def start(*args: Any, stderr: Path, **env: str) -> subprocess.Popen[str]:
    """``python -m batchcli ARGS`` in the background, without a terminal; stderr to a file."""
    return subprocess.Popen(
        [sys.executable, "-m", "batchcli", *map(str, args)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr.open("w"), text=True, env=subprocess_env(**env),
    )  # fmt: skip


def one_run(out: Path) -> Path:
    wait_for(lambda: any(out.glob("*/journal.sqlite")), "the run's journal")
    return next(out.glob("*/journal.sqlite")).parent


def slow_keyed_run(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, Path]:
    """A run of 2,000 keyed items at 20 ms each in the background (under ``first``), its run directory once it has
    one, and the directory of its per-process logs; item-7 fails."""
    logs = tmp_path / "logs"
    logs.mkdir()
    out = tmp_path / "first"
    run = start("exec", KEYED, "-d", out, "-p", "count=2000", "-p", "delay_s=0.02", "-p", f"log_dir={logs}", stderr=tmp_path / "first.txt")
    try:
        return run, one_run(out), logs
    except BaseException:
        run.kill()
        run.wait(timeout=60)
        raise


def settled(run_dir: Path) -> int:
    info = read_run(run_dir)
    return info.succeeded + info.failed


def interrupted_run(tmp_path: Path, how: signal.Signals) -> Path:
    """A run of the slow job stopped by ``how`` part way: SIGINT leaves it stopped, SIGKILL leaves it running on
    paper with its control socket behind."""
    out = tmp_path / "out"
    run = start("exec", SLOW, "-d", out, "-p", "count=400", "-p", "sleep_s=0.02", stderr=tmp_path / "exec.txt")
    try:
        run_dir = one_run(out)
        wait_for(lambda: (run_dir / "control.sock").exists() and settled(run_dir) > 0, "the run to settle items")
        run.send_signal(how)
        assert run.wait(timeout=60) == (130 if how == signal.SIGINT else -signal.SIGKILL)
    finally:
        if run.poll() is None:
            run.kill()
    return run_dir


def test_a_resume_that_loads_its_project_reads_as_running_and_takes_ctl_stop(tmp_path: Path) -> None:
    """A resume holds the run's lock while it imports the project, before it adds its session: the newest session
    row still said "stopped", so `runs` and `watch` called the run stopped, `ctl stop` was refused ("nothing to
    control") and lost, and a `retry` was accepted (items then succeeded twice)."""
    run_dir = interrupted_run(tmp_path, signal.SIGINT)
    assert read_run(run_dir).status == "stopped"
    # Slower items for the resume: at 0.02 s the items left took it under a second, which ctl's own start-up on a
    # loaded machine outlasted, and the stop found the run ended.
    resume = start("resume", run_dir, "-p", "sleep_s=0.5", stderr=tmp_path / "resume.txt", SLOW_IMPORT_S="3")
    try:
        wait_for(lambda: RunLock.is_held(run_dir), "the resume to take the lock")
        assert (info := read_run(run_dir)).status == "running" and info.pid == resume.pid
        listed = batchcli("runs", "-d", run_dir.parent, COLUMNS="200")
        assert listed.returncode == 0 and " running " in listed.stdout, listed.stdout + listed.stderr
        stop = batchcli("ctl", run_dir, "stop")  # waits for the resume's socket
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert stop.stdout.startswith("Stopping:"), stop.stdout
        assert resume.wait(timeout=60) == 130
    finally:
        if resume.poll() is None:
            resume.kill()
    assert read_run(run_dir).status == "stopped"
    assert "Traceback" not in (tmp_path / "resume.txt").read_text()


def test_ctl_waits_past_the_socket_a_killed_session_left(tmp_path: Path) -> None:
    """After a kill -9 the dead session's control.sock stays: ctl on the resume that is loading took that file for
    the live run's, was refused by it, and said the run "has no control socket" at once instead of waiting."""
    run_dir = interrupted_run(tmp_path, signal.SIGKILL)
    assert (run_dir / "control.sock").exists()  # the dead session's
    # Slower items for the resume: at 0.02 s the items left took it under a second, which ctl's own start-up on a
    # loaded machine outlasted, and the stop found the run ended.
    resume = start("resume", run_dir, "-p", "sleep_s=0.5", stderr=tmp_path / "resume.txt", SLOW_IMPORT_S="3")
    try:
        wait_for(lambda: RunLock.is_held(run_dir), "the resume to take the lock")
        stats = batchcli("ctl", run_dir, "stats")
        assert stats.returncode == 0, stats.stdout + stats.stderr
        assert "succeeded: " in stats.stdout, stats.stdout
        assert batchcli("ctl", run_dir, "stop").returncode == 0
        assert resume.wait(timeout=60) == 130
    finally:
        if resume.poll() is None:
            resume.kill()


def test_a_retry_failed_cut_short_by_a_stop_gets_an_answer(tmp_path: Path) -> None:
    """`ctl stop` while `ctl retry-failed` waits for the items it retries: the run's control thread died with a
    CancelledError traceback on stderr, and the retry-failed client, told nothing, said "the run refused the
    command" and exited 2 (bad input)."""
    out, ledger = tmp_path / "out", tmp_path / "ledger.txt"
    run = start(
        "exec", UNATTENDED, "-d", out, "-p", f"ledger={ledger}", "-p", "count=2000", "-p", "delay_s=0.01", "-p", "fail_every=20",
        "-p", "fixed_delay_s=30", "-p", "max_retries=0", "-p", "breaker_window=0", stderr=tmp_path / "exec.txt",
    )  # fmt: skip
    retrying: subprocess.Popen[str] | None = None
    try:
        run_dir = one_run(out)
        wait_for(lambda: (run_dir / "control.sock").exists() and read_run(run_dir).failed >= 3, "a few failures")
        assert batchcli("ctl", run_dir, "pause").returncode == 0
        ledger.with_suffix(".fixed").touch()  # the retried items now take 30 s each
        retrying = subprocess.Popen(
            [sys.executable, "-m", "batchcli", "ctl", str(run_dir), "retry-failed"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
        )  # fmt: skip
        wait_for(lambda: "start 0\n" in ledger.read_text().split("fail 0\n", 1)[-1], "the retry of item 0 to start")
        assert batchcli("ctl", run_dir, "stop").returncode == 0
        out_text, err_text = retrying.communicate(timeout=120)
        assert run.wait(timeout=120) == 130
    finally:
        for proc in (run, retrying):
            if proc is not None and proc.poll() is None:
                proc.kill()
    said = " ".join(err_text.split())
    assert retrying is not None and retrying.returncode == 1, out_text + err_text
    assert "The run is stopping, which cut the retry short" in said and f"batchcli retry {run_dir}" in said, said
    assert "refused" not in said and "Traceback" not in said
    assert "Traceback" not in (tmp_path / "exec.txt").read_text()
    info = read_run(run_dir)
    assert info.status == "stopped" and info.failed >= 3  # the retried items that did not settle stay failed


def test_a_retry_failed_longer_than_ctls_wait_gets_its_answer(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ctl retry-failed` waited 600 s for its reply, then said the run "did not answer (timed out); it may be ending"
    (exit 1) while the run went on retrying: hundreds of failures against a slow API outlast any fixed wait. It waits
    while the run lives now, saying so once. Here the wait is 0.5 s and the retries take 2 s."""
    monkeypatch.setattr("batchcli.cli.ctl.REPLY_WAIT_S", 0.5)
    monkeypatch.setattr("batchcli.cli.ctl.LOOK_S", 0.2)
    out, ledger = tmp_path / "out", tmp_path / "ledger.txt"
    run = start(
        "exec", UNATTENDED, "-d", out, "-p", f"ledger={ledger}", "-p", "count=2000", "-p", "delay_s=0.01", "-p", "fail_every=20",
        "-p", "fixed_delay_s=2", "-p", "max_retries=0", "-p", "breaker_window=0", stderr=tmp_path / "exec.txt",
    )  # fmt: skip
    try:
        run_dir = one_run(out)
        wait_for(lambda: (run_dir / "control.sock").exists() and read_run(run_dir).failed >= 3, "a few failures")
        assert batchcli("ctl", run_dir, "pause").returncode == 0
        ledger.with_suffix(".fixed").touch()  # the retried items now take 2 s each
        retried = cli("ctl", run_dir, "retry-failed")
        assert retried.exit_code == 0, retried.output
        said = " ".join(retried.output.split())
        assert "Waiting for the retried items to settle" in said and f"batchcli watch {run_dir}" in said, said
        tried = int(said.split(" of ")[0].split()[-1])
        assert tried >= 3 and f"{tried} of {tried} failed item(s) succeeded now." in said, said
        assert batchcli("ctl", run_dir, "stop").returncode == 0
        assert run.wait(timeout=120) == 130
    finally:
        if run.poll() is None:
            run.kill()
    assert "Traceback" not in (tmp_path / "exec.txt").read_text()


def test_runs_passes_over_a_run_directory_that_moves_while_it_lists(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run directory renamed or removed between `runs` finding its journal and reading it ended the listing with
    a FileNotFoundError traceback (its modification time was read for the listing without a guard)."""
    for count in (3, 4):
        assert cli("exec", SLOW, "-d", "out", "-p", f"count={count}").exit_code == 0
    moving, staying = sorted((tmp_path / "out").iterdir())
    damaged = tmp_path / "out" / "2020-01-01T00-00-00_damaged"
    damaged.mkdir()
    (damaged / "journal.sqlite").write_bytes(b"not a journal")
    real_read_run = history.read_run

    def read_run_while_it_moves(run_dir: Path) -> Any:
        if run_dir.name == moving.name:  # another process renames it just now
            os.rename(moving, moving.with_name(moving.name + ".old"))
        return real_read_run(run_dir)

    monkeypatch.setattr(history, "read_run", read_run_while_it_moves)
    monkeypatch.setenv("COLUMNS", "80")  # the layout that leads with the run directory's name
    listed = cli("runs", "-d", "out")
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line.split()[1] for line in listed.output.splitlines()[1:]}
    # the one that moved is not listed; a journal that is there but unreadable still is, as before
    assert rows == {staying.name: "finished", damaged.name: "damaged"}, listed.output


def test_skip_done_in_a_run_that_is_still_running_is_refused(cli: Any, tmp_path: Path) -> None:
    """--skip-done-in took what a live run had done so far and ran the rest, which that run then did too: every
    item it had not reached yet succeeded twice."""
    run, run_dir, logs = slow_keyed_run(tmp_path)
    try:
        wait_for(lambda: (run_dir / "control.sock").exists() and settled(run_dir) > 0, "the first run to settle items")
        second = cli("exec", KEYED, "-d", "out", "--skip-done-in", run_dir, "-p", "count=2000", "-p", f"log_dir={logs}")
        said = " ".join(second.output.split())
        assert second.exit_code == 2, second.output
        assert f"--skip-done-in {str(run_dir)!r}: that run is still running (pid {run.pid})" in said, said
        assert "Traceback" not in said
        assert second.run_dir is None and not (tmp_path / "out").exists()
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(timeout=60)


def test_a_run_killed_but_not_yet_reaped_reads_as_crashed(tmp_path: Path) -> None:
    """A run killed with -9 stays a zombie until its parent reaps it, and kill(pid, 0) still answers for it: the run
    read as running meanwhile, and an attached console said it did not know what became of the run (a flaky CI
    failure of the attach test, whose parent reaps a moment later)."""
    run, run_dir, _ = slow_keyed_run(tmp_path)
    try:
        wait_for(lambda: read_run(run_dir).status == "running" and settled(run_dir) > 0, "the run to settle items")
        os.kill(run.pid, signal.SIGKILL)
        wait_for(lambda: open(f"/proc/{run.pid}/stat").read().rpartition(")")[2].split()[0] == "Z", "the run to die")
        assert read_run(run_dir).status == "crashed"  # not reaped yet: still a zombie
    finally:
        run.kill()
        run.wait(timeout=60)


def test_the_failures_of_a_live_run_are_listed_as_provisional(cli: Any, tmp_path: Path) -> None:
    """retry --dry-run and show --failures of a run still running ended with "Retry them with: batchcli retry
    RUN", which retry then refused (the run is live). They say the list may grow and to retry once it ended."""
    run, run_dir, _ = slow_keyed_run(tmp_path)
    try:
        wait_for(lambda: read_run(run_dir).failed > 0, "the run to journal its failure")
        for listing in (cli("retry", run_dir, "--dry-run"), cli("show", run_dir, "--failures")):
            said = " ".join(listing.output.split())
            assert listing.exit_code == 0, listing.output
            assert f"The run is still running, so more may fail. Once it has ended, retry them with: batchcli retry {run_dir}" in said, said
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(timeout=60)


def test_a_lowered_concurrency_holds_for_workers_waiting_for_a_rate_slot(tmp_path: Path) -> None:
    """`ctl set concurrency=1` under a rate limit: workers already waiting for their start slot started anyway, and
    the items in flight went on rising to the old 20 (the same after a cool-down)."""
    out, ledger = tmp_path / "out", tmp_path / "ledger.txt"
    run = start(
        "exec", UNATTENDED, "-d", out, "-p", f"ledger={ledger}", "-p", "count=200", "-p", "delay_s=4", "-p", "concurrency=20",
        "-p", "rate_limit=5", stderr=tmp_path / "exec.txt",
    )  # fmt: skip
    try:
        run_dir = one_run(out)

        def in_flight() -> int:
            stats = batchcli("ctl", run_dir, "stats").stdout
            return int(stats.split("in_flight: ")[1].split()[0])

        wait_for(lambda: (run_dir / "control.sock").exists() and in_flight() >= 4, "a few items in flight")
        assert batchcli("ctl", run_dir, "set", "concurrency=1").returncode == 0
        at_set = in_flight()
        seen = [in_flight() for _ in range(8)]  # about 3 s of polls, while the first items are still in their 4 s
        assert max(seen) <= at_set, (at_set, seen)
        assert batchcli("ctl", run_dir, "stop").returncode == 0
        run.wait(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()


def test_ctl_on_a_resume_still_loading_past_its_wait_says_it_is_starting(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project slower to import than ctl waits for (torch takes longer than 10 s): ctl said the run "has no control
    socket: it was started by a batchcli without ctl", and to kill it."""
    import batchcli.cli.ctl

    run_dir = interrupted_run(tmp_path, signal.SIGINT)
    resume = start("resume", run_dir, stderr=tmp_path / "resume.txt", SLOW_IMPORT_S="60")
    try:
        wait_for(lambda: RunLock.is_held(run_dir), "the resume to take the lock")
        monkeypatch.setattr(batchcli.cli.ctl, "SOCKET_WAIT_S", 0.5)
        result = cli("ctl", run_dir, "stats")
        said = " ".join(result.output.split())
        assert result.exit_code == 1, result.output
        assert f"is starting: process {resume.pid} is still loading its project" in said, said
        assert "kill" not in said and "Traceback" not in said
        # watch showed the ended session's last frame: "stopping", its rate and an ETA, while nothing ran.
        watched = cli("watch", run_dir, "--once")
        assert watched.exit_code == 0, watched.output
        shown = " ".join(watched.output.split())
        assert f"running (pid {resume.pid}) starting: loading the project" in shown, shown
        assert "stopping" not in shown and " -/s " in shown and "eta -:--:--" in shown, shown
        listed = " ".join(cli("runs", "-d", run_dir.parent).output.split())
        assert "running" in listed and "starting" in listed and "/s now" not in listed, listed
    finally:
        resume.kill()
        resume.wait()
