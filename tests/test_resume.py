"""resume and retry with real processes: nothing is lost after SIGKILL or SIGINT, and failed inputs come back as they were."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from conftest import subprocess_env

from batchcli.rundir import read_run

PROJECTS = Path(__file__).resolve().parent / "projects"
COUNTING = PROJECTS / "journal_counting" / "counting.py"
KEYED = PROJECTS / "journal_keyed" / "keyed.py"
ORDERS = PROJECTS / "journal_retry" / "orders.py"


def start(tmp_path: Path, *args: Any) -> subprocess.Popen[bytes]:
    """``python -m batchcli ARGS`` in the background, no terminal, output to a file."""
    output = open(tmp_path / "first-session.txt", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "batchcli", *[str(a) for a in args]], stdout=output, stderr=output, env=subprocess_env()
    )


def wait_for(condition: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    """Poll until ``condition`` holds (the limit only stops a hung test; nothing is asserted about time)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def journaled(out: Path) -> int:
    """Items the journal under ``out`` has recorded as settled so far (0 before it exists)."""
    runs = list(out.glob("*/journal.sqlite")) if out.exists() else []
    if not runs:
        return 0
    try:
        info = read_run(runs[0].parent)
    except Exception:
        return 0
    return info.succeeded + info.failed


def processed(logs: Path) -> Counter[str]:
    """How many times the service processed each item, over every process."""
    return Counter(line for log in logs.glob("*.log") for line in log.read_text().split("\n") if line)


def assert_adds_up(summary: dict[str, Any]) -> None:
    assert summary["succeeded"] + summary["failed"] + summary["unprocessed"] == summary["total"], summary


def test_a_run_killed_with_sigkill_resumes_with_every_item_and_few_redone(tmp_path: Path, run_batchcli) -> None:
    """After kill -9 mid-run, resume processes every item; only items not yet journaled (in flight, last flush) are redone."""
    count, concurrency, rate = 300, 5, 100
    logs = tmp_path / "logs"
    logs.mkdir()
    proc = start(
        tmp_path,
        "exec",
        COUNTING,
        "-d",
        "out",
        "-p",
        f"count={count}",
        "-p",
        f"log_dir={logs}",
        "-p",
        "delay_s=0.02",
        "-p",
        f"concurrency={concurrency}",
        "-p",
        f"rate_limit={rate}",
    )
    wait_for(lambda: journaled(tmp_path / "out") >= 60, "60 journaled items")
    # Kill between two flushes: some items are processed but not yet journaled.
    settled = journaled(tmp_path / "out")
    wait_for(lambda: sum(processed(logs).values()) >= settled + 25, "25 more processed items")
    proc.kill()
    proc.wait()
    run_dir = next((tmp_path / "out").iterdir())
    before = processed(logs)
    crashed = read_run(run_dir)
    assert crashed.status == "crashed"
    assert 60 <= crashed.succeeded < count
    # At most what was in flight plus what settled since the last flush (0.5 s at `rate`), with a 2x margin.
    redo_bound = concurrency + rate
    assert 0 <= sum(before.values()) - crashed.succeeded <= redo_bound

    resumed = run_batchcli("resume", run_dir)
    assert resumed.exit_code == 0, resumed.output
    after = processed(logs)
    assert set(after) == {str(n) for n in range(count)}
    duplicates = sum(after.values()) - count
    assert duplicates == sum(before.values()) - crashed.succeeded
    assert duplicates <= redo_bound
    summary = resumed.summary
    assert (summary["status"], summary["succeeded"], summary["failed"], summary["total"]) == (
        "finished",
        count,
        0,
        count,
    )
    assert summary["sessions"] == 2
    assert_adds_up(summary)


def test_a_run_stopped_by_sigint_resumes_every_item_exactly_once(tmp_path: Path, run_batchcli) -> None:
    """SIGINT (no terminal) stops gracefully with everything journaled; resume then processes each remaining item once."""
    count = 200
    logs = tmp_path / "logs"
    logs.mkdir()
    proc = start(
        tmp_path,
        "exec",
        COUNTING,
        "-d",
        "out",
        "-p",
        f"count={count}",
        "-p",
        f"log_dir={logs}",
        "-p",
        "delay_s=0.01",
        "-p",
        "concurrency=4",
        "-p",
        "rate_limit=150",
        "-p",
        "fail_every=37",
    )
    wait_for(lambda: journaled(tmp_path / "out") >= 40, "40 journaled items")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    run_dir = next((tmp_path / "out").iterdir())
    stopped = json.loads((run_dir / "summary.json").read_text())
    assert stopped["status"] == "stopped" and stopped["unprocessed"] > 0
    assert_adds_up(stopped)
    assert sum(processed(logs).values()) == stopped["succeeded"] + stopped["failed"]

    resumed = run_batchcli("resume", run_dir)
    assert resumed.exit_code == 1, resumed.output  # multiples of 37 failed: the whole run has failures
    after = processed(logs)
    assert set(after) == {str(n) for n in range(count)}
    assert set(after.values()) == {1}
    failing = [n for n in range(count) if n % 37 == 0]
    summary = resumed.summary
    assert (summary["status"], summary["succeeded"], summary["failed"]) == (
        "finished",
        count - len(failing),
        len(failing),
    )
    assert_adds_up(summary)
    assert sorted(r["ordinal"] for r in resumed.failed) == failing


