"""A terminal that hangs up (an ssh connection that drops) no longer ends the run: it goes on without it."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest
from conftest import PROJECTS, subprocess_env
from joblog import JobLog, wait_for

JOB = PROJECTS / "unattended" / "job.py"


def on_a_terminal(tmp_path: Path, count: int, *params: str) -> tuple[Any, JobLog]:
    """``exec`` of the unattended job in a pseudo-terminal, and its ledger, once ten items are done."""
    ledger = tmp_path / "ledger.txt"
    flags = [part for param in (f"count={count}", "delay_s=0.05", "concurrency=2", f"ledger={ledger}", *params)
             for part in ("-p", param)]  # fmt: skip
    child = pexpect.spawn(
        sys.executable,
        ["-m", "batchcli", "exec", str(JOB), "-d", str(tmp_path / "out"), *flags],
        env=subprocess_env(TERM="xterm"),
        encoding="utf-8",
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),  # a suite under nohup passes it on ignored
    )
    log = JobLog(ledger)
    wait_for(lambda: len(log.done()) >= 10, "the run under way", timeout=60)
    return child, log


def hang_up(child: Any, why_not: str) -> int:
    """Close the pty's master (SIGHUP to its foreground process group); the run's exit code once it ends."""
    os.close(child.child_fd)
    child.closed = True
    deadline = time.monotonic() + 90
    while (waited := os.waitpid(child.pid, os.WNOHANG))[0] == 0:
        assert time.monotonic() < deadline, why_not
        time.sleep(0.1)
    return os.waitstatus_to_exitcode(waited[1])


@pytest.mark.parametrize("executor", ["async", "process"])
def test_a_run_whose_terminal_hangs_up_goes_on_without_it_and_finishes(tmp_path: Path, executor: str) -> None:
    """The pty's master closes mid-run, so the kernel sends SIGHUP to the run (and its worker processes): the run
    logs how to reach it and finishes every item once, exit 0; before, SIGHUP's default ended it at once."""
    child, log = on_a_terminal(tmp_path, 200, f"executor={executor}")
    at_hang_up = len(log.done())
    assert hang_up(child, "the run did not end") == 0
    assert at_hang_up < 150  # it had most of its items to do after the hang-up
    assert sorted(log.done()) == list(range(200)) and log.done_twice() == []
    run_dir = next((tmp_path / "out").glob("*/summary.json")).parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["succeeded"], summary["failed"]) == ("finished", 200, 0)
    text = (run_dir / "batchcli.log").read_text()
    assert "The terminal hung up (SIGHUP): the run goes on without it" in text
    assert f"batchcli ctl {run_dir} stop" in text


def test_a_background_run_with_every_stream_redirected_outlives_the_sessions_hang_up(tmp_path: Path) -> None:
    """`batchcli exec ... </dev/null >run.log 2>&1 &` from an ssh session, which then closes: the shell sends its
    jobs SIGHUP. No stream was a terminal, so batchcli left SIGHUP's default, which ended the run at once: crashed,
    no summary, no notification. It goes on now, as a run whose terminal hung up does."""
    import subprocess

    ledger = tmp_path / "ledger.txt"
    with open(tmp_path / "run.log", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchcli", "exec", str(JOB), "-d", str(tmp_path / "out"), "-p", "count=200",
             "-p", "delay_s=0.05", "-p", "concurrency=2", "-p", f"ledger={ledger}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=subprocess_env(),
            # As a shell's background job has it: a suite started under nohup would pass on SIGHUP ignored.
            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
        )  # fmt: skip
        try:
            log = JobLog(ledger)
            wait_for(lambda: len(log.done()) >= 10, "the run under way", timeout=60)
            proc.send_signal(signal.SIGHUP)
            assert proc.wait(timeout=90) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert sorted(log.done()) == list(range(200)) and log.done_twice() == []
    run_dir = next((tmp_path / "out").glob("*/summary.json")).parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["succeeded"]) == ("finished", 200)
    assert "(SIGHUP): the run goes on without it" in (run_dir / "batchcli.log").read_text()


def test_a_terminal_that_hangs_up_while_the_pause_shell_is_open_leaves_it_and_the_run_resumes(tmp_path: Path) -> None:
    """Ctrl-C opens the pause shell, then the terminal hangs up: nobody can leave that shell any more, and the run
    stayed paused for good (a breaker's pause shell too: no probe, no stop at breaker_max_wait_s), with `ctl resume`
    refused while a shell is open. The shell is now left as Ctrl-D leaves it: the run resumes and finishes."""
    child, log = on_a_terminal(tmp_path, 150)
    child.sendintr()
    child.expect(r"In \[")  # the pause shell is open (colours come between "In [" and "1]")
    at_hang_up = len(log.done())
    assert hang_up(child, "the run did not end: it stayed paused in a shell nobody can leave") == 0
    assert at_hang_up < 100
    assert sorted(log.done()) == list(range(150)) and log.done_twice() == []
    run_dir = next((tmp_path / "out").glob("*/summary.json")).parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["succeeded"]) == ("finished", 150)
    # Said in the log when the run left the shell; the prompt may also see the terminal's end first and close alone.
    assert "The terminal hung up (SIGHUP)" in (run_dir / "batchcli.log").read_text()


def test_a_terminal_that_hangs_up_while_a_cell_runs_in_the_pause_shell_interrupts_it_and_the_run_resumes(
    tmp_path: Path,
) -> None:
    """The terminal hangs up while a cell runs in the pause shell: the shell was left only once the cell returned, so
    a long ``self.retry_failed()`` or a cell that never returns kept the run paused for good. The cell is now
    interrupted as Ctrl-C would, the run resumes and finishes, and the log says so."""
    child, log = on_a_terminal(tmp_path, 150)
    child.sendintr()
    child.expect(r"In \[")
    child.sendline("import time; print('SLEEPING', 1); time.sleep(3600)")
    child.expect("SLEEPING 1")
    at_hang_up = len(log.done())
    assert hang_up(child, "the run did not end: it stayed paused behind the cell") == 0
    assert at_hang_up < 100
    assert sorted(log.done()) == list(range(150)) and log.done_twice() == []
    run_dir = next((tmp_path / "out").glob("*/summary.json")).parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["succeeded"]) == ("finished", 150)
    assert "running a cell: the cell is interrupted as Ctrl-C would" in (run_dir / "batchcli.log").read_text()
