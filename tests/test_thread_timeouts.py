"""item_timeout_s with a sync ``process``: only attempts that ran time out, stuck threads are replaced, the process exits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import PROJECTS
from joblog import JobLog

JOB = PROJECTS / "blocking_threads"
BLOCKED = [0, 10, 20, 30]


@pytest.mark.parametrize("executor", ["async", "process"])
def test_stuck_items_time_out_alone_and_the_process_exits_after_the_last_item(
    run_batchcli, cli, tmp_path: Path, executor: str
) -> None:
    """Items 0,10,20,30 of 40 block for 1000 s: 36 succeed, 4 fail after two attempts each, and the process exits without waiting for their threads."""
    log = JobLog(tmp_path / "job.log")
    outcome = run_batchcli(
        "exec", JOB, "-d", "out", "-p", f"log_file={log.path}", "-p", "block_every=10", "-p", "concurrency=4",
        "-p", "item_timeout_s=0.5", "-p", "max_retries=1", "-p", "backoff_s=0", "-p", f"executor={executor}",
        "-p", "workers=2",
        timeout=60,  # far below the 1000 s the stuck calls would take: the exit does not wait for them
    )
    assert outcome.exit_code == 1, outcome.output
    summary = outcome.summary
    assert (summary["succeeded"], summary["failed"], summary["status"]) == (36, 4, "finished")
    assert [f["attempts"] for f in outcome.failed] == [2] * 4
    assert {f["error_type"] for f in outcome.failed} == {"TimeoutError"}
    assert sorted(int(f["ordinal"]) for f in outcome.failed) == BLOCKED
    started = Counter(log.started())
    # Every failure is an item that ran out its time, twice (max_retries=1); no other item was ever refused.
    assert {n: started[n] for n in BLOCKED} == {n: 2 for n in BLOCKED}
    assert sorted(set(log.done())) == [n for n in range(40) if n not in BLOCKED]
    shown = cli("show", outcome.run_dir)
    assert "36 succeeded, 4 failed, 0 unprocessed" in shown.output, shown.output
    assert "Failures: 4, by error" in shown.output
    # Each worker process counts its own abandoned threads; the driver's log gets their lines.
    assert (outcome.run_dir / "batchcli.log").read_text().count("Threads abandoned so far") == 8


def test_when_every_item_blocks_each_one_fails_only_after_it_started(cli, tmp_path: Path) -> None:
    """block_every=1: all 20 items fail as timed out, and the ledger shows each of them started (the pool never shrank)."""
    log = JobLog(tmp_path / "job.log")
    outcome = cli(
        "exec", JOB, "-d", "out", "-p", f"log_file={log.path}", "-p", "count=20", "-p", "block_every=1", "-p", "block_s=2",
        "-p", "concurrency=4", "-p", "item_timeout_s=0.3", "-p", "max_retries=0",
    )
    assert outcome.exit_code == 1, outcome.output
    assert (outcome.summary["succeeded"], outcome.summary["failed"]) == (0, 20)
    assert sorted(log.started()) == list(range(20))
    assert sorted(int(f["ordinal"]) for f in outcome.failed) == list(range(20))
    assert all("item_timeout_s=0.3s" in f["error_message"] for f in outcome.failed)
    logged = (outcome.run_dir / "batchcli.log").read_text()
    assert "Threads abandoned so far: 20" in logged
    # Each timeout's traceback shows where the user's call was stuck, not the thread's machinery.
    assert "in process\n    time.sleep(self.block_s" in logged and "_bootstrap_inner" not in logged


def test_a_process_worker_stuck_past_the_timeout_is_killed_and_replaced(cli, tmp_path: Path) -> None:
    """An async process that blocks its worker's loop past item_timeout_s: the worker is killed and replaced, and only the stuck item fails."""
    log = JobLog(tmp_path / "job.log")
    outcome = cli(
        "exec", PROJECTS / "stuck_worker", "-d", "out", "-p", f"log_file={log.path}", "-p", "count=8", "-p", "stuck=0",
        "-p", "executor=process", "-p", "workers=2", "-p", "concurrency=2", "-p", "chunk_size=1",
        "-p", "item_timeout_s=0.2", "-p", "max_retries=0",
    )
    assert outcome.exit_code == 1, (outcome.exit_code, outcome.output)
    assert (outcome.summary["succeeded"], outcome.summary["failed"]) == (7, 1)
    assert [(f["ordinal"], f["error_type"].rsplit(".")[-1]) for f in outcome.failed] == [(0, "WorkerLost")]
    assert "was stuck" in outcome.failed[0]["error_message"]
    # The chunk queued behind it on that worker was never started: sent again, not counted as an attempt.
    assert sorted(log.done()) == list(range(1, 8))
    assert log.started().count(0) == 1
