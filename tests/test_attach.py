"""batchcli attach: the pause shell of a run without a terminal, as IPython in another terminal (a pty here)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest

from conftest import PROJECTS, subprocess_env
from joblog import JobLog, wait_for

JOB = PROJECTS / "unattended" / "job.py"
COLOUR = r"(?:\x1b\[[0-9;]*m)*"
PROMPT = rf"In \[{COLOUR}\d+{COLOUR}\]: "
"""IPython's prompt, coloured or not."""


def attach(run_dir: Path, tmp_path: Path, term: str = "xterm") -> pexpect.spawn:
    """``batchcli attach RUN`` in a pseudo-terminal of type ``term``, once its first prompt is up."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "batchcli", "attach", str(run_dir)],
        env=subprocess_env(TERM=term, IPYTHONDIR=str(tmp_path / "ipython"), PROMPT_TOOLKIT_NO_CPR="1"),
        dimensions=(60, 250),
        encoding="utf-8",
        timeout=60,
    )
    child.logfile_read = (tmp_path / "transcript.txt").open("a")
    child.expect("run paused")
    child.expect(PROMPT)
    return child


def cell(child: pexpect.spawn, code: str) -> str:
    """Run one cell and return what it printed before the next prompt (prompt_toolkit redraws the current one)."""
    shown = re.findall(rf"In \[{COLOUR}(\d+)", str(child.before) + str(child.after))
    child.sendline(code)
    child.expect(rf"In \[{COLOUR}{int(shown[-1]) + 1}{COLOUR}\]: ")
    return str(child.before)


def headless(tmp_path: Path, count: int, *params: str) -> tuple[subprocess.Popen[bytes], Path, JobLog]:
    """``batchcli exec`` of the slow job without a terminal (``count`` items, 0.05 s each, two at once, ``params``
    added), once under way: its process, its run directory and the job's ledger."""
    ledger = tmp_path / "ledger.txt"
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(JOB), "-d", str(out), "-p", f"count={count}", "-p", "delay_s=0.05",
         "-p", "concurrency=2", "-p", f"ledger={ledger}", *params],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=(tmp_path / "run.err").open("w"),
        env=subprocess_env(IPYTHONDIR=str(tmp_path / "ipython")),
    )  # fmt: skip
    log = JobLog(ledger)
    try:
        wait_for(lambda: any(out.glob("*/control.sock")) and len(log.done()) > 5, "the run under way")
    except BaseException:
        run.kill()
        raise
    return run, next(out.glob("*/control.sock")).parent, log


def advancing(log: JobLog) -> bool:
    """Whether the run completes items now (over a fifth of a second)."""
    before = len(log.done())
    time.sleep(0.2)
    return len(log.done()) > before


def test_attach_to_a_headless_run_awaits_on_it_resumes_it_survives_a_killed_client_and_stops_it(tmp_path: Path) -> None:
    """attach pauses a run without a terminal and gives IPython on it (await on its loop, its names); leaving or a killed client resumes it; self.stop() stops it resumably and resume loses and repeats nothing."""
    run, run_dir, log = headless(tmp_path, 400)
    try:

        # Attached: paused, the connection file owner-only, await runs the live service on the run's loop.
        child = attach(run_dir, tmp_path)
        assert stat.S_IMODE((run_dir / "kernel.json").stat().st_mode) == 0o600
        assert "True" in cell(child, "self.stats().paused")
        settled = len(log.done())
        assert not advancing(log) and len(log.done()) == settled
        assert "'done'" in cell(child, "await service.process(1000); open(service.ledger).read().splitlines()[-1][:4]")
        assert "[1000]" in cell(child, "[n for n in range(999, 1002) if f'done {n}' in open(service.ledger).read()]")
        cell(child, "kept = sorted(config.__dict__)[:1]")
        child.sendline("exit")
        child.expect("Resumed the run.")
        child.expect(pexpect.EOF)
        wait_for(lambda: advancing(log), "the run going on after the shell closed")
        assert not (run_dir / "kernel.json").exists()

        # A client killed with -9 leaves the run going, and the next attach has the same names.
        child = attach(run_dir, tmp_path)
        assert "['" in cell(child, "kept")
        child.kill(signal.SIGKILL)
        child.wait()
        wait_for(lambda: advancing(log), "the run going on after its client was killed")

        # self.stop(): the run stops when the shell closes, resumably (exit 130).
        child = attach(run_dir, tmp_path)
        cell(child, "self.stop()")
        child.sendline("exit")
        child.expect("Stopping")
        child.expect(pexpect.EOF)
        assert run.wait(timeout=30) == 130
    finally:
        if run.poll() is None:
            run.kill()
    resumed = subprocess.run(
        [sys.executable, "-m", "batchcli", "resume", str(run_dir), "-p", "concurrency=20", "-p", "delay_s=0"],
        capture_output=True, text=True, timeout=60, env=subprocess_env(IPYTHONDIR=str(tmp_path / "ipython")),
    )
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(set(log.done()) - {1000}) == list(range(400))
    assert log.done_twice() == []


