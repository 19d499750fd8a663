"""Who may take a run's failed inputs, and when: a retry holds the runs it reprocesses (and those they retried) for
its whole run, a resume holds the run it continues. Each test is a defect an adversarial run found: a retry placed
elsewhere with -d, a resume of the run as its retry checked the failures, a retry of a retry, and two retries
holding one released lock."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS, subprocess_env

from batchcli.errors import JournalError
from batchcli.journal import rundir
from batchcli.journal.rundir import RETRYING_NAME, RetryLock

LOCKED = PROJECTS / "journal_retry" / "locked.py"
QUIET = ("--no-shell", "-p", "max_retries=0", "-p", "breaker_window=0")
SAVED_FAILURES = [n for n in range(60) if n % 3 and n % 7]
"""The inputs of locked.py's 60 items that fail and could be saved: a retry takes these."""


def said(outcome: Any) -> str:
    return " ".join(outcome.output.replace("│", " ").split())


def processed(ledger: Path) -> Counter[int]:
    return Counter(int(line) for line in ledger.read_text().split()) if ledger.exists() else Counter()


class Held:
    """``batchcli ARGS`` in a subprocess, held at a gate file (``-p hold_at`` in a run, ``WAIT_AT`` as a retry
    checks its inputs) until ``open()``."""

    def __init__(self, gate: Path, *args: Any, **env: str) -> None:
        self.gate = gate
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchcli", *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(**env),
        )  # fmt: skip

    def __enter__(self) -> Held:
        waiting = Path(f"{self.gate}.waiting")
        for _ in range(1200):
            if waiting.exists() or self.proc.poll() is not None:
                break
            time.sleep(0.05)
        assert waiting.exists(), self.proc.communicate()[0]
        return self

    def open(self) -> str:
        self.gate.touch()
        output = self.proc.communicate(timeout=120)[0]
        assert self.proc.returncode == 0, output
        return output

    def __exit__(self, *exc: object) -> None:
        self.gate.touch()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_retry_placed_elsewhere_keeps_a_second_retry_out_while_it_runs(cli: Any, tmp_path: Path) -> None:
    """A retry made with -d elsewhere was invisible to a second retry once its journal existed (the lock covered its
    preparation only, and the second looks for running retries beside the run): every input was processed twice."""
    ran = cli("exec", LOCKED, "-d", "out", *QUIET, "-p", f"ledger={tmp_path / 'first'}")
    gate, ledger = tmp_path / "gate", tmp_path / "retried"
    with Held(gate, "retry", ran.run_dir, "-d", tmp_path / "elsewhere", "-p", "fix=true", "-p", f"ledger={ledger}",
              "-p", "hold_at=4", "-p", f"gate={gate}", "--no-shell") as first:  # fmt: skip
        second = cli("retry", ran.run_dir, "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
        assert second.exit_code == 2, second.output
        assert f"is being retried by another process (pid {first.proc.pid})" in said(second), second.output
        assert second.run_dir is None and processed(ledger)[1] == 1  # the first runs, the second started nothing

        # what the retry would take is listed with a word that a retry holds the run
        for listing in (cli("retry", ran.run_dir, "--dry-run"), cli("show", ran.run_dir, "--failures")):
            assert listing.exit_code == 0, listing.output
            assert f"is being retried by another process (pid {first.proc.pid}): retry refuses" in said(listing)
        first.open()
    assert processed(ledger) == Counter(SAVED_FAILURES)  # each once
    assert not (ran.run_dir / RETRYING_NAME).exists()
    quiet = cli("show", ran.run_dir, "--failures")
    assert "is being retried" not in said(quiet), quiet.output


def test_a_run_is_not_resumed_while_a_retry_of_it_checks_its_failures(cli: Any, tmp_path: Path) -> None:
    """A resume of the run, started while its retry checked the failures, recorded more of them meanwhile: the retry
    copied and ran those too, never checked, and its notices counted the first session's failures only."""
    ran = cli("exec", LOCKED, "-d", "out", *QUIET, "-p", f"ledger={tmp_path / 'first'}", "-p", "count=3000",
              "-p", "stop_at=30")  # fmt: skip
    assert ran.exit_code == 130, ran.output
    failed_first = [n for (n,) in rundir.query(ran.run_dir, "SELECT ordinal FROM failures")]
    assert failed_first and all(n % 3 for n in failed_first)
    gate, ledger = tmp_path / "gate", tmp_path / "retried"
    with Held(gate, "retry", ran.run_dir, "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell",
              WAIT_AT="4", WAIT_FOR=str(gate)) as retry:  # fmt: skip
        resumed = cli("resume", ran.run_dir, "--no-shell")
        assert resumed.exit_code == 2, resumed.output
        assert f"is being retried by another process (pid {retry.proc.pid})" in said(resumed), resumed.output
        output = retry.open()
    assert processed(ledger) == Counter(n for n in failed_first if n % 7), output  # the failures it counted, once

    # the retry has ended: the resume goes on, and the failures it records are for the next retry
    resumed = cli("resume", ran.run_dir, "--no-shell")
    assert resumed.exit_code == 1 and "Finished:" in said(resumed), resumed.output


def test_a_retry_of_a_retry_holds_the_run_it_comes_from(cli: Any, tmp_path: Path) -> None:
    """run → retry R1 → retry R2 of R1: a retry of the run while R2 ran was accepted, and both processed the inputs."""
    ran = cli("exec", LOCKED, "-d", "out", *QUIET, "-p", f"ledger={tmp_path / 'first'}")
    again = cli("retry", ran.run_dir, "-p", f"ledger={tmp_path / 'first'}", "--no-shell")
    assert again.exit_code == 1 and again.run_dir is not None, again.output  # R1: they fail again
    gate, ledger = tmp_path / "gate", tmp_path / "retried"
    with Held(gate, "retry", again.run_dir, "-p", "fix=true", "-p", f"ledger={ledger}", "-p", "hold_at=4",
              "-p", f"gate={gate}", "--no-shell") as second:  # fmt: skip
        refused = cli("retry", ran.run_dir, "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
        assert refused.exit_code == 2, refused.output
        assert f"Run {str(ran.run_dir)!r} is being retried by another process (pid {second.proc.pid})" in said(refused)
        second.open()
    assert processed(ledger) == Counter(SAVED_FAILURES)


def test_a_released_lock_is_never_held_by_two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder removes the lock file as it lets go: a process that had opened the file just before then locked
    the removed file, while another made and locked a new one, and both went on as the only retry."""
    run = tmp_path / "run"
    run.mkdir()
    first = RetryLock.acquire(run, "retry")
    late: list[RetryLock] = []
    real = fcntl.flock

    def first_lets_go_meanwhile(fd: int, operation: int) -> None:
        monkeypatch.setattr(fcntl, "flock", real)
        first.release()  # between this process opening the old file and locking it...
        late.append(RetryLock.acquire(run, "retry"))  # ...another makes the new one and locks it
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", first_lets_go_meanwhile)
    with pytest.raises(JournalError, match="is being retried by another process"):
        RetryLock.acquire(run, "retry")  # the old file locked, found gone: the new one is held
    assert late and late[0]._fd is not None
    late[0].release()
    assert not (run / RETRYING_NAME).exists()


def test_a_run_moved_while_held_keeps_no_lock_file(tmp_path: Path) -> None:
    """The run moved away as its retry ran: letting go removed the file at the old path, and left it in the run."""
    run = tmp_path / "run"
    run.mkdir()
    lock = RetryLock.acquire(run, "resume")
    assert (run / RETRYING_NAME).read_text().split()[1] == "resume"
    assert rundir.holding(run) == (f"resumed by another process (pid {os.getpid()})", os.getpid())
    run.rename(tmp_path / "moved")
    lock.release()
    assert list((tmp_path / "moved").iterdir()) == []


@pytest.mark.parametrize("move", ["renamed", "linked"])
def test_a_retry_of_a_retry_holds_the_run_after_their_directory_moved(cli: Any, tmp_path: Path, move: str) -> None:
    """The runs record their parent's path: once the output directory was renamed, a retry of the retry no longer
    found the run it comes from, and a retry of that run ran beside it, each processing every input. Moved to
    another disk with a link left in its place, the path went through a link, and was not followed either."""
    ran = cli("exec", LOCKED, "-d", "out", *QUIET, "-p", f"ledger={tmp_path / 'first'}")
    again = cli("retry", ran.run_dir, "-p", f"ledger={tmp_path / 'first'}", "--no-shell")
    assert again.exit_code == 1 and again.run_dir is not None, again.output
    (tmp_path / "out").rename(tmp_path / "moved")
    home = tmp_path / "moved"
    if move == "linked":
        (tmp_path / "out").symlink_to(home)
        home = tmp_path / "out"
    run, retried = home / ran.run_dir.name, home / again.run_dir.name
    gate, ledger = tmp_path / "gate", tmp_path / "retried"
    with Held(gate, "retry", retried, "-p", "fix=true", "-p", f"ledger={ledger}", "-p", "hold_at=4",
              "-p", f"gate={gate}", "--no-shell") as second:  # fmt: skip
        refused = cli("retry", run, "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
        assert refused.exit_code == 2, refused.output
        assert f"Run {str(run)!r} is being retried by another process (pid {second.proc.pid})" in said(refused)
        second.open()
    assert processed(ledger) == Counter(SAVED_FAILURES)
    dry = cli("retry", run, "--dry-run")  # and what it did is done for the run
    assert f"Leaving out {len(SAVED_FAILURES)} failure(s) of {str(run)!r}" in said(dry), dry.output


def test_a_run_where_no_lock_file_can_be_made_is_held_by_its_journal(cli: Any, tmp_path: Path) -> None:
    """A run that cannot be written (immutable here; read-only or another user's in real life), retried twice at
    once with -d elsewhere: no lock file could be made, so neither was refused, and each processed every input."""
    ran = cli("exec", LOCKED, "-d", "out", *QUIET, "-p", f"ledger={tmp_path / 'first'}")
    if subprocess.run(["chattr", "+i", str(ran.run_dir)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        gate, ledger = tmp_path / "gate", tmp_path / "retried"
        with Held(gate, "retry", ran.run_dir, "-d", tmp_path / "one", "-p", "fix=true", "-p", f"ledger={ledger}",
                  "-p", "hold_at=4", "-p", f"gate={gate}", "--no-shell") as first:  # fmt: skip
            second = cli("retry", ran.run_dir, "-d", tmp_path / "two", "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
            assert second.exit_code == 2, second.output
            assert f"Run {str(ran.run_dir)!r} is being retried by another process, which" in said(second)
            first.open()
        assert processed(ledger) == Counter(SAVED_FAILURES)
    finally:
        subprocess.run(["chattr", "-i", str(ran.run_dir)], check=True)
    assert not (ran.run_dir / RETRYING_NAME).exists()


def test_a_directory_in_place_of_the_lock_file_is_refused(tmp_path: Path) -> None:
    """A directory named batchcli.retrying (in a copied run) made the lock silently do nothing."""
    (tmp_path / RETRYING_NAME).mkdir()
    with pytest.raises(JournalError, match="is a directory, which batchcli never makes"):
        RetryLock.acquire(tmp_path, "retry")


def test_a_look_at_who_holds_a_run_never_makes_a_retry_refused(tmp_path: Path) -> None:
    """`show --failures` looks at the lock by taking it shared for an instant: a retry starting just then was
    refused, naming the pid a process killed with -9 had left in the file."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / RETRYING_NAME).write_text(f"{dead.pid} resume\n")  # left by a holder killed with -9
    look = os.open(tmp_path / RETRYING_NAME, os.O_RDONLY)
    fcntl.flock(look, fcntl.LOCK_SH)  # as `holding` does, for an instant: here until the timer below
    timer = threading.Timer(0.1, os.close, (look,))
    timer.start()
    lock = RetryLock.acquire(tmp_path, "retry")  # waits the look out
    timer.join()
    assert (tmp_path / RETRYING_NAME).read_text() == f"{os.getpid()} retry\n"
    lock.release()

    (tmp_path / RETRYING_NAME).write_text(f"{dead.pid} resume\n")
    look = os.open(tmp_path / RETRYING_NAME, os.O_RDONLY)
    fcntl.flock(look, fcntl.LOCK_SH)  # kept: a real holder, whose record is not written yet
    try:
        with pytest.raises(JournalError) as refused:
            RetryLock.acquire(tmp_path, "retry")
    finally:
        os.close(look)
    assert "is being resumed by another process, which" in str(refused.value)
    assert str(dead.pid) not in str(refused.value)  # the dead process is not named


def test_a_link_made_since_in_a_recorded_path_is_not_followed_to_another_users_directory(cli: Any, tmp_path: Path) -> None:
    """A retry's lock went wherever a link now at its parent's recorded path pointed, and wrote its file there."""
    ran = cli("exec", LOCKED, "-d", "out", *QUIET, "-p", f"ledger={tmp_path / 'first'}")
    again = cli("retry", ran.run_dir, "-p", f"ledger={tmp_path / 'first'}", "--no-shell")
    assert again.exit_code == 1 and again.run_dir is not None, again.output
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "journal.sqlite").write_bytes((ran.run_dir / "journal.sqlite").read_bytes())
    try:
        os.chown(victim, 65534, 65534)  # another user's directory
    except PermissionError:
        pytest.skip("making a directory another user's needs root")
    os.chmod(victim, 0o777)  # writable for us whoever we are: only the owner check keeps the file out
    for path in ran.run_dir.iterdir():
        path.unlink()
    ran.run_dir.rmdir()
    ran.run_dir.symlink_to(victim)
    gate, ledger = tmp_path / "gate", tmp_path / "retried"
    with Held(gate, "retry", again.run_dir, "-p", "fix=true", "-p", f"ledger={ledger}", "-p", "hold_at=4",
              "-p", f"gate={gate}", "--no-shell") as second:  # fmt: skip
        assert not (victim / RETRYING_NAME).exists()
        second.open()


def test_a_groups_retry_holds_the_group_after_it_was_renamed(cli: Any, tmp_path: Path) -> None:
    """A group's retry records the group's path: the group renamed, a retry of the group's retry no longer found it,
    and a retry of the group ran beside it, each processing every input."""
    for index in (0, 1):
        shard = cli("exec", LOCKED, "--shard", f"{index}/2", "--group", "G", "-d", "out", *QUIET,
                    "-p", f"ledger={tmp_path / 'first'}")  # fmt: skip
        assert shard.exit_code == 1, shard.output
    again = cli("retry", tmp_path / "out" / "G", "-p", f"ledger={tmp_path / 'first'}", "--no-shell")
    assert again.exit_code == 1, again.output
    (retried,) = [path for path in (tmp_path / "out" / "G").iterdir() if not path.name.startswith("shard")
                  and (path / "journal.sqlite").exists()]  # fmt: skip
    (tmp_path / "out" / "G").rename(tmp_path / "out" / "nightly")
    group, retried = tmp_path / "out" / "nightly", tmp_path / "out" / "nightly" / retried.name
    gate, ledger = tmp_path / "gate", tmp_path / "retried"
    with Held(gate, "retry", retried, "-p", "fix=true", "-p", f"ledger={ledger}", "-p", "hold_at=4",
              "-p", f"gate={gate}", "--no-shell") as second:  # fmt: skip
        refused = cli("retry", group, "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
        assert refused.exit_code == 2, refused.output
        assert f"is being retried by another process (pid {second.proc.pid})" in said(refused), refused.output
        second.open()
    assert processed(ledger) == Counter(SAVED_FAILURES)  # each once, across both shards
