"""Graceful stop without a terminal: SIGINT and SIGTERM to a real ``python -m batchcli`` with pipes."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS, newest_run, subprocess_env
from joblog import JobLog, wait_for


class Piped:
    """``batchcli exec`` as a background process whose stdin, stdout and stderr are pipes (no terminal)."""

    def __init__(self, tmp_path: Path, project: str, *args: str) -> None:
        self.log = JobLog(tmp_path / "job.log")
        self.out = tmp_path / "out"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchcli", "exec", str(PROJECTS / project), "-d", str(self.out),
             "-p", f"log_file={self.log.path}", *args],
            cwd=tmp_path,
            env=subprocess_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.output = ""

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self) -> int:
        """Wait for the exit (a generous bound, only so a hung run fails instead of hanging the suite)."""
        stdout, stderr = self.proc.communicate(timeout=15)
        self.output = stdout + stderr
        return self.proc.returncode

    def run_log(self) -> str:
        """The run directory's log file, once it exists."""
        logs = list(self.out.glob("*/batchcli.log"))
        return logs[0].read_text() if logs else ""

    def summary(self) -> dict[str, Any]:
        run_dir = newest_run(self.out)
        assert run_dir is not None, self.output
        return json.loads((run_dir / "summary.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture
def piped(tmp_path: Path) -> Any:
    """Start ``batchcli exec PROJECT ARGS...`` with pipes; killed at the end of the test if still running."""
    started: list[Piped] = []

    def start(project: str, *args: str) -> Piped:
        started.append(Piped(tmp_path, project, *args))
        return started[-1]

    yield start
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_gracefully(piped, tmp_path: Path, signum: int) -> None:
    """Nothing new starts, in-flight items finish, finish() and persist_failed run, exit 130, no traceback."""
    run = piped(
        "shell_slow", "-p", "count=400", "-p", "delay=0.05", "-p", "concurrency=3", "-p", "fail_every=7",
        "-p", f"persisted={tmp_path / 'persisted.json'}",
    )
    wait_for(lambda: len(run.log.done()) >= 10, "10 items done")
    run.signal(signum)
    assert run.wait() == 130, run.output
    assert "Traceback" not in run.output
    assert "stopping" in run.output
    log = run.log
    assert log.lines()[-1] == "finish"
    started = sorted(log.started())
    failed = [n for n in started if n % 7 == 0]
    assert sorted(log.done() + failed) == started  # every item that started settled
    assert json.loads((tmp_path / "persisted.json").read_text()) == failed
    summary = run.summary()
    assert summary["status"] == "stopped"
    assert (summary["succeeded"], summary["failed"]) == (len(log.done()), len(failed))
    assert summary["unprocessed"] == 400 - len(started) > 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_resumes_cleanly(piped, run_batchcli, signum: int) -> None:
    """After a signal, ``batchcli resume`` processes exactly the rest: none lost, none done twice."""
    run = piped("shell_slow", "-p", "count=200", "-p", "delay=0.02", "-p", "concurrency=3")
    wait_for(lambda: len(run.log.done()) >= 10, "10 items done")
    run.signal(signum)
    assert run.wait() == 130, run.output
    resumed = run_batchcli("resume", str(newest_run(run.out)))
    assert resumed.exit_code == 0, resumed.output
    assert sorted(run.log.done()) == list(range(200))
    assert run.log.done_twice() == []


def test_a_second_signal_stops_at_once(piped) -> None:
    """A second signal cancels the in-flight items (left unprocessed) instead of waiting; finish() still runs."""
    run = piped("shell_slow", "-p", "count=20", "-p", "delay=600", "-p", "concurrency=3", "-p", "stop_timeout_s=600")
    wait_for(lambda: len(run.log.started()) == 3, "3 items in flight")
    run.signal(signal.SIGINT)
    wait_for(lambda: "stopping" in run.run_log(), "the first stop to be logged")
    run.signal(signal.SIGTERM)
    assert run.wait() == 130, run.output
    assert "Traceback" not in run.output
    assert "stopping at once" in run.run_log()
    assert run.log.done() == []
    assert run.log.lines()[-1] == "finish"
    summary = run.summary()
    assert (summary["status"], summary["succeeded"], summary["unprocessed"]) == ("stopped", 0, 20)


def test_a_second_signal_does_not_wait_for_sync_items_in_threads(piped) -> None:
    """A sync ``process`` blocked in its thread does not hold the exit after a second signal."""
    run = piped("shell_sync", "-p", "delay=600", "-p", "concurrency=3")
    wait_for(lambda: len(run.log.started()) == 3, "3 items in flight")
    run.signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in run.run_log(), "the first stop to be logged")
    run.signal(signal.SIGINT)
    assert run.wait() == 130, run.output
    assert "Traceback" not in run.output
    assert run.log.lines()[-1] == "finish"
    assert run.summary()["unprocessed"] == 20


def test_a_second_signal_interrupts_a_hanging_setup(piped) -> None:
    """Stopping at once during an async setup() that hangs cancels it; finish() runs and nothing is processed."""
    run = piped("shell_slow", "-p", "count=20", "-p", "setup_s=600")
    wait_for(lambda: run.log.lines() == ["setup"], "setup() to start")
    run.signal(signal.SIGINT)
    wait_for(lambda: "stopping" in run.run_log(), "the first stop to be logged")
    run.signal(signal.SIGINT)
    assert run.wait() == 130, run.output
    assert "Traceback" not in run.output
    assert run.log.lines() == ["setup", "finish"]


@pytest.mark.parametrize("blocks", [False, True], ids=["awaiting", "blocking"])
def test_the_stop_timeout_holds_while_setup_hangs(piped, blocks: bool) -> None:
    """One signal during a setup() that hangs (awaiting, or blocking the loop): the stop becomes a hard one after
    ``stop_timeout_s``, as the log line promised, instead of waiting for setup() (10 minutes here)."""
    run = piped("shell_slow", "-p", "count=20", "-p", "setup_s=600", "-p", f"setup_blocks={blocks}", "-p", "stop_timeout_s=0.5")
    wait_for(lambda: run.log.lines() == ["setup"], "setup() to start")
    run.signal(signal.SIGTERM)
    assert run.wait() == 130, run.output
    log = run.run_log()
    assert "SIGTERM: stopping. The job is still starting (setup()): waiting for it at most 0.5s" in log
    assert "Stop timeout (0.5s): setup() has not returned; abandoning it." in log
    assert "Traceback" not in run.output
    if blocks:  # the loop is held: the run leaves it, and says that finish() could not run
        assert "The job's code still runs past the stop timeout" in log and run.log.lines() == ["setup"]
    else:
        assert run.log.lines() == ["setup", "finish"]
    assert run.summary()["unprocessed"] == 20


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.parametrize("hook", ["setup", "finish"])
def test_worker_processes_hung_in_setup_or_finish_end_with_a_stop_that_times_out(piped, hook: str) -> None:
    """A stop whose timeout passes while setup() or finish() hangs in the worker processes: the run leaves, and
    its workers go with it. They outlived the run for good (orphans ignoring SIGTERM), since the exit that
    follows skips the atexit handler that would have killed them."""
    args = ["-p", "setup_s=600"] if hook == "setup" else ["-p", "finish_s=600"]
    run = piped("shell_slow", "-p", "count=4", "-p", "executor=process", "-p", "workers=2", "-p", "stop_timeout_s=0.5",
                "-p", "setup_blocks=true", *args)  # fmt: skip
    wait_for(lambda: run.log.lines().count(hook) == 2, f"{hook}() to start in both workers")
    workers = {pid for pid in _children(run.proc.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()}
    assert len(workers) == 2, workers
    run.signal(signal.SIGTERM)
    assert run.wait() == 130, run.output  # finish() cut short is no clean finish either
    assert "Traceback" not in run.output and "leaked semaphore" not in run.output, run.output
    wait_for(lambda: not any(map(_running, workers)), "the workers to end", timeout=10)


@pytest.mark.parametrize("executor", ["async", "process"])
def test_a_finish_cut_short_by_the_stop_timeout_is_a_stop_and_resume_runs_it_again(piped, run_batchcli, executor: str) -> None:
    """Every item settled, then finish() hangs and a stop times out: the run said "Finished", exit 0, although
    what finish() flushes was never written. It is a stop (exit 130, resumable), and resume runs finish(). Asked by
    ctl, the stop says so: it promised exit 130 and a resume when finish() returned in time and the run ended 0, and
    ctl pause and set claimed changes that reached no item; attach is refused (it paused the run and held its end)."""
    run = piped("shell_slow", "-p", "count=4", "-p", f"executor={executor}", "-p", "workers=2", "-p", "stop_timeout_s=0.5",
                "-p", "finish_s=600")  # fmt: skip
    wait_for(lambda: "finish" in run.log.lines(), "finish() to start")
    if executor == "async":
        run_dir = next(run.out.glob("*/control.sock")).parent
        attached = run_batchcli("attach", str(run_dir))  # it paused a run whose items had all settled, and held its end
        assert attached.exit_code != 0 and "there is nothing to attach to" in " ".join(attached.output.split()), attached.output
        for words in (["pause"], ["set", "concurrency=3"], ["stop"]):
            said = run_batchcli("ctl", str(run_dir), *words)
            text = " ".join(said.output.split())
            assert "Every item has settled: the run is finishing (its finish() runs) and ends as finished (exit 0)." in text, text
            if words == ["stop"]:
                assert said.exit_code == 0 and "only a finish() still running 0.5s from now (stop_timeout_s) is abandoned" in text, text
            else:
                assert said.exit_code == 1 and "There is nothing left to" in text, text
    else:
        run.signal(signal.SIGTERM)
    assert run.wait() == 130, run.output
    assert "finish() (or persist_failed) had not returned when the stop timed out" in run.output, run.output
    summary = run.summary()
    assert (summary["status"], summary["succeeded"], summary["unprocessed"]) == ("stopped", 4, 0)
    before = len(run.log.lines())
    resumed = run_batchcli("resume", str(newest_run(run.out)), "-p", "finish_s=0")
    assert resumed.exit_code == 0, resumed.output
    assert run.log.lines()[before:].count("finish") == (1 if executor == "async" else 2)  # once per worker
    assert run.log.done_twice() == []
    assert run.summary()["status"] == "finished"


def test_in_flight_items_are_cancelled_after_the_stop_timeout(piped) -> None:
    """Items still running ``stop_timeout_s`` after the stop are cancelled and left unprocessed."""
    run = piped("shell_slow", "-p", "count=20", "-p", "delay=600", "-p", "concurrency=3", "-p", "stop_timeout_s=0.2")
    wait_for(lambda: len(run.log.started()) == 3, "3 items in flight")
    run.signal(signal.SIGTERM)
    assert run.wait() == 130, run.output
    assert "Stop timeout (0.2s): cancelling 3 in-flight item(s)" in run.run_log()
    assert "Traceback" not in run.output
    assert run.log.done() == []
    assert run.summary()["unprocessed"] == 20


def test_a_double_signal_then_resume_loses_nothing(piped, run_batchcli) -> None:
    """After a stop at once, the journal still lets ``batchcli resume`` redo the cancelled items and the rest."""
    run = piped("shell_slow", "-p", "count=30", "-p", "delay=0.1", "-p", "concurrency=3", "-p", "stop_timeout_s=600")
    wait_for(lambda: len(run.log.done()) >= 3, "3 items done")
    run.signal(signal.SIGINT)
    wait_for(lambda: "stopping" in run.run_log(), "the first stop to be logged")
    run.signal(signal.SIGINT)
    assert run.wait() == 130, run.output
    resumed = run_batchcli("resume", str(newest_run(run.out)))
    assert resumed.exit_code == 0, resumed.output
    assert sorted(run.log.done()) == list(range(30))
    assert run.log.done_twice() == []


def test_a_signal_the_kernel_gives_to_another_thread_still_stops_the_run(tmp_path: Path, run_batchcli) -> None:
    """A SIGTERM delivered to a thread other than the main one (the kernel may pick any) still stops the run."""
    ledger = tmp_path / "ledger"
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(PROJECTS / "signal_elsewhere" / "job.py"), "-d", "out",
         "-p", f"ledger={ledger}", "-p", "concurrency=2"],
        cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for(lambda: ledger.exists() and len(ledger.read_text().splitlines()) >= 10, "10 processed items")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done = ledger.read_text().splitlines()
    assert proc.returncode == 130, output
    assert "SIGTERM: stopping" in output
    assert len(done) < 400, "the run went on to the end: the signal was not handled while it ran"
    assert run_batchcli("resume", newest_run(tmp_path / "out")).exit_code == 0
    assert sorted(map(int, ledger.read_text().splitlines())) == list(range(400))


@pytest.mark.parametrize("display", ["live", "plain"])
def test_only_the_main_thread_and_the_jobs_own_threads_can_be_given_a_stop_signal(
    tmp_path: Path, run_batchcli, display: str
) -> None:
    """batchcli's own threads block the stop signals, so the kernel gives a Ctrl-C to the main thread (or to a thread
    running the job's code) and a C-level wait there ends at once: on the recorder or the display's thread, a
    pause-shell cell in ``time.sleep(30)`` waited the 30 s. The job's threads and what they start do not block
    them: a program a Service starts with a blocked SIGTERM would ignore ``terminate()``."""
    report = tmp_path / "report.json"
    env = {"TTY_COMPATIBLE": "1"} if display == "live" else {}  # rich's live display, and its refresh thread
    done = run_batchcli("exec", PROJECTS / "signal_masks" / "job.py", "-d", "out", "-p", f"report={report}", **env)
    assert done.exit_code == 0, done.output
    seen = json.loads(report.read_text())
    threads = seen["threads"]
    assert seen["me"].startswith("batchcli-item-"), seen
    assert threads.pop("child terminated by") == ["SIGTERM"]
    jobs = {"MainThread", "batchcli-loop", "child", seen["me"]}
    jobs |= {name for name in threads if name.startswith(("batchcli-item-", "asyncio_"))}  # the job's code, its hooks
    assert {name: threads[name] for name in jobs & set(threads)} == dict.fromkeys(jobs & set(threads), []), seen
    ours = {name: stopped for name, stopped in threads.items() if name not in jobs}
    assert {"batchcli-signals", "batchcli-control", "batchcli-recorder"} <= set(ours), seen
    assert ("batchcli-failures" in ours) == (display == "live"), seen
    assert ours == dict.fromkeys(ours, ["SIGHUP", "SIGINT", "SIGTERM"]), seen


@pytest.mark.parametrize("kind", ["live", "plain", "json"])
def test_a_display_started_again_after_the_pause_shell_still_leaves_the_stop_signals_alone(kind: str) -> None:
    """The pause shell stops the live display and starts it again as it closes: rich's new refresh thread must
    block the stop signals as the first one did (it is started from the main thread, which does not)."""
    from rich.console import Console

    from batchcli.executors.signals import STOP_SIGNALS
    from batchcli.outcome import Tally
    from batchcli.run.display import make_display

    console = Console(file=io.StringIO(), force_terminal=kind == "live")
    display = make_display(Tally(), console, "job", 0.05, "json" if kind == "json" else "text", "run")
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # as the main thread of a run has them
    display.start()
    try:
        if kind == "live":  # as the pause shell does (``_hide_display``)
            display.stop()
            display.start()
        # its own threads (other tests' may come and go meanwhile): rich's refresh thread and the failures' ticker on
        # a terminal, the progress lines' thread otherwise
        live, ticker = getattr(display, "_live", None), getattr(display, "_ticker", None)
        started = [thread for thread in (getattr(live, "_refresh_thread", None), getattr(ticker, "_thread", None),
                                         getattr(display, "_thread", None)) if thread is not None]  # fmt: skip
        assert len(started) == (2 if kind == "live" else 1) and all(thread.is_alive() for thread in started), started
        masks = {}
        for thread in started:
            status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
            (blocked,) = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigBlk:")]
            masks[thread.name] = {sig.name for sig in STOP_SIGNALS if blocked & (1 << (sig - 1))}
        assert masks == dict.fromkeys(masks, {"SIGINT", "SIGTERM", "SIGHUP"}), masks
        assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & set(STOP_SIGNALS)  # the main thread's is as it was
    finally:
        display.stop()


# A Service that makes stopping hard: ``stop_hostile`` keeps a ledger (``done N``, ``fail N``, ``start N``).
NEVER_AWAITS = ("stop_hostile", "-p", "count=1000000", "-p", "spin_us=30")
"""A million items of 30 us each that never await: 30 s at the least, twice what ``Piped.wait`` allows."""


def ledger_grew(run: Piped, since: int = 0) -> bool:
    """The Service has written (and its buffer flushed) a few thousand more ledger lines."""
    return run.log.path.exists() and run.log.path.stat().st_size > since + 20_000


def ledger(run: Piped, event: str) -> list[bytes]:
    """The ledger's ``event N`` lines (read as bytes: a million of them must stay cheap to check)."""
    tag = event.encode() + b" "
    return [line for line in run.log.path.read_bytes().split(b"\n") if line.startswith(tag)]


def once_each(lines: list[bytes]) -> set[bytes]:
    """The lines as a set, after checking none repeats (an item that ran twice)."""
    seen = set(lines)
    assert len(seen) == len(lines), "an item ran twice"
    return seen


def test_a_service_that_never_awaits_stops_on_every_signal(piped, run_batchcli) -> None:
    """A ``process`` that never awaits cannot hold off SIGINT, SIGTERM or two SIGINTs: exit 130 each time, each item once."""
    run = piped(*NEVER_AWAITS)
    for session, signals in enumerate([(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)]):
        if session:  # the first session is the exec; the next ones resume it
            size = run.log.path.stat().st_size
            run.proc = subprocess.Popen(
                [sys.executable, "-m", "batchcli", "resume", str(newest_run(run.out))],
                cwd=run.out.parent, env=subprocess_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            )
        wait_for(lambda: ledger_grew(run, size if session else 0), "items to run")
        run.signal(signals[0])
        if len(signals) > 1:  # the run may have ended already: then the second one must not kill it
            wait_for(lambda: run.run_log().count("stopping") > session, "the stop to be logged")
            run.signal(signals[1])
        assert run.wait() == 130, run.output
        assert "Traceback" not in run.output
        summary = run.summary()
        assert (summary["status"], summary["failed"]) == ("stopped", 0)
        assert summary["succeeded"] == len(ledger(run, "done"))
        assert summary["unprocessed"] == 1_000_000 - summary["succeeded"] > 0
    resumed = run_batchcli("resume", str(newest_run(run.out)), "-p", "spin_us=0")
    assert resumed.exit_code == 0, resumed.output
    assert len(once_each(ledger(run, "done"))) == 1_000_000  # the source has no other items


def test_a_flood_of_failures_that_never_awaits_stops_on_a_signal(piped, run_batchcli) -> None:
    """Items that raise at once cannot hold off a SIGINT; each failed item ran once, and ``resume`` does the rest."""
    run = piped(*NEVER_AWAITS, "-p", "mode=raise", "-p", "max_retries=0", "-p", "breaker_window=0")
    wait_for(lambda: ledger_grew(run), "items to fail")
    run.signal(signal.SIGINT)
    assert run.wait() == 130, run.output
    failed = {line.split()[1] for line in once_each(ledger(run, "fail"))}
    summary = run.summary()
    assert (summary["status"], summary["succeeded"], summary["failed"]) == ("stopped", 0, len(failed))
    assert summary["unprocessed"] == 1_000_000 - len(failed) > 0
    resumed = run_batchcli("resume", str(newest_run(run.out)), "-p", "mode=ok", "-p", "spin_us=0")
    assert resumed.exit_code == 1, resumed.output  # the run has failures
    done = {line.split()[1] for line in once_each(ledger(run, "done"))}
    assert not done & failed
    assert len(done | failed) == 1_000_000


@pytest.mark.parametrize("second", ["signal", "stop_timeout_s"])
def test_a_service_that_swallows_cancellation_still_stops_at_once(piped, run_batchcli, second: str) -> None:
    """A ``process`` that catches every ``CancelledError`` cannot hold a second signal or the stop timeout: exit 130."""
    timeout = "600" if second == "signal" else "0.5"
    run = piped(
        "stop_hostile", "-p", "mode=swallow", "-p", "buffer=1", "-p", "count=30", "-p", "concurrency=3",
        "-p", f"stop_timeout_s={timeout}",
    )
    wait_for(lambda: len(run.log.started()) == 3, "3 items in flight")
    run.signal(signal.SIGINT)
    if second == "signal":
        wait_for(lambda: "stopping" in run.run_log(), "the first stop to be logged")
        run.signal(signal.SIGTERM)
    assert run.wait() == 130, run.output  # the items would hold it for ever
    assert "3 item(s) did not end within" in run.run_log()
    assert "Traceback" not in run.output
    assert run.log.lines()[-1] == "finish"
    summary = run.summary()
    assert (summary["status"], summary["succeeded"], summary["unprocessed"]) == ("stopped", 0, 30)
    if second == "signal":  # the items stay for resume (the same journal either way)
        resumed = run_batchcli("resume", str(newest_run(run.out)), "-p", "mode=ok")
        assert resumed.exit_code == 0, resumed.output
        assert sorted(run.log.done()) == list(range(30))


@pytest.mark.parametrize("executor", ["process", "dask", "ray"])
def test_a_second_signal_reaches_workers_whose_items_never_await_and_keeps_what_they_did(
    piped, executor: str, request: pytest.FixtureRequest
) -> None:
    """Worker lanes give their loop a turn, so a stop at once cancels a chunk of never-awaiting items mid-way, and the
    items the chunk finished are kept, every one. A Dask or Ray chunk was dropped whole, and a resume did them all
    again; and fifty lanes held the worker's loop 2.5 s, past the stop's grace, so even the process executor's was."""
    where = ["-p", f"ray_address={request.getfixturevalue('ray_head')}"] if executor == "ray" else []
    run = piped(
        *NEVER_AWAITS, "-p", f"executor={executor}", "-p", "workers=1", "-p", "chunk_size=1000000",
        "-p", "concurrency=50", "-p", "buffer=1", *where,
    )  # fmt: skip
    wait_for(lambda: ledger_grew(run), "items to run in the workers")  # the one chunk alone would take 30 s
    run.signal(signal.SIGINT)
    wait_for(lambda: "stopping" in run.run_log(), "the first stop to be logged")
    run.signal(signal.SIGINT)
    assert run.wait() == 130, run.output
    assert "stopping at once" in run.run_log()
    assert "Traceback" not in run.output, run.output
    summary = run.summary()
    assert (summary["status"], summary["failed"]) == ("stopped", 0)
    assert 0 < summary["succeeded"] and summary["unprocessed"] == 1_000_000 - summary["succeeded"] > 0
    assert len(ledger(run, "done")) == summary["succeeded"]  # nothing done in a worker is left for a resume to redo


def test_a_stop_while_items_only_wait_to_retry_ends_at_once(piped) -> None:
    """When every item only waits 100 s for its retry, a SIGTERM ends the run at once and leaves them unprocessed."""
    run = piped(
        "stop_hostile", "-p", "count=20", "-p", "mode=raise", "-p", "retryable=true", "-p", "buffer=1",
        "-p", "max_retries=3", "-p", "backoff_s=100", "-p", "backoff_max_s=100", "-p", "breaker_window=0",
        "-p", "stop_timeout_s=600",
    )
    wait_for(lambda: len(run.log.numbers("fail")) == 20, "every item to fail once")
    run.signal(signal.SIGTERM)
    assert run.wait() == 130, run.output  # within 15 s: long before a retry or the stop timeout
    assert sorted(run.log.numbers("fail")) == list(range(20))  # no retry ran
    summary = run.summary()
    assert (summary["status"], summary["failed"], summary["unprocessed"]) == ("stopped", 0, 20)


def test_a_stop_reaches_process_workers_that_only_wait_for_a_start_slot(piped, run_batchcli) -> None:
    """With executor=process, lanes asleep for a rate-limit slot hand their items back at a stop: exit 130 at once, resumable."""
    run = piped(
        "shell_slow", "-p", "count=12", "-p", "delay=0", "-p", "executor=process", "-p", "workers=1",
        "-p", "concurrency=2", "-p", "rate_limit=0.01", "-p", "stop_timeout_s=600",
    )
    wait_for(lambda: run.log.done() == [0], "the first item, the only one the rate lets start for 100 s")
    run.signal(signal.SIGTERM)
    assert run.wait() == 130, run.output  # within 15 s: long before the next slot or the stop timeout
    summary = run.summary()
    assert (summary["status"], summary["succeeded"], summary["failed"], summary["unprocessed"]) == ("stopped", 1, 0, 11)
    resumed = run_batchcli("resume", str(newest_run(run.out)), "-p", "rate_limit=1000")
    assert resumed.exit_code == 0, resumed.output
    assert sorted(run.log.done()) == list(range(12))
    assert run.log.done_twice() == []


def test_a_signal_handler_that_logs_during_a_write_to_the_log_file_loses_no_line(tmp_path: Path) -> None:
    """A second signal's log line, written while the first one's line is being written, still reaches the file.

    Buffered IO refuses a write from a signal handler that interrupted a write on the same thread ("reentrant
    call"); the stream here refuses it the same way, and the handler raises the signal inside the write.
    """
    import logging
    import os

    from rich.console import Console

    from batchcli.run.logs import RunFileHandler

    console = Console(file=io.StringIO())
    handler = RunFileHandler(tmp_path / "batchcli.log", console)
    real = handler.stream
    logger = logging.getLogger("batchcli.test_reentrant")
    logger.propagate = False
    logger.addHandler(handler)

    class Refusing:
        writing = False
        signalled = False

        def write(self, text: str) -> int:
            if self.writing:
                raise RuntimeError("reentrant call inside <_io.BufferedWriter>")
            self.writing = True
            try:
                if not self.signalled:
                    self.signalled = True
                    os.kill(os.getpid(), signal.SIGUSR1)  # Python runs the handler right here, mid-write
                return real.write(text)
            finally:
                self.writing = False

        def flush(self) -> None:
            real.flush()

    previous = signal.signal(signal.SIGUSR1, lambda *_: logger.warning("SIGTERM again: stopping at once"))
    try:
        handler.stream = Refusing()  # type: ignore[assignment]
        logger.warning("SIGINT: stopping")
        handler.stream = real
        handler.close()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        logger.removeHandler(handler)
    lines = (tmp_path / "batchcli.log").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["SIGINT: stopping", "SIGTERM again: stopping at once"]
    assert "Cannot write the log file" not in console.file.getvalue()  # type: ignore[attr-defined]


def test_a_signal_that_lands_while_the_main_thread_holds_a_lock_the_answer_needs_is_answered() -> None:
    """Python runs a handler on the main thread wherever that thread is, even inside ``Event.set`` or ``Event.wait``
    with the event's lock held. The run's handler then set an event itself, waited for that lock for good, and the
    run hung: its Ctrl-C opened no shell and, its items all done, it waited for that shell (CI saw it once). Here
    the run's answer to a Ctrl-C needs a lock the main thread holds when the signal lands: the answer must come,
    as soon as the main thread lets the lock go."""
    from batchcli.run.interrupts import RunSignals

    held = threading.Lock()
    """What the main thread holds when the signal lands: the lock of the run's wake-up event, say."""

    class Run:
        stop_requested = threading.Event()
        pause_pending = False
        signalled = None
        asked: list[bool] = []
        """One entry per pause request: whether it got the lock (False: it would have waited for good)."""

        def shell_can_open(self) -> bool:
            return True

        def request_pause(self) -> None:
            got = held.acquire(timeout=3)  # Event.set takes the event's lock just so
            if got:
                held.release()
            self.pause_pending = got
            self.asked.append(got)

    run = Run()
    restore = RunSignals(run).install()  # type: ignore[arg-type]
    try:
        with held:
            signal.raise_signal(signal.SIGINT)  # its handler runs here, on this thread, with the lock held
            for _ in range(1000):  # bytecodes for the handler to run on
                pass
        wait_for(lambda: run.asked, "the pause request", timeout=10)
    finally:
        restore()
    assert run.asked == [True]


def test_results_returned_before_the_loop_was_held_are_kept_by_a_stop_that_leaves_it(tmp_path: Path, run_batchcli) -> None:
    """Two items return a value, then an async process blocks the loop in a sync call past the stop timeout. The
    results waited for a loop timer that never ran: the display said 2 done, the journal kept none of them, and a
    resume did them again."""
    ledger = tmp_path / "ledger"
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(PROJECTS / "loop_held"), "-d", str(out), "--no-shell",
         "-p", f"ledger={ledger}", "-p", "returns=true", "-p", "block_s=60", "-p", "concurrency=1",
         "-p", "stop_timeout_s=0.5"],
        cwd=tmp_path, env=subprocess_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: ledger.exists() and len(ledger.read_text().split()) == 2, "items 0 and 1")
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    run_dir = newest_run(out)
    assert run_dir is not None
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["unprocessed"]) == (2, 3), summary
    exported = run_batchcli("results", str(run_dir))
    assert [json.loads(line)["result"] for line in exported.output.splitlines() if line.startswith("{")] == [
        {"item": 0}, {"item": 1}
    ], exported.output
    resumed = run_batchcli("resume", str(run_dir), "-p", "block_s=0")
    assert resumed.exit_code == 0, resumed.output
    assert sorted(int(n) for n in ledger.read_text().split()) == [0, 1, 2, 3, 4]  # none done twice

