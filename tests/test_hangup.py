"""A terminal that hangs up (an ssh connection that drops) no longer ends the run: it goes on without it."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pexpect
import pytest
from conftest import PROJECTS, subprocess_env
from joblog import JobLog, wait_for

JOB = PROJECTS / "unattended" / "job.py"


@pytest.mark.parametrize("executor", ["async", "process"])
def test_a_run_whose_terminal_hangs_up_goes_on_without_it_and_finishes(tmp_path: Path, executor: str) -> None:
    """The pty's master closes mid-run, so the kernel sends SIGHUP to the run (and its worker processes): the run
    logs how to reach it and finishes every item once, exit 0; before, SIGHUP's default ended it at once."""
    ledger = tmp_path / "ledger.txt"
    out = tmp_path / "out"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "batchcli", "exec", str(JOB), "-d", str(out), "-p", "count=200", "-p", "delay_s=0.05",
         "-p", "concurrency=2", "-p", f"executor={executor}", "-p", f"ledger={ledger}"],  # fmt: skip
        env=subprocess_env(TERM="xterm"),
        encoding="utf-8",
        timeout=60,
    )
    log = JobLog(ledger)
    wait_for(lambda: len(log.done()) >= 10, "the run under way", timeout=60)
    os.close(child.child_fd)  # the terminal hangs up: SIGHUP to its foreground process group
    child.closed = True
    at_hang_up = len(log.done())
    deadline = time.monotonic() + 90
    while (waited := os.waitpid(child.pid, os.WNOHANG))[0] == 0:
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.1)
    assert os.waitstatus_to_exitcode(waited[1]) == 0
    assert at_hang_up < 150  # it had most of its items to do after the hang-up
    assert sorted(log.done()) == list(range(200)) and log.done_twice() == []
    run_dir = next(out.glob("*/summary.json")).parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["succeeded"], summary["failed"]) == ("finished", 200, 0)
    text = (run_dir / "batchcli.log").read_text()
    assert "The terminal hung up (SIGHUP): the run goes on without it" in text
    assert f"batchcli ctl {run_dir} stop" in text


def test_a_terminal_that_hangs_up_while_the_pause_shell_is_open_leaves_it_and_the_run_resumes(tmp_path: Path) -> None:
    """Ctrl-C opens the pause shell, then the terminal hangs up: nobody can leave that shell any more, and the run
    stayed paused for good (a breaker's pause shell too: no probe, no stop at breaker_max_wait_s), with `ctl resume`
    refused while a shell is open. The shell is now left as Ctrl-D leaves it: the run resumes and finishes."""
    ledger = tmp_path / "ledger.txt"
    out = tmp_path / "out"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "batchcli", "exec", str(JOB), "-d", str(out), "-p", "count=150", "-p", "delay_s=0.05",
         "-p", "concurrency=2", "-p", f"ledger={ledger}"],  # fmt: skip
        env=subprocess_env(TERM="xterm"),
        encoding="utf-8",
        timeout=60,
    )
    log = JobLog(ledger)
    wait_for(lambda: len(log.done()) >= 10, "the run under way", timeout=60)
    child.sendintr()
    child.expect(r"In \[")  # the pause shell is open (colours come between "In [" and "1]")
    at_hang_up = len(log.done())
    os.close(child.child_fd)  # the terminal hangs up
    child.closed = True
    deadline = time.monotonic() + 90
    while (waited := os.waitpid(child.pid, os.WNOHANG))[0] == 0:
        assert time.monotonic() < deadline, "the run did not end: it stayed paused in a shell nobody can leave"
        time.sleep(0.1)
    assert os.waitstatus_to_exitcode(waited[1]) == 0
    assert at_hang_up < 100
    assert sorted(log.done()) == list(range(150)) and log.done_twice() == []
    run_dir = next(out.glob("*/summary.json")).parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["succeeded"]) == ("finished", 150)
    # Said in the log when the run left the shell; the prompt may also see the terminal's end first and close alone.
    text = (run_dir / "batchcli.log").read_text()
    assert "The terminal hung up (SIGHUP)" in text
