"""Headless runs: stderr in JSON lines only, and ctl steering a run whose items run in worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS, subprocess_env
from joblog import JobLog, wait_for

from batchcli.outcome import Failure, FailureBatch, short_repr
from batchcli.run.jsonlog import JsonFormatter

JOB = PROJECTS / "unattended" / "job.py"


def batchcli(*args: Any) -> subprocess.CompletedProcess[str]:
    """``python -m batchcli ARGS`` without a terminal, waited for."""
    return subprocess.run(
        [sys.executable, "-m", "batchcli", *map(str, args)], capture_output=True, text=True, timeout=90, env=subprocess_env()
    )


def test_json_logs_without_a_terminal_make_stderr_json_lines_only(tmp_path: Path) -> None:
    """With --log-format json and stderr not a terminal, every stderr line parses as JSON: progress events, failures,
    the closing event, a notice, and an error that ends the command before the run starts."""
    ran = batchcli(
        "exec", JOB, "-d", tmp_path / "out", "-p", "count=40", "-p", "delay_s=0.02", "-p", "concurrency=2",
        "-p", "fail_every=10", "-p", "max_retries=1", "-p", "backoff_s=0", "-p", f"ledger={tmp_path / 'ledger.txt'}",
        "--log-format", "json",
    )
    assert ran.returncode == 1, ran.stderr
    events = [json.loads(line) for line in ran.stderr.splitlines()]  # raises on any line that is not JSON
    progress = [e for e in events if e["event"] == "progress"]
    assert len(progress) >= 2 and progress[-1]["settled"] == 40 and progress[-1]["failed"] == 4
    assert [p["settled"] for p in progress] == sorted(p["settled"] for p in progress)
    assert sum(e["event"] == "item_failed" for e in events) == 4
    ended = events[-1]
    assert ended["event"] == "run_ended" and ended["exit_code"] == 1 and ended["succeeded"] == 36
    assert ended["run_id"] == Path(ended["run_dir"]).name

    again = batchcli("resume", ended["run_dir"], "--log-format", "json")
    notices = [json.loads(line) for line in again.stderr.splitlines()]
    assert again.returncode == 0 and notices and "nothing to resume" in notices[0]["message"]

    # An error before the run starts was the one plain line: an `error` event now, with the exit code.
    for args, said in (
        (["exec", JOB, "-d", tmp_path / "out", "-p", "count=abc"], "Param 'count' expects int, got 'abc'."),
        (["resume", tmp_path / "gone"], f"Run directory {str(tmp_path / 'gone')!r} does not exist."),
    ):
        refused = batchcli(*args, "--log-format", "json")
        errors = [json.loads(line) for line in refused.stderr.splitlines()]
        assert refused.returncode == 2 and len(errors) == 1, refused.stderr
        assert errors[0]["event"] == "error" and errors[0]["exit_code"] == 2 and said in errors[0]["message"], errors


@pytest.mark.parametrize(
    "message",
    ["plain", 'quotes " and \\ backslash', "two\nlines\tand a tab", "é ü 漢字 and an emoji 🙂", "\x00\x1f controls", ""],
)
def test_a_failure_json_line_is_the_text_json_dumps_makes(message: str) -> None:
    """The failure line is assembled by hand for speed: it must stay exactly what ``json.dumps`` writes, whatever the
    text, and its time what ``datetime`` writes to the millisecond (rounding included)."""
    formatter = JsonFormatter('run "7"')
    for failed_at in (1_764_662_400.0, 1_764_662_400.0005, 1_764_662_400.9999996, 1_764_662_401.123456):
        failure = Failure(12, {"name": message}, "pkg.Error", message, f"Traceback\n  ...\npkg.Error: {message}", 3, 1.0, failed_at)
        expected = {
            "time": datetime.fromtimestamp(failed_at).astimezone().isoformat(timespec="milliseconds"),
            "level": "ERROR", "event": "item_failed", "run_id": 'run "7"', "logger": "batchcli.failures",
            "message": message, "ordinal": 12, "item": short_repr(failure.item), "error_type": "pkg.Error",
            "attempt": 3, "traceback": failure.traceback,
        }  # fmt: skip
        assert formatter.failure(failure) == json.dumps(expected, ensure_ascii=False)
    batch = FailureBatch([failure, failure])
    assert formatter.format(batch) == JsonFormatter('run "7"').format(batch) == "\n".join([formatter.failure(failure)] * 2)


def test_ctl_steers_a_run_whose_items_run_in_worker_processes(tmp_path: Path) -> None:
    """With executor=process, ctl set concurrency changes how many items the workers run at once (up, and below the number of workers), and ctl stop then resume loses and repeats nothing."""
    ledger = tmp_path / "ledger.txt"
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(JOB), "-d", str(out), "-p", "count=300", "-p", "delay_s=0.05",
         "-p", "concurrency=2", "-p", "executor=process", "-p", "workers=2", "-p", f"ledger={ledger}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=(tmp_path / "run.err").open("w"), env=subprocess_env(),
    )
    log = JobLog(ledger)
    try:
        wait_for(lambda: any(out.glob("*/control.sock")) and len(log.done()) > 5, "the workers under way", timeout=60)
        run_dir = next(out.glob("*/control.sock")).parent
        assert log.in_flight_peak(0) == 2

        assert "Concurrency is now 5." in batchcli("ctl", run_dir, "set", "concurrency=5").stdout
        wait_for(lambda: log.in_flight_peak(0) >= 5, "5 items in flight at once in the workers")

        assert batchcli("ctl", run_dir, "set", "concurrency=1").returncode == 0
        time.sleep(0.5)  # chunks sent at 5 finish
        mark = len(log.lines())
        wait_for(lambda: len(log.lines()) > mark + 16, "items processed at concurrency 1")
        assert log.in_flight_peak(mark) == 1

        stopped = batchcli("ctl", run_dir, "stop")
        assert "Stopping" in stopped.stdout, stopped.stderr
        assert run.wait(timeout=60) == 130
    finally:
        if run.poll() is None:
            run.kill()
    assert len(set(log.done())) < 300
    resumed = batchcli("resume", run_dir, "-p", "concurrency=20", "-p", "delay_s=0")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(set(log.done())) == list(range(300))
    assert log.done_twice() == []


def test_ctl_stop_once_the_source_is_done_says_the_run_will_finish(tmp_path: Path) -> None:
    """The source done, items in flight: ctl stop promised exit 130 and a resume, and the run ended finished, exit 0,
    with nothing left to resume. It says now that the run finishes once they settle."""
    ledger = tmp_path / "ledger.txt"
    run = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(JOB), "-d", str(tmp_path / "out"), "-p", "count=3",
         "-p", "delay_s=3", "-p", "concurrency=5", "-p", f"ledger={ledger}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
    )  # fmt: skip
    log = JobLog(ledger)
    try:
        wait_for(lambda: any((tmp_path / "out").glob("*/control.sock")) and len(log.started()) == 3, "3 items started")
        run_dir = next((tmp_path / "out").glob("*/control.sock")).parent
        stopped = batchcli("ctl", run_dir, "stop")
        said = " ".join(stopped.stdout.split())
        assert stopped.returncode == 0 and "nothing is left to start (the source is done)" in said, said
        assert "Then the run ends as finished (exit 0, or 1 if items failed)" in said, said
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            run.kill()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


def test_ctl_resume_pause_set_and_retry_on_a_stopping_run_are_refused_and_a_second_ctl_stop_stops_at_once(tmp_path: Path) -> None:
    """ctl resume (and ctl pause) while the run waited for its in-flight items after a stop answered "Resumed." (exit 0), and the run
    went on stopping: it says the run is stopping and how to continue it, exit 1. A second ctl stop gave the first
    one's answer and went on waiting for the item in flight; it stops at once, as a second signal does, and resume
    does the abandoned item again."""
    ledger = tmp_path / "ledger.txt"
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(JOB), "-d", str(out), "-p", "count=20", "-p", "delay_s=30",
         "-p", "concurrency=1", "-p", "stop_timeout_s=120", "-p", f"ledger={ledger}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=(tmp_path / "run.err").open("w"), env=subprocess_env(),
    )  # fmt: skip
    log = JobLog(ledger)
    try:
        wait_for(lambda: any(out.glob("*/control.sock")) and log.started(), "the first item under way", timeout=60)
        run_dir = next(out.glob("*/control.sock")).parent
        assert "A second ctl stop stops at once." in " ".join(batchcli("ctl", run_dir, "stop").stdout.split())
        resumed = batchcli("ctl", run_dir, "resume")
        assert resumed.returncode == 1, resumed.stdout
        said = " ".join(resumed.stderr.split())
        assert "The run is stopping, as asked: it cannot resume now" in said and f"batchcli resume {run_dir}" in said
        paused = batchcli("ctl", run_dir, "pause")  # it answered "Paused" while the stop went on
        said = " ".join(paused.stderr.split())
        assert paused.returncode == 1 and "The run is stopping, as asked: no new item starts already" in said, said
        for words in (["set", "concurrency=2"], ["retry-failed"]):  # a change no item would see; retries it dropped
            refused = batchcli("ctl", run_dir, *words)
            said = " ".join(refused.stderr.split())
            assert refused.returncode == 1 and "The run is stopping, as asked: nothing new starts in it" in said, said
        again = batchcli("ctl", run_dir, "stop")
        said = " ".join(again.stdout.split())
        assert again.returncode == 0 and "Stopping at once, as a second Ctrl-C does: 1 item(s) in flight are abandoned" in said, said
        assert run.wait(timeout=60) == 130  # not the 30 s the item in flight takes
    finally:
        if run.poll() is None:
            run.kill()
    assert log.done() == [] and "ctl stop again: stopping at once" in (run_dir / "batchcli.log").read_text()
    finished = batchcli("resume", run_dir, "-p", "delay_s=0")
    assert finished.returncode == 0, finished.stderr
    assert sorted(log.done()) == list(range(20)) and log.done_twice() == []
