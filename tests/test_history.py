"""runs and show: what a person sees of past runs, finished, crashed, running and retried."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env
from test_resume import processed, wait_for

from batchcli.journal.rundir import query, read_run

PROJECTS = Path(__file__).resolve().parent / "projects"
COUNTING = PROJECTS / "journal_counting" / "counting.py"
ORDERS = PROJECTS / "journal_retry" / "orders.py"


def flat(text: str) -> str:
    """Output with runs of whitespace collapsed, so column padding does not matter."""
    return re.sub(r"\s+", " ", text)


@pytest.fixture
def three_runs(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A finished run with failures, a run killed with SIGKILL, and a retry of the first, in that order."""
    monkeypatch.setenv("COLUMNS", "200")
    logs = tmp_path / "logs"
    logs.mkdir()
    finished = cli("exec", ORDERS, "-d", "out", "-p", "count=20", "-p", f"log_dir={logs}")
    assert finished.exit_code == 1

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchcli",
            "exec",
            str(COUNTING),
            "-d",
            "out",
            "-p",
            "count=400",
            "-p",
            f"log_dir={logs}",
            "-p",
            "delay_s=0.01",
            "-p",
            "rate_limit=100",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=subprocess_env(),
    )
    wait_for(lambda: len(list((tmp_path / "out").glob("*_counting"))) == 1, "the run directory")
    killed = next((tmp_path / "out").glob("*_counting"))
    wait_for(lambda: (killed / "journal.sqlite").exists() and read_run(killed).succeeded >= 20, "20 journaled items")
    running = cli("runs", "-d", "out")
    assert re.search(r"counting Configuration running \d+ / 0 / 400", flat(running.output)), running.output
    busy = cli("resume", killed)
    assert busy.exit_code == 2
    assert f"is still running in another process (pid {proc.pid})" in busy.output
    proc.kill()
    proc.wait()

    retried = cli("retry", finished.run_dir, "-p", "strict=false")
    assert retried.exit_code == 0
    return {"finished": finished.run_dir, "crashed": killed, "retried": retried.run_dir}


def test_runs_lists_finished_crashed_and_retried_runs_newest_first(
    cli, three_runs: dict[str, Path], tmp_path: Path
) -> None:
    """runs shows one row per run, newest first: started, job, configuration, status, counts, duration, rate, directory."""
    result = cli("runs", "-d", "out")
    assert result.exit_code == 0
    text = flat(result.output)
    assert "started job configuration status ok / failed / total duration rate run" in text
    crashed = read_run(three_runs["crashed"])
    assert re.search(
        r"orders \(retry\) Configuration finished 6 / 0 / 6 0:00:\d\d [\d,.]+/s " + three_runs["retried"].name, text
    )
    assert re.search(
        rf"counting Configuration crashed {crashed.succeeded} / 0 / 400 0:00:\d\d [\d,.]+/s "
        + three_runs["crashed"].name,
        text,
    )
    assert re.search(
        r"orders Configuration finished 14 / 6 / 20 0:00:\d\d [\d,.]+/s " + three_runs["finished"].name, text
    )
    order = [(text + " ").index(three_runs[k].name + " ") for k in ("retried", "crashed", "finished")]
    assert order == sorted(order)
    # Nothing disappears: every item the killed run journaled was really processed, and the counts add up.
    assert crashed.succeeded <= sum(processed(tmp_path / "logs").values()) - 20 - 6
    assert crashed.succeeded + crashed.failed + crashed.unprocessed == crashed.total


