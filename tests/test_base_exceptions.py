"""User code that raises a ``BaseException`` that is not an ``Exception`` (pytest's ``fail()``, gevent's ``Timeout``, a
library's own): an item's failure, or the Source's or a hook's fatal error, like any other exception.

Before, ``process()`` raising one ended its worker task with the item in flight for ever (the run hung), a Source
raising one ended the source and the run "finished" (exit 0) without its other items, which resume then refused to
do, and a hook raising one printed batchcli's own traceback from the loop thread."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

PROJECTS = Path(__file__).resolve().parent / "projects"
JOB = PROJECTS / "base_exceptions" / "job.py"


def exec_job(run_batchcli: Any, tmp_path: Path, *params: str) -> Any:
    """``exec`` of the job with ``-p`` for each ``name=value`` in ``params``; other words go as they are."""
    args = ["exec", JOB, "-d", tmp_path / "out", "--no-shell", "-p", f"ledger={tmp_path / 'ledger'}", "-p", "backoff_s=0"]
    for param in params:
        args += ["-p", param] if "=" in param else [param]
    return run_batchcli(*args, timeout=90)  # a hang fails the test here instead of holding the suite


def ledger(tmp_path: Path) -> list[int]:
    path = tmp_path / "ledger"
    return sorted(int(line) for line in path.read_text().split()) if path.exists() else []


@pytest.mark.parametrize(
    "how", [("where=process",), ("where=sync_process",), ("where=process", "executor=process", "workers=2")]
)
def test_process_raising_a_base_exception_fails_that_item_and_the_run_goes_on(run_batchcli: Any, tmp_path: Path, how: tuple[str, ...]) -> None:
    ran = exec_job(run_batchcli, tmp_path, *how)
    assert ran.exit_code == 1, ran.output
    assert "Finished: 9 succeeded, 1 failed of 10" in ran.output
    assert "batchcli/executors" not in ran.output and "Exception in" not in ran.output, ran.output
    assert ledger(tmp_path) == [n for n in range(10) if n != 3]
    (line,) = (ran.run_dir / "failed.jsonl").read_text().splitlines()
    failure = json.loads(line)
    assert (failure["ordinal"], failure["error_type"]) == (3, "job.Abandon")
    assert "item 3 gave up" in failure["error_message"] and "WorkerLost" not in line


@pytest.mark.parametrize("executor", ["async", "process"])
def test_a_source_raising_a_base_exception_crashes_resumably_and_resume_does_the_rest(run_batchcli: Any, tmp_path: Path, executor: str) -> None:
    ran = exec_job(run_batchcli, tmp_path, "where=source", f"executor={executor}")
    assert ran.exit_code == 3, ran.output
    flat = " ".join(ran.output.split())
    assert "The Source raised" in flat and "job.Abandon: the feed gave up before item 3" in flat
    assert "Crashed: 3 succeeded, 0 failed, 7 unprocessed of 10" in flat
    assert "batchcli/" not in ran.output and "Exception in" not in ran.output, ran.output
    resumed = run_batchcli("resume", ran.run_dir, "-p", "where=none", timeout=90)
    assert resumed.exit_code == 0, resumed.output
    assert ledger(tmp_path) == list(range(10))


@pytest.mark.parametrize("hook", ["setup", "finish"])
def test_a_hook_raising_a_base_exception_is_a_fatal_error_with_the_users_traceback(run_batchcli: Any, tmp_path: Path, hook: str) -> None:
    ran = exec_job(run_batchcli, tmp_path, f"where={hook}")
    assert ran.exit_code == 3, ran.output
    flat = " ".join(ran.output.split())
    assert f"job.Abandon: {hook} gave up" in flat
    assert 'base_exceptions/job.py", line' in (ran.run_dir / "batchcli.log").read_text()  # unwrapped: the user's frame
    assert "batchcli/" not in ran.output and "Exception in thread" not in ran.output, ran.output
    assert ("Crashed: 10 succeeded" if hook == "finish" else "Crashed: 0 succeeded") in flat
    assert ledger(tmp_path) == (list(range(10)) if hook == "finish" else [])


BROKEN = PROJECTS / "broken_errors" / "job.py"


@pytest.mark.parametrize("executor", ["async", "process"])
@pytest.mark.parametrize(
    ("how", "code", "failed"),
    [
        # A throttle whose Retry-After no float holds: it overflowed when read, and then read as none at all while
        # math.inf was clamped; now it is clamped to throttle_max_wait_s too (0.5 s here), then success.
        ("overflow", 0, None),
        ("response", 1, ("ApiError", "the API answered 500")),
        ("str", 1, ("Unprintable", "<str() of this Unprintable raised UnicodeDecodeError>")),
        # A KeyboardInterrupt out of __str__: it ended the async run (exit 130) and hung the process executor's.
        ("str_interrupt", 1, ("Interrupting", "<str() of this Interrupting raised KeyboardInterrupt>")),
    ],
)
def test_an_exception_that_breaks_when_read_is_still_that_items_failure(
    run_batchcli: Any, tmp_path: Path, executor: str, how: str, code: int, failed: tuple[str, str] | None
) -> None:
    """Reading the exception raised (its Retry-After overflowed a float, its `response` property raised, its
    __str__ raised): that ended the worker handling the item, which stayed in flight, and the run "finished" with
    exit 0 and the item unprocessed for good (a worker process died instead, and the item failed as WorkerLost)."""
    ran = run_batchcli(
        "exec", BROKEN, "-d", tmp_path / "out", "--no-shell", "-p", f"how={how}", "-p", f"executor={executor}",
        "-p", "max_retries=0", "-p", "backoff_s=0.01", "-p", f"ledger={tmp_path / 'ledger'}",
        "-p", "throttle_max_wait_s=0.5", timeout=90,
    )  # fmt: skip
    assert ran.exit_code == code, ran.output
    assert "Task exception was never retrieved" not in ran.output and "WorkerLost" not in ran.output, ran.output
    if how == "overflow":
        log = (ran.run_dir / "batchcli.log").read_text()
        assert "The API asked to wait for ever; waiting throttle_max_wait_s=0.5s instead." in log, log
    done = sorted(int(n) for n in (tmp_path / "ledger").read_text().split())
    assert done == [n for n in range(30) if failed is None or n != 5]
    failures = ran.run_dir / "failed.jsonl"
    lines = failures.read_text().splitlines() if failures.exists() else []
    if failed is None:
        assert lines == [] and "Finished: 30 succeeded, 0 failed of 30" in ran.output
    else:
        (record,) = map(json.loads, lines)
        assert (record["ordinal"], record["error_type"], record["error_message"]) == (5, f"job.{failed[0]}", failed[1])


@pytest.mark.parametrize("shard", ["", "1/3"], ids=["whole", "shard"])
@pytest.mark.parametrize("length", ["-5", str(10**20)])
def test_a_len_that_is_no_count_is_ignored_with_a_warning(run_batchcli: Any, tmp_path: Path, length: str, shard: str) -> None:
    """__len__ only sizes the display: a negative or oversized one made len() raise, and the run crashed with a
    traceback that named nothing of the user's (a shard's share still called len() until later)."""
    ran = exec_job(run_batchcli, tmp_path, f"length={length}", *(["--shard", shard] if shard else []))
    assert ran.exit_code == 0, ran.output
    flat = " ".join(ran.output.split())
    assert f"Numbers.__len__() returned {length if len(length) < 10 else ''}" in flat and "ignored" in flat, ran.output
    assert flat.count("ignored. The run goes on without a total") == 1, ran.output
    count = 3 if shard else 10
    assert f"Finished: {count} succeeded, 0 failed of {count}" in flat and "Traceback" not in ran.output
    assert ledger(tmp_path) == ([1, 4, 7] if shard else list(range(10)))


@pytest.mark.parametrize("executor", ["async", "process"])
def test_an_item_the_api_always_throttles_fails_after_a_bound_and_the_run_ends(run_batchcli: Any, tmp_path: Path, executor: str) -> None:
    """Throttles spend no attempt, so an item the API always refuses (a 503 for one record) kept the run going
    for ever, cooling down again and again; its 20th throttle in a row is now its final failure. (Its "Retry-After: 0"
    asked again and again with nothing served waits 0.1 s, doubling up to backoff_max_s.)"""
    ran = run_batchcli(
        "exec", BROKEN, "-d", tmp_path / "out", "--no-shell", "-p", "how=refused", "-p", f"executor={executor}",
        "-p", f"ledger={tmp_path / 'ledger'}", "-p", "breaker_window=0", "-p", "adaptive=false", "-p", "backoff_s=0.1",
        "-p", "backoff_max_s=0.2", timeout=90,
    )  # fmt: skip
    assert ran.exit_code == 1, ran.output
    assert "was throttled 20 times in a row" in " ".join(ran.output.split())
    assert sorted(int(n) for n in (tmp_path / "ledger").read_text().split()) == [n for n in range(30) if n != 5]
    (record,) = [json.loads(line) for line in (ran.run_dir / "failed.jsonl").read_text().splitlines()]
    assert (record["ordinal"], record["error_type"].rsplit(".")[-1]) == (5, "Throttled")


def test_an_item_always_throttled_without_retry_after_waits_at_most_backoff_max_s_each_time(run_batchcli: Any, tmp_path: Path) -> None:
    """Without a Retry-After the cool-down doubled up to throttle_max_wait_s (15 minutes): an item the API always
    refuses took hours to reach its 20th throttle, the rest of the run long done. It doubles up to backoff_max_s."""
    ran = run_batchcli(
        "exec", BROKEN, "-d", tmp_path / "out", "--no-shell", "-p", "how=refused_unsaid", "-p", "breaker_window=0",
        "-p", "adaptive=false", "-p", "backoff_s=0.1", "-p", "backoff_max_s=0.2", "-p", f"ledger={tmp_path / 'ledger'}", timeout=90,
    )  # fmt: skip
    assert ran.exit_code == 1, ran.output
    assert "was throttled 20 times in a row" in " ".join(ran.output.split())
    assert sorted(int(n) for n in (tmp_path / "ledger").read_text().split()) == [n for n in range(30) if n != 5]


@pytest.mark.parametrize("executor", ["async", "process"])
def test_a_repeat_refusal_is_logged_as_one_with_every_executor(run_batchcli: Any, tmp_path: Path, executor: str) -> None:
    """The log names an item's second refusal in a row a repeat with worker processes as with async: a probe saw
    process runs log it as "Throttled by the API" (a repeat count lost from the workers would also double the
    run's cool-down and cut its limits)."""
    ran = run_batchcli(
        "exec", BROKEN, "-d", tmp_path / "out", "--no-shell", "-p", "how=refused_unsaid", "-p", "count=1", "-p", "at=0",
        "-p", f"executor={executor}", "-p", "breaker_window=0", "-p", "backoff_s=0.1", "-p", "backoff_max_s=0.2", timeout=90,
    )  # fmt: skip
    assert ran.exit_code == 1, ran.output
    lines = re.findall(r"Throttled (?:by the API|again \(an item refused before\)): no new item starts for [\d.]+s\.",
                       (ran.run_dir / "batchcli.log").read_text())  # fmt: skip
    assert lines[:2] == [
        "Throttled by the API: no new item starts for 0.10s.",
        "Throttled again (an item refused before): no new item starts for 0.20s.",
    ], lines
    assert lines.count("Throttled by the API: no new item starts for 0.10s.") == 1, lines


def test_a_len_that_is_an_integer_but_no_int_counts(run_batchcli: Any, tmp_path: Path) -> None:
    """len() takes anything with __index__ (a numpy integer): so does the run, with its total."""
    ran = exec_job(run_batchcli, tmp_path, "length=0")
    assert ran.exit_code == 0 and "ignored" not in ran.output, ran.output
    assert json.loads((ran.run_dir / "summary.json").read_text())["total"] == 10


def test_a_job_that_changes_directory_is_not_taken_for_a_moved_run(tmp_path: Path) -> None:
    """The run directory is given relative to where exec started (-d out); setup() then changes directory. The
    check that the journal is still in place uses the absolute path taken before the job's code ran."""
    import subprocess
    import sys

    from conftest import subprocess_env

    (tmp_path / "elsewhere").mkdir()
    ran = subprocess.run(
        [sys.executable, "-m", "batchcli", "exec", str(JOB), "-d", "out", "--no-shell", "-p", "count=200",
         "-p", f"chdir={tmp_path / 'elsewhere'}", "-p", f"ledger={tmp_path / 'ledger'}"],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "moved" not in ran.stderr and "Finished: 200 succeeded, 0 failed of 200" in ran.stderr, ran.stderr
    assert ledger(tmp_path) == list(range(200))