def test_a_crashed_run_resumes_in_process_and_a_finished_one_is_left_alone(cli, tmp_path: Path) -> None:
    """A run whose source broke resumes in the same directory with each item once; resuming it again does nothing."""
    logs = tmp_path / "logs"
    logs.mkdir()
    crashed = cli(
        "exec",
        COUNTING,
        "-d",
        "out",
        "-p",
        "count=60",
        "-p",
        f"log_dir={logs}",
        "-p",
        "crash_at=25",
        "-p",
        "fail_every=10",
    )
    assert crashed.exit_code == 3
    assert_adds_up(crashed.summary)
    resumed = cli("resume", crashed.run_dir, "-p", "crash_at=-1")
    assert resumed.exit_code == 1
    assert f"Run directory: {crashed.run_dir}" in " ".join(resumed.output.split())
    resumed.run_dir = crashed.run_dir  # the fixture only spots new run directories
    assert processed(logs) == Counter(str(n) for n in range(60))
    summary = resumed.summary
    assert (summary["succeeded"], summary["failed"], summary["unprocessed"], summary["sessions"]) == (54, 6, 0, 2)
    assert len(resumed.failed) == 6  # failed.jsonl covers both sessions

    again = cli("resume", crashed.run_dir)
    assert again.exit_code == 0
    assert "finished already (54 succeeded, 6 failed); nothing to resume" in again.output
    assert f"batchcli retry {crashed.run_dir}" in again.output
    assert read_run(crashed.run_dir).sessions == 2
    assert sum(processed(logs).values()) == 60


def test_a_keyed_source_resumes_by_key_when_its_order_changes(cli, tmp_path: Path) -> None:
    """A Source with item_key() is journaled by key, so a resume over a reshuffled source still does each item once."""
    logs = tmp_path / "logs"
    logs.mkdir()
    crashed = cli("exec", KEYED, "-d", "out", "-p", f"log_dir={logs}", "-p", "seed=1", "-p", "crash_after=20")
    assert crashed.exit_code == 3
    first = processed(logs)
    assert len(first) == 20
    resumed = cli("resume", crashed.run_dir, "-p", "seed=2", "-p", "crash_after=-1")
    assert resumed.exit_code == 1  # item-7 fails
    resumed.run_dir = crashed.run_dir  # the fixture only spots new run directories
    assert processed(logs) == Counter(f"item-{n}" for n in range(50))
    summary = resumed.summary
    assert (summary["succeeded"], summary["failed"], summary["unprocessed"]) == (49, 1, 0)


def test_retry_reprocesses_exactly_the_failed_inputs_as_their_own_types(tmp_path: Path, run_batchcli) -> None:
    """retry runs exactly the failed inputs, as the original dataclass, through the same job with -p overrides applied."""
    first_logs, retry_logs = tmp_path / "first", tmp_path / "retry"
    first_logs.mkdir()
    retry_logs.mkdir()
    first = run_batchcli("exec", ORDERS, "-d", "out", "-p", "count=20", "-p", f"log_dir={first_logs}")
    assert first.exit_code == 1
    failed_ids = [4, 8, 10, 12, 16, 20]
    assert sorted(r["input"]["id"] for r in first.failed) == failed_ids
    parent = first.run_dir

    retried = run_batchcli(
        "retry",
        parent,
        "-p",
        "strict=false",
        "-p",
        "item_timeout_s=5",
        "-p",
        f"log_dir={retry_logs}",
        ORDERS_PERSIST_DIR=str(tmp_path),
    )
    assert retried.exit_code == 0, retried.output
    assert retried.run_dir is not None and retried.run_dir != parent
    lines = sorted(processed(retry_logs), key=lambda line: int(line.split("id=")[1].split(",")[0]))
    assert lines == [f"orders.Order Order(id={n}, sku='SKU-{n % 3}') strict=False timeout=5.0" for n in failed_ids]
    summary = retried.summary
    assert (summary["succeeded"], summary["failed"], summary["total"]) == (6, 0, 6)
    assert summary["parent"] == str(parent.resolve())
    assert_adds_up(summary)
    info = read_run(retried.run_dir)
    assert info.parent == str(parent.resolve())
    assert info.params["strict"] == ["false"] and info.params["item_timeout_s"] == ["5"]
    assert read_run(parent).failed == 6  # the parent run is left as it was


def test_retry_keeps_failing_inputs_failed_and_the_users_source_still_hears_of_them(
    cli, tmp_path: Path, monkeypatch
) -> None:
    """A retry whose inputs fail again records them, and persist_failed is called on the user's own Source."""
    monkeypatch.setenv("ORDERS_PERSIST_DIR", str(tmp_path))
    logs = tmp_path / "logs"
    logs.mkdir()
    first = cli("exec", ORDERS, "-d", "out", "-p", "count=8", "-p", f"log_dir={logs}")
    assert first.exit_code == 1
    retried = cli("retry", first.run_dir)
    assert retried.exit_code == 1
    # A sync process runs in threads, so failures may settle in either order.
    inputs = sorted((r["input"] for r in retried.failed), key=lambda order: order["id"])
    assert inputs == [{"id": 4, "sku": "SKU-1"}, {"id": 8, "sku": "SKU-2"}]
    persisted = sorted(tmp_path.glob("persisted-*.txt"))
    assert persisted and sorted(persisted[0].read_text().splitlines()) == [
        "Order(id=4, sku='SKU-1')",
        "Order(id=8, sku='SKU-2')",
    ]
    assert_adds_up(retried.summary)