def test_runs_fits_a_narrow_terminal(cli, three_runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """On 80 columns runs keeps the run directory (which names start and job), the status and the counts."""
    monkeypatch.setenv("COLUMNS", "80")
    text = cli("runs", "-d", "out").output
    assert all(len(line) <= 80 for line in text.splitlines())
    assert f"{three_runs['retried'].name} (retry)" in text
    assert re.search(rf"{three_runs['finished'].name} +finished +14 / 6 / 20", text)


def test_show_groups_failures_and_draws_throughput(cli, three_runs: dict[str, Path]) -> None:
    """show of a finished run gives its summary, failures grouped by type and message with examples, and a chart."""
    result = cli("show", three_runs["finished"])
    assert result.exit_code == 0
    text = flat(result.output)
    assert "status finished" in text
    assert "items 14 succeeded, 6 failed, 0 unprocessed, of 20" in text
    assert "params count=20 log_dir=" in text
    assert "Failures: 6, by error (2 kinds)" in text
    assert (
        '5 ValueError: out of stock #3 {"id": 4, "sku": "SKU-1"} #7 {"id": 8, "sku": "SKU-2"} #11 {"id": 12, "sku": "SKU-0"} … and 2 more'
        in text
    )
    assert """1 KeyError: 'warehouse' #9 {"id": 10, "sku": "SKU-1"}""" in text
    chart = [line for line in result.output.splitlines() if line.startswith(("ok ", "failed "))]
    assert len(chart) == 2 and all(re.search("[▁▂▃▄▅▆▇█]", line) and "peak" in line for line in chart)
    assert "Throughput over" in text


def test_show_tells_a_crashed_run_and_a_retry_apart(cli, three_runs: dict[str, Path]) -> None:
    """show says a killed run crashed (its process is gone) and names the run a retry came from."""
    crashed = read_run(three_runs["crashed"])
    text = flat(cli("show", three_runs["crashed"]).output)
    assert f"status crashed (process {crashed.pid} ended without closing the run" in text
    assert f"items {crashed.succeeded} succeeded, 0 failed, {400 - crashed.succeeded} unprocessed, of 400" in text
    assert "No failures." in text

    retried = flat(cli("show", three_runs["retried"]).output)
    assert f"retry of {three_runs['finished'].resolve()}" in retried
    assert "items 6 succeeded, 0 failed, 0 unprocessed, of 6" in retried
    assert "params count=20 log_dir=" in retried and "strict=false" in retried


def test_runs_without_runs_or_output_directory(cli, tmp_path: Path) -> None:
    """runs in an empty output directory says there are none; a missing one is an error naming -d."""
    (tmp_path / "empty").mkdir()
    empty = cli("runs", "-d", "empty")
    assert empty.exit_code == 0 and "No runs in 'empty'." in empty.output
    missing = cli("runs", "-d", "nowhere")
    assert missing.exit_code == 2
    assert "Output directory 'nowhere' does not exist. Give the -d the runs were started with" in missing.output


def test_show_groups_messages_that_differ_only_in_numbers(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Failures whose messages differ only in ids form one group, with a count and example inputs."""
    monkeypatch.setenv("COLUMNS", "200")
    run = cli("exec", PROJECTS / "show_groups" / "lookups.py", "-d", "out")
    assert run.exit_code == 1
    shown = flat(cli("show", str(run.run_dir)).output)
    assert "Failures: 5, by error (2 kinds)" in shown
    assert "4 ValueError: user N has a malformed record of N kB" in shown
    assert "1 KeyError: 'no such region'" in shown
    assert "#2 3 #5 6 #8 9" in shown  # the first examples: ordinal, then the input


def counting_shapes(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """Count the message shapes worked out from now on: each is one failure's message read and shaped once."""
    import batchcli.journal.history
    import batchcli.journal.rundir

    calls: list[None] = []
    real = batchcli.journal.rundir.message_shape

    def shape(message: str | None) -> str:
        calls.append(None)
        return real(message)

    monkeypatch.setattr(batchcli.journal.rundir, "message_shape", shape)
    monkeypatch.setattr(batchcli.journal.history, "message_shape", shape, raising=False)
    return calls


def test_show_reads_the_failures_twice_whatever_their_kinds(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """show found each kind's examples with a query of its own, each shaping every message again: 500,000 failures
    whose messages all differed took 8.9 s (12 reads of them). A group's show did it for every kind of each shard.
    The examples are still each kind's first inputs, though the journal holds them in the reverse order."""
    monkeypatch.setenv("COLUMNS", "200")
    kinds = PROJECTS / "show_groups" / "kinds.py"
    run = cli("exec", kinds, "-d", "out", "-p", "concurrency=100", "-p", "max_retries=0", "-p", "breaker_window=0")
    assert run.exit_code == 1 and run.summary["failed"] == 78, run.output
    rowids = query(run.run_dir, "SELECT ordinal FROM failures ORDER BY rowid")
    assert rowids[0] > rowids[-1], "the test needs failures journaled out of ordinal order"

    calls = counting_shapes(monkeypatch)
    shown = flat(cli("show", run.run_dir).output)
    assert "Failures: 78, by error (12 kinds)" in shown, shown
    assert "12 ValueError: kind l went wrong #66 66 #67 67 #68 68 … and 9 more" in shown, shown
    assert "3 ValueError: kind c went wrong #3 3 #4 4 #5 5" in shown, shown
    assert "… and 2 more kinds of error" in shown and "kind b went" not in shown, shown
    assert len(calls) <= 2 * 78 + 12, f"{len(calls)} messages shaped for 78 failures"  # + SQLite's once per group

    for shard in ("0/2", "1/2"):
        cli("exec", kinds, "-d", "out", "--shard", shard, "--group", "both", "-p", "concurrency=100",
            "-p", "max_retries=0", "-p", "breaker_window=0")  # fmt: skip
    calls.clear()
    group = flat(cli("show", Path("out") / "both").output)
    assert "Failures: 78 across the shards, by error (12 kinds)" in group, group
    assert "12 ValueError: kind l went wrong shard 0 #33 66 shard 0 #34 68 shard 0 #35 70 … and 9 more" in group, group
    assert "4 ValueError: kind d went wrong shard 0 #3 6 shard 0 #4 8 shard 1 #3 7 … and 1 more" in group, group
    assert "3 ValueError: kind c went wrong shard 0 #2 4 shard 1 #1 3 shard 1 #2 5" in group, group
    assert len(calls) <= 3 * 78, f"{len(calls)} messages shaped for 78 failures in two shards"