def test_attach_refuses_what_it_cannot_attach_to(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """attach to a finished run, a non-run directory or another user's run, or without batchcli[attach]: one paragraph and the exit code ctl gives."""
    done = cli("exec", JOB, "-d", tmp_path / "out", "-p", "count=3", "-p", "delay_s=0", "--no-shell")
    run_dir = done.run_dir
    assert run_dir is not None
    finished = cli("attach", run_dir)
    assert finished.exit_code == 1 and "has finished" in finished.output and "batchcli show" in finished.output
    nothing = cli("attach", tmp_path)
    assert nothing.exit_code == 2 and "not a batchcli run directory" in nothing.output
    if os.getuid() == 0:
        os.chown(run_dir, 65534, 65534)
        try:
            theirs = cli("attach", run_dir)
            assert theirs.exit_code == 2 and "belongs to user id 65534, not to you" in theirs.output
        finally:
            os.chown(run_dir, 0, 0)
    monkeypatch.setitem(sys.modules, "jupyter_console.app", None)
    missing = cli("attach", run_dir)
    assert missing.exit_code == 2 and "pip install 'batchcli[attach]'" in missing.output


def test_start_up_imports_no_kernel_machinery() -> None:
    """batchcli --help imports neither ipykernel, zmq nor jupyter: attach's extra loads only when used."""
    probe = (
        "import sys; from batchcli.__main__ import main; sys.argv = ['batchcli', '--help']\n"
        "try: main()\nexcept SystemExit: pass\n"
        "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'ipykernel', 'zmq', 'jupyter_client', 'jupyter_console', 'tornado'}))"
    )
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert "attach" in shown.stdout and "LOADED []" in shown.stdout, shown.stdout + shown.stderr


def test_a_closed_kernel_leaves_pdb_faulthandler_and_the_std_streams_as_they_were(tmp_path: Path) -> None:
    """ipykernel patches pdb (IPython's debugger for ``breakpoint()``) and faulthandler's defaults for the whole
    process; closing the kernel puts them back, so the run after a session is the run before it."""
    script = tmp_path / "kernel_state.py"
    script.write_text(
        "import faulthandler, pdb, sys\n"
        "from batchcli.run.kernel import Kernel\n"
        "def state():\n"
        "    return (pdb.Pdb, pdb.set_trace, faulthandler.enable, faulthandler.register, sys.stdout, sys.displayhook)\n"
        "before = state()\n"
        f"kernel = Kernel(object(), {{}}, __import__('pathlib').Path({str(tmp_path / 'kernel.json')!r}))\n"
        "during = state()\n"
        "kernel.close()\n"
        "after = state()\n"
        "print('CHANGED', sum(a is not b for a, b in zip(before, during)), 'LEFT', [i for i, (a, b) in enumerate(zip(before, after)) if a is not b])\n"
    )
    out = subprocess.run([sys.executable, str(script)], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    changed, left = re.search(r"CHANGED (\d+) LEFT (\[.*\])", out.stdout).groups()  # type: ignore[union-attr]
    assert int(changed) >= 3  # the kernel did patch them (else this test proves nothing)
    assert left == "[]"
    assert not (tmp_path / "kernel.json").exists()


@pytest.mark.parametrize("signals", [1, 2])
def test_a_stop_signal_closes_an_attached_console_at_the_stop_timeout_or_at_once_the_second_time(
    tmp_path: Path, run_batchcli: Any, signals: int
) -> None:
    """A supervisor's SIGTERM while someone is attached went unanswered until the client left (a second one too, though
    the log said "stopping at once"), so the supervisor's SIGKILL came first. The console now closes when the stop
    times out, or at once at a second signal; the run stops resumably and its resume redoes nothing."""
    run, run_dir, log = headless(tmp_path, 400, "-p", "stop_timeout_s=2")
    try:
        child = attach(run_dir, tmp_path)
        for _ in range(signals):
            run.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        assert run.wait(timeout=30) == 130  # before: still waiting for the client after 45 s
        child.expect(pexpect.EOF)
    finally:
        if run.poll() is None:
            run.kill()
    said = (run_dir / "batchcli.log").read_text()
    assert "A shell is open on this run: it closes when the stop times out" in said
    assert "The job's code still runs past the stop timeout" not in said
    resumed = run_batchcli("resume", str(run_dir), timeout=120)
    assert resumed.exit_code == 0, resumed.output
    assert sorted(log.done()) == list(range(400)) and log.done_twice() == []


@pytest.mark.parametrize("how", ["ctl", "SIGTERM"])
def test_a_stop_interrupts_a_cell_running_in_an_attached_console(tmp_path: Path, run_batchcli: Any, how: str) -> None:
    """A cell that sleeps (or loops) on the run's main thread held every stop: the session ends only once the cell
    returns, so ctl stop and SIGTERM, twice, went unanswered and only SIGKILL ended the run. The stop timeout now
    interrupts the cell as a console's Ctrl-C would; the run stops resumably and its resume redoes nothing."""
    run, run_dir, log = headless(tmp_path, 300, "-p", "stop_timeout_s=1")
    try:
        child = attach(run_dir, tmp_path)
        child.sendline("import time; time.sleep(600)")
        time.sleep(1)  # the cell is running
        if how == "ctl":
            stopped = subprocess.run(
                [sys.executable, "-m", "batchcli", "ctl", str(run_dir), "stop"],
                capture_output=True, text=True, timeout=60, env=subprocess_env(),
            )  # fmt: skip
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        else:
            run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=30) == 130  # before: the run waited for the 600 s cell
        child.expect("KeyboardInterrupt")
        child.expect(pexpect.EOF)
    finally:
        if run.poll() is None:
            run.kill()
    assert not (run_dir / "kernel.json").exists()
    resumed = run_batchcli("resume", str(run_dir), timeout=120)
    assert resumed.exit_code == 0, resumed.output
    assert sorted(log.done()) == list(range(300)) and log.done_twice() == []


def test_attach_works_after_the_runs_own_pause_shell_was_open(tmp_path: Path) -> None:
    """The pause shell (IPython's embedded shell) registered itself as the process's one InteractiveShell, so a later
    attach could not start a kernel ("MultipleInstanceError") for as long as the run lived. It holds that place only
    while it is open now, and the run's own terminal and an attached console take turns."""
    ledger = tmp_path / "ledger.txt"
    out = tmp_path / "out"
    own = pexpect.spawn(
        sys.executable,
        ["-m", "batchcli", "exec", str(JOB), "-d", str(out), "-p", "count=300", "-p", "delay_s=0.05",
         "-p", "concurrency=2", "-p", f"ledger={ledger}"],  # fmt: skip
        env=subprocess_env(TERM="xterm", IPYTHONDIR=str(tmp_path / "ipython"), PROMPT_TOOLKIT_NO_CPR="1"),
        dimensions=(60, 250),
        encoding="utf-8",
        timeout=60,
    )
    own.logfile_read = (tmp_path / "own.txt").open("a")
    log = JobLog(ledger)
    try:
        wait_for(lambda: any(out.glob("*/control.sock")) and len(log.done()) > 5, "the run under way")
        run_dir = next(out.glob("*/control.sock")).parent
        own.sendintr()
        own.expect("run paused")
        own.expect(PROMPT)
        own.sendline("exit")
        own.expect("Resuming the run.")
        child = attach(run_dir, tmp_path)  # before: "could not start a kernel ... MultipleInstanceError"
        assert "True" in cell(child, "self.stats().paused")
        child.sendline("exit")
        child.expect("Resumed the run.")
        child.expect(pexpect.EOF)
        own.sendintr()  # and the run's own shell opens again after the attached one
        own.expect("run paused")
        own.expect(PROMPT)
        own.sendline("exit")
        own.expect("Resuming the run.")
        own.expect(pexpect.EOF)
        own.close()
        assert own.exitstatus == 0
    finally:
        if own.isalive():
            own.terminate(force=True)
    assert sorted(log.done()) == list(range(300)) and log.done_twice() == []


def test_the_connection_file_of_a_run_killed_while_attached_goes_with_its_resume(tmp_path: Path, run_batchcli: Any) -> None:
    """A run killed (-9) while a console was attached left kernel.json, its HMAC key in it, for good: the resume that
    finished the run left it there, and its sockets' directory in the temporary directory. The resume removes both
    as it takes the run over, as it does the control socket.
    The console said nothing of the death and exited 0; on a dumb terminal (TERM=dumb: Emacs, some CI) it stayed at
    its prompt for good. It now leaves on either, saying the run died and how to resume it, with exit 1."""
    run, run_dir, log = headless(tmp_path, 1000)  # 25 s: the console starts slowly on a loaded machine
    try:
        child = attach(run_dir, tmp_path, term="dumb")
        run.kill()
        run.wait(timeout=30)
        child.expect("died while you were attached")  # before (dumb): no EOF, the prompt waited for a line
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 1
        assert f"batchcli resume {run_dir}" in " ".join((tmp_path / "transcript.txt").read_text().split())
    finally:
        if run.poll() is None:
            run.kill()
    assert (run_dir / "kernel.json").exists()
    sockets = Path(json.loads((run_dir / "kernel.json").read_text())["ip"]).parent  # the kernel's private directory
    assert sockets.name.startswith("batchcli-attach-") and any(sockets.iterdir())
    resumed = run_batchcli("resume", str(run_dir), "-p", "delay_s=0", timeout=120)
    assert resumed.exit_code == 0, resumed.output
    assert not (run_dir / "kernel.json").exists()
    assert not sockets.exists()  # left in the temporary directory for good before, one per death
    assert sorted(set(log.done())) == list(range(1000))
