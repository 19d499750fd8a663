"""resume and retry with real processes: nothing is lost after SIGKILL or SIGINT, and failed inputs come back as they were."""

from __future__ import annotations

import errno
import json
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import subprocess_env

from batchcli.journal.rundir import read_run

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
    assert "were not used" not in again.output
    unused = cli("resume", crashed.run_dir, "-p", "crash_at=abc")  # not cast, nothing runs: but not taken silently
    said = " ".join(unused.output.split())
    assert unused.exit_code == 0 and "nothing to resume. The -p values given (crash_at) were not used." in said, said
    assert f"batchcli retry {crashed.run_dir}" in again.output
    assert read_run(crashed.run_dir).sessions == 2
    assert sum(processed(logs).values()) == 60


def test_a_journal_another_process_holds_locked_is_named_as_such_not_as_a_full_disk(
    cli, run_batchcli, tmp_path: Path, monkeypatch
) -> None:
    """A resume that met SQLITE_BUSY (a sqlite3 shell holding the journal) said "Free some space on that disk"; it
    names the locked journal and says to close the program holding it, and the run resumes once it is closed.
    (The wait for the lock is cut from 10 s to 1 s here: the same path, ten times sooner.)"""
    crashed = cli("exec", COUNTING, "-d", "out", "-p", "count=30", "-p", f"log_dir={tmp_path}", "-p", "crash_at=10")
    assert crashed.exit_code == 3
    holder = sqlite3.connect(crashed.run_dir / "journal.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr("batchcli.journal.rundir.BUSY_TIMEOUT_S", 1.0)
    try:
        locked = cli("resume", crashed.run_dir, "--no-shell", "-p", "crash_at=-1")
    finally:
        holder.close()
    said = " ".join(locked.output.split())
    assert locked.exit_code == 130 and "Traceback" not in said, said
    assert f"Another process holds the journal '{crashed.run_dir / 'journal.sqlite'}' locked" in said, said
    assert "Close the program that has it open" in said and f"batchcli resume {crashed.run_dir}" in said, said
    assert "free" not in said.lower(), said
    resumed = run_batchcli("resume", crashed.run_dir, "--no-shell", "-p", "crash_at=-1")
    assert resumed.exit_code == 0, resumed.output


def test_a_keyed_source_resumes_by_key_when_its_order_changes(cli, tmp_path: Path, keys_kept: str) -> None:
    """A Source with item_key() is journaled by key, so a resume over a reshuffled source still does each item once;
    the same with the settled keys looked up on disk (as a resume does past KEYS_HELD_MAX of them)."""
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
    on_disk = "the 20 keys settled earlier are looked up on disk" in (crashed.run_dir / "batchcli.log").read_text()
    assert on_disk == (keys_kept == "disk")


def test_a_resume_over_a_source_that_lost_settled_items_counts_them_and_never_goes_negative(tmp_path: Path, cli) -> None:
    """A keyed source that shrank between sessions (a file of ids, edited): the run ended "1080 succeeded ... -980
    unprocessed of 100", with the bar at 1080% and a negative ETA. The items the source no longer holds count in
    the total once it runs out, so the counts add up."""
    logs = tmp_path / "logs"
    logs.mkdir()
    crashed = cli("exec", KEYED, "-d", "out", "-p", f"log_dir={logs}", "-p", "seed=1", "-p", "crash_after=30")
    assert crashed.exit_code == 3
    settled = set(processed(logs))
    assert len(settled) == 30
    resumed = cli("resume", crashed.run_dir, "-p", "count=20", "-p", "crash_after=-1", "-p", "seed=3")
    resumed.run_dir = crashed.run_dir
    assert resumed.exit_code == 1, resumed.output  # item-7 fails, in either session
    now = {f"item-{n}" for n in range(20)}
    assert set(processed(logs)) == settled | now and processed(logs).most_common(1)[0][1] == 1
    summary = resumed.summary
    total = len(settled | now)
    assert (summary["succeeded"] + summary["failed"], summary["unprocessed"], summary["total"]) == (total, 0, total)
    flat = " ".join(resumed.output.split())
    assert f"{total}/{total} (100%)" in flat and f"failed of {total}." in flat, resumed.output
    assert "failed, 0 unprocessed" in " ".join(cli("show", crashed.run_dir).output.split())


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


# A full disk, and failed.jsonl after crashes (issue 10, defects 5 and 6). The journal_counting Service
# appends each processed item to a ledger outside the run directory's file system, so lost and
# duplicated items are counted from outside.

CONCURRENCY, RATE = 4, 100
REDO_BOUND = CONCURRENCY + RATE  # in flight, plus what settled after the last commit (0.5 s at RATE), 2x margin


def start_counting(
    tmp_path: Path, out: Path, logs: Path, count: int, name: str, *extra: str, **popen: Any
) -> subprocess.Popen[bytes]:
    """``exec`` the counting job (every 7th item fails) into ``out`` in the background, output to ``name``."""
    output = open(tmp_path / name, "wb")
    args = ["exec", COUNTING, "-d", out, "-p", f"count={count}", "-p", f"log_dir={logs}", "-p", "delay_s=0.02"]
    args += ["-p", f"concurrency={CONCURRENCY}", "-p", f"rate_limit={RATE}", "-p", "fail_every=7", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "batchcli", *[str(a) for a in args]],
        stdout=output,
        stderr=output,
        env=subprocess_env(),
        **popen,
    )


def resume_in_background(tmp_path: Path, run_dir: Path, name: str) -> subprocess.Popen[bytes]:
    """``resume RUN_DIR`` in the background, output to ``name``."""
    output = open(tmp_path / name, "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "batchcli", "resume", str(run_dir)], stdout=output, stderr=output, env=subprocess_env()
    )


def assert_failed_jsonl_exact(run_dir: Path, count: int) -> None:
    """failed.jsonl holds one complete object per failed item (every 7th), no more, no less."""
    lines = (run_dir / "failed.jsonl").read_text().splitlines()
    ordinals = [json.loads(line)["ordinal"] for line in lines]  # a torn line would not parse
    assert sorted(ordinals) == [n for n in range(count) if n % 7 == 0]


def assert_ledger(logs: Path, count: int, redo_bound: int) -> int:
    """Every item was processed (0 lost) and at most ``redo_bound`` twice; returns the duplicates."""
    after = processed(logs)
    assert set(after) == {str(n) for n in range(count)}, "items were lost"
    duplicates = sum(after.values()) - count
    assert 0 <= duplicates <= redo_bound, duplicates
    return duplicates


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for the test and gone after it; skipped where mounting is not allowed."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the RLIMIT_FSIZE trial still runs")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fill the file system of ``disk`` to the last byte with one file, and return it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        chunk = b"\0" * 65536
        while chunk:
            try:
                out.write(chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                chunk = chunk[: len(chunk) // 2]
    return filler


def assert_one_clear_message(output: str, run_dir: Path) -> None:
    """One error that names the directory, the free space and the fix; no traceback, no logging-error flood."""
    flat = " ".join(output.split())
    assert f"Cannot write the run directory '{run_dir}'" in flat, output
    assert "free), so the run stopped" in flat, output
    assert f"batchcli resume {run_dir}" in flat, output
    assert flat.count("so the run stopped") == 1, output
    assert "Traceback" not in output, output
    assert "Logging error" not in output, output
    assert output.count("Cannot write the log file") <= 1, output


def test_a_disk_that_fills_up_mid_run_stops_it_resumably_and_resume_loses_nothing(
    tmp_path: Path, small_disk: Path, run_batchcli
) -> None:
    """A tmpfs filling up mid-run pauses the run, which then stops with exit 130; resume with space loses nothing."""
    count, logs, out = 300, tmp_path / "logs", small_disk / "out"
    logs.mkdir()
    proc = start_counting(tmp_path, out, logs, count, "full.txt", "-p", "write_retry_s=1")  # resume keeps it
    wait_for(lambda: journaled(out) >= 60, "60 journaled items")
    filler = fill(small_disk)
    processed_when_full = sum(processed(logs).values())
    assert proc.wait(timeout=120) == 130
    output = (tmp_path / "full.txt").read_text()
    run_dir = next(out.iterdir())
    assert_one_clear_message(output, run_dir)
    # The closing line counts what the journal holds, what resume will find; what settled unrecorded is said apart.
    flat = " ".join(output.split())
    counts = re.search(r"Stopped: (\d+) succeeded, (\d+) failed, (\d+) unprocessed of 300\.( (\d+) more settled)?", flat)
    assert counts is not None, output
    succeeded, failed, unprocessed, unrecorded = (int(g or 0) for g in counts.group(1, 2, 3, 5))
    assert succeeded + failed == journaled(out) and succeeded + failed + unprocessed == count, output
    assert sum(1 for n, times in processed(logs).items() if times) >= succeeded + failed + unrecorded
    # Paused at the first flush that failed: only items in flight or started before it finished afterwards.
    assert sum(processed(logs).values()) - processed_when_full <= REDO_BOUND
    assert read_run(run_dir).status == "crashed"  # its session could not be closed: resumable like a crash

    still_full = run_batchcli("resume", run_dir)
    assert still_full.exit_code == 130
    assert "retries for up to 1s (write_retry_s)" in " ".join(still_full.output.split())  # resume kept it
    assert f"Cannot write the run directory '{run_dir}'" in " ".join(still_full.output.split())
    assert "Traceback" not in still_full.output, still_full.output
    filler.unlink()
    resumed = run_batchcli("resume", run_dir)
    assert resumed.exit_code == 1, resumed.output  # every 7th item fails
    assert_ledger(logs, count, REDO_BOUND)
    assert_failed_jsonl_exact(run_dir, count)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["succeeded"] + summary["failed"], summary["total"]) == ("finished", count, count)


def test_space_freed_while_paused_lets_the_run_carry_on_with_nothing_lost(tmp_path: Path, small_disk: Path) -> None:
    """What could not be written is kept in memory and written once space returns; the run finishes, nothing redone."""
    count, logs, out = 300, tmp_path / "logs", small_disk / "out"
    logs.mkdir()
    proc = start_counting(tmp_path, out, logs, count, "full.txt", "-p", "write_retry_s=30")  # time for ctl
    wait_for(lambda: journaled(out) >= 60, "60 journaled items")
    filler = fill(small_disk)
    wait_for(lambda: "Cannot write the run directory" in (tmp_path / "full.txt").read_text(), "the pause")
    resumed = subprocess.run(  # it answered "the run is running"
        [sys.executable, "-m", "batchcli", "ctl", str(next(out.iterdir())), "resume"],
        capture_output=True, text=True, timeout=60, env=subprocess_env(),
    )  # fmt: skip
    said = " ".join(resumed.stdout.split())
    filler.unlink()
    assert "the run is held because its run directory cannot be written" in said, resumed.stdout + resumed.stderr
    assert proc.wait(timeout=120) == 1  # finished; every 7th item failed
    output = (tmp_path / "full.txt").read_text()
    assert "can be written again; carrying on" in " ".join(output.split()), output
    assert "Traceback" not in output and "Logging error" not in output, output
    assert_ledger(logs, count, 0)
    run_dir = next(out.iterdir())
    assert_failed_jsonl_exact(run_dir, count)
    assert json.loads((run_dir / "summary.json").read_text())["succeeded"] == count - len(range(0, count, 7))


def test_a_run_directory_moved_mid_run_stops_the_run_which_resumes_from_its_new_place(tmp_path: Path, run_batchcli) -> None:
    """Moved away mid-run, the run notices at its next flush (not at its end), stops resumably naming the new
    place, and a resume there loses nothing; the old place is not recreated."""
    count, logs, out, moved = 300, tmp_path / "logs", tmp_path / "out", tmp_path / "moved"
    logs.mkdir()
    proc = start_counting(tmp_path, out, logs, count, "moved.txt", "-p", "write_retry_s=1")
    wait_for(lambda: journaled(out) >= 60, "60 journaled items")
    run_dir = next(out.iterdir())
    run_dir.rename(moved)
    assert proc.wait(timeout=120) == 130
    output = (tmp_path / "moved.txt").read_text()
    flat = " ".join(output.split())
    assert f"was moved to '{moved}' while the run went on, so the run stopped" in flat, output
    assert f"Continue with: batchcli resume {moved}" in flat, output
    assert f"Run directory: {moved}" in flat and f"Run directory: {run_dir}" not in flat, output  # not the old place
    assert "Traceback" not in output, output
    assert sum(processed(logs).values()) < count  # it stopped early instead of running on unrecorded
    assert not run_dir.exists()
    resumed = run_batchcli("resume", moved)
    assert resumed.exit_code == 1, resumed.output  # every 7th item fails
    assert_ledger(logs, count, REDO_BOUND)
    assert_failed_jsonl_exact(moved, count)
    summary = json.loads((moved / "summary.json").read_text())
    assert (summary["status"], summary["succeeded"] + summary["failed"]) == ("finished", count)


def test_a_run_directory_moved_away_and_back_mid_run_loses_no_settled_item_from_its_journal(tmp_path: Path) -> None:
    """Moved away and back before write_retry_s, the run carries on and its journal holds every item that settled
    meanwhile. The flushes that found it gone had taken those items from the run's counts and dropped them: the
    run then finished with items succeeded but counted as unprocessed."""
    count, logs, out, away = 300, tmp_path / "logs", tmp_path / "out", tmp_path / "away"
    logs.mkdir()
    proc = start_counting(tmp_path, out, logs, count, "moved.txt", "-p", "write_retry_s=600")
    wait_for(lambda: journaled(out) >= 60, "60 journaled items")
    run_dir = next(out.iterdir())
    run_dir.rename(away)
    wait_for(lambda: "while the run went on" in " ".join((tmp_path / "moved.txt").read_text().split()), "the run to notice")
    away.rename(run_dir)
    assert proc.wait(timeout=120) == 1, (tmp_path / "moved.txt").read_text()  # every 7th item fails
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["succeeded"] + summary["failed"], summary["unprocessed"]) == ("finished", count, 0)
    assert_ledger(logs, count, 0)  # each item processed once
    assert_failed_jsonl_exact(run_dir, count)


def test_a_run_directory_deleted_mid_run_stops_the_run_with_exit_3_and_says_it_cannot_be_resumed(tmp_path: Path) -> None:
    """Deleted mid-run, its journal goes with it: the run stops at its next flush and says so, not "free some space"."""
    count, logs, out = 300, tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    proc = start_counting(tmp_path, out, logs, count, "deleted.txt", "-p", "write_retry_s=1")
    wait_for(lambda: journaled(out) >= 60, "60 journaled items")
    run_dir = next(out.iterdir())
    shutil.rmtree(run_dir)
    assert proc.wait(timeout=120) == 3  # fatal: nothing to resume (1 would send a script to `retry` it)
    output = (tmp_path / "deleted.txt").read_text()
    flat = " ".join(output.split())
    assert f"The run directory '{run_dir}' was deleted while the run went on" in flat, output
    assert "the run cannot be resumed" in flat, output
    assert "Free some space" not in flat and "batchcli resume" not in flat, output
    assert "resume processes them again" not in flat, output  # the closing line said so, below the error
    assert "Traceback" not in output, output
    assert sum(processed(logs).values()) < count
    assert not run_dir.exists()


def test_a_journal_deleted_alone_mid_run_stops_the_run_with_exit_3_and_says_it_cannot_be_resumed(tmp_path: Path) -> None:
    """Only journal.sqlite deleted (a clean-up of *.sqlite): the run said its directory "was moved or replaced" and to
    resume it (exit 130), though what it recorded was gone and resume then refused the directory."""
    count, logs, out = 300, tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    proc = start_counting(tmp_path, out, logs, count, "deleted.txt", "-p", "write_retry_s=1")
    wait_for(lambda: journaled(out) >= 60, "60 journaled items")
    run_dir = next(out.iterdir())
    (run_dir / "journal.sqlite").unlink()
    assert proc.wait(timeout=120) == 3
    flat = " ".join((tmp_path / "deleted.txt").read_text().split())
    assert f"The journal of run '{run_dir}' (journal.sqlite) was deleted while the run went on" in flat, flat
    assert "the run cannot be resumed" in flat and "batchcli resume" not in flat and "Traceback" not in flat, flat
    assert "resume processes them again" not in flat, flat


def test_resume_and_retry_of_a_run_whose_job_file_moved_say_where_it_was(tmp_path: Path, run_batchcli) -> None:
    """resume takes no path, yet its error said "Path ... does not exist. Give a .py file ..."; now it names the
    run's job and the fix (put it back), for resume and retry alike, with exit 2."""
    jobs, logs = tmp_path / "jobs", tmp_path / "logs"
    jobs.mkdir()
    logs.mkdir()
    shutil.copy(COUNTING, jobs / "counting.py")
    args = ["-p", "count=20", "-p", f"log_dir={logs}", "-p", "fail_every=7", "-p", "delay_s=0"]
    trial = run_batchcli("exec", jobs / "counting.py", "-d", tmp_path / "out", "--limit", "10", *args)
    assert trial.exit_code == 1 and trial.run_dir is not None, trial.output
    jobs.rename(tmp_path / "jobs_renamed")
    for command in (["resume", trial.run_dir, "--all"], ["retry", trial.run_dir]):
        refused = run_batchcli(*command)
        flat = " ".join(refused.output.split())
        assert refused.exit_code == 2, refused.output
        assert f"was made by the job at '{jobs / 'counting.py'}', which is no longer there" in flat, refused.output
        assert f"put it back there (a copy will do), then run: batchcli {command[0]} {trial.run_dir}" in flat
        assert "Traceback" not in refused.output
    (tmp_path / "jobs_renamed").rename(jobs)
    whole = run_batchcli("resume", trial.run_dir, "--all")
    assert whole.exit_code == 1, whole.output
    assert sorted(map(int, processed(logs))) == list(range(20))


def _file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn: files the child writes may not grow past ``limit`` bytes, and a write past it fails
    with EFBIG instead of killing the process with SIGXFSZ."""

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_file_size


@pytest.mark.parametrize("executor", ["async", "process"])
def test_a_file_size_limit_reached_mid_run_stops_it_resumably_and_resume_loses_nothing(
    tmp_path: Path, run_batchcli, executor: str
) -> None:
    """RLIMIT_FSIZE (EFBIG, like a full disk where mounting is not allowed) mid-run: the log file fails first and
    says so once, then the journal: exit 130; resume loses nothing."""
    # The journal's write-ahead log reaches the limit after about 2 s (200-300 items at RATE): 600 is mid-run.
    count, logs, out = 600, tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    proc = start_counting(
        tmp_path,
        out,
        logs,
        count,
        "limited.txt",
        "-p",
        f"executor={executor}",
        "-p",
        "note_bytes=2000",  # 200 KB/s of log: the log file reaches the limit before the journal does
        "-p",
        "write_retry_s=1",
        preexec_fn=_file_size_limit(192 * 1024),
    )
    assert proc.wait(timeout=120) == 130
    output = (tmp_path / "limited.txt").read_text()
    run_dir = next(out.iterdir())
    assert_one_clear_message(output, run_dir)
    log_file = run_dir / "batchcli.log"
    assert output.count("Cannot write the log file") == 1 and f"'{log_file}'" in " ".join(output.split()), output
    before = read_run(run_dir)
    assert 0 < before.succeeded + before.failed < count  # the limit was reached mid-run

    resumed = run_batchcli("resume", run_dir)
    assert resumed.exit_code == 1, resumed.output
    assert_ledger(logs, count, REDO_BOUND)
    assert_failed_jsonl_exact(run_dir, count)


def test_a_keyed_run_stopped_by_a_file_size_limit_counts_the_items_it_settled_but_could_not_record(
    tmp_path: Path, run_batchcli
) -> None:
    """The closing line of a keyed run stopped by a write failure says how many more items settled than the journal
    holds (the resume does exactly those again). A keyed success counts once its key is written, so the closing line
    left out every success a failed write kept in memory: thousands, with nothing said."""
    ledger, out, count = tmp_path / "ledger.txt", tmp_path / "out", 150_000
    cmd = [sys.executable, "-m", "batchcli", "exec", str(PROJECTS / "keyed_fast" / "job.py"), "-d", str(out),
           "-p", f"count={count}", "-p", f"ledger={ledger}", "-p", "write_retry_s=1"]  # fmt: skip
    # The journal reaches the limit after some 100,000 keys; the ledger (7 bytes an item, 1 MB) stays below it.
    stopped = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=subprocess_env(),
                             preexec_fn=_file_size_limit(1536 * 1024))  # fmt: skip
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 130, output
    flat = " ".join(output.split())
    closing = re.search(r"Stopped: (\d+) succeeded, 0 failed, (\d+) unprocessed of 150000\. (\d+) more settled but "
                        r"could not be recorded: resume processes them again\.", flat)  # fmt: skip
    assert closing is not None, output
    held, unprocessed, unrecorded = map(int, closing.groups())
    processed = len(ledger.read_bytes().splitlines())
    assert held + unprocessed == count and unrecorded > 0 and held + unrecorded == processed, (closing.group(0), processed)
    shown = run_batchcli("show", next(out.iterdir()), COLUMNS="250")  # its stop could not be recorded: read as crashed
    flat = " ".join(shown.output.split())
    assert "status crashed" in flat and "or its run directory could not be written, as on a full disk" in flat, flat

    resumed = run_batchcli("resume", next(out.iterdir()), timeout=300)
    assert resumed.exit_code == 0, resumed.output
    again = Counter(ledger.read_bytes().splitlines())
    assert len(again) == count and sum(n - 1 for n in again.values()) == unrecorded


def test_failed_jsonl_is_exact_after_repeated_kill_9_and_resume(tmp_path: Path, run_batchcli) -> None:
    """kill -9 twice mid-run (with failing items), a crash's torn and extra lines, then resume: one line per failed item."""
    count, logs, out = 600, tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    proc = start_counting(tmp_path, out, logs, count, "first.txt")
    for session, settled in enumerate((80, 250)):
        wait_for(lambda: journaled(out) >= settled, f"{settled} journaled items")
        proc.kill()
        proc.wait()
        run_dir = next(out.iterdir())
        assert read_run(run_dir).status == "crashed"
        if session == 0:
            # What a crash between an append and its commit (the old order) or mid-line leaves behind.
            with open(run_dir / "failed.jsonl", "a") as failed:
                failed.write((run_dir / "failed.jsonl").read_text().splitlines()[0] + "\n")
                failed.write('{"ordinal": 7, "input": 7, "error_ty')
        proc = resume_in_background(tmp_path, run_dir, f"resume-{session}.txt")
    assert proc.wait(timeout=120) == 1
    assert_ledger(logs, count, 2 * REDO_BOUND)
    assert_failed_jsonl_exact(run_dir, count)
    assert read_run(run_dir).failed == len(range(0, count, 7))


def test_persist_failed_gets_the_failures_of_a_killed_session_from_the_resume(tmp_path: Path, run_batchcli) -> None:
    """kill -9 ends a session before its persist_failed: the resume handed over only its own failures, so a store fed
    by the hook silently missed the killed session's (failed.jsonl had them all). Now each failure reaches the hook
    exactly once, and a later resume hands over nothing again."""
    persisted = tmp_path / "persisted.txt"
    project = PROJECTS / "persist_failed" / "job.py"
    proc = start(tmp_path, "exec", project, "-d", "out", "-p", f"persisted={persisted}", "-p", "max_retries=0",
                 "-p", "breaker_window=0", "-p", "concurrency=2")  # fmt: skip
    wait_for(lambda: journaled(tmp_path / "out") >= 60, "60 journaled items")
    proc.kill()
    proc.wait()
    run_dir = next((tmp_path / "out").iterdir())
    killed = read_run(run_dir)
    assert killed.status == "crashed" and killed.failed >= 10 and not persisted.exists()

    resumed = run_batchcli("resume", run_dir)
    assert resumed.exit_code == 1, resumed.output  # items failed
    assert resumed.summary["failed"] == 40
    handed = sorted(int(line) for line in persisted.read_text().splitlines())
    assert handed == list(range(0, 200, 5))  # the killed session's failures too, each once
    assert run_batchcli("resume", run_dir).exit_code == 0  # a finished run: left alone
    assert sorted(int(line) for line in persisted.read_text().splitlines()) == handed


def test_a_resumed_run_shows_no_stale_summary_and_retry_points_a_stopped_run_to_resume(tmp_path: Path, run_batchcli) -> None:
    """The stopped session's summary.json ("stopped", its counts and exit code) stayed while the resume ran, and after
    it was killed, read as the run's state. And `retry` of a stopped run without failures said only "nothing to
    retry" (exit 0), which a script took for the work being done."""
    logs = tmp_path / "logs"
    logs.mkdir()
    proc = start(tmp_path, "exec", COUNTING, "-d", "out", "-p", "count=600", "-p", f"log_dir={logs}",
                 "-p", "delay_s=0.01", "-p", "concurrency=2")  # fmt: skip
    wait_for(lambda: journaled(tmp_path / "out") >= 40, "40 journaled items")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    run_dir = next((tmp_path / "out").iterdir())
    stopped = json.loads((run_dir / "summary.json").read_text())
    assert stopped["status"] == "stopped" and stopped["unprocessed"] > 0

    retried = run_batchcli("retry", run_dir)
    said = " ".join(retried.output.split())
    assert retried.exit_code == 0 and "nothing to retry" in said, said
    hint = f"Its {stopped['unprocessed']:,} unprocessed item(s) are for resume: batchcli resume {run_dir}"
    assert "".join(hint.split()) in "".join(said.split()), said  # the console wraps the path anywhere

    resume = subprocess.Popen([sys.executable, "-m", "batchcli", "resume", str(run_dir)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=subprocess_env())  # fmt: skip
    try:
        wait_for(lambda: read_run(run_dir).status == "running" and journaled(tmp_path / "out") > stopped["succeeded"] + 20,
                 "the resume to settle some items")  # fmt: skip
        assert not (run_dir / "summary.json").exists()  # not the stopped session's any more
    finally:
        resume.kill()
        resume.wait()
    assert read_run(run_dir).status == "crashed" and not (run_dir / "summary.json").exists()
    finished = run_batchcli("resume", run_dir)
    assert finished.exit_code == 0 and finished.summary["status"] == "finished" and finished.summary["succeeded"] == 600


def test_a_keyed_run_waits_for_a_journal_that_falls_behind(tmp_path: Path) -> None:
    """Each success of a keyed Source is a row of the journal's key index, and nothing held the run back when the
    journal could not keep up: an async job at 90,000 items a second ran minutes ahead of it, in gigabytes of
    waiting keys, and a kill -9 lost those minutes. A journal held by another connection stands in for a slow one
    here: the run stops starting items once some 50,000 successes wait, and a stop then journals every one."""
    from joblog import wait_for

    ledger, out, count = tmp_path / "ledger.txt", tmp_path / "out", 5_000_000
    cmd = [sys.executable, "-m", "batchcli", "exec", str(PROJECTS / "keyed_fast" / "job.py"), "-d", str(out),
           "-p", f"count={count}", "-p", f"ledger={ledger}", "-p", "concurrency=50"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env())
    try:
        wait_for(lambda: any(out.glob("*/journal.sqlite")) and ledger.exists(), "the run to start its items")
        (journal,) = out.glob("*/journal.sqlite")
        holder = sqlite3.connect(journal, timeout=10, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # no flush can write until this ends (a flush waits up to 10 s)
        try:
            before = len(ledger.read_bytes().splitlines())
            time.sleep(6)
            during = len(ledger.read_bytes().splitlines()) - before
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # At most what the blocked flush had taken and the successes allowed to wait, each 50,000 plus what a tenth of
    # a second between two looks lets through (about 200,000 at 400,000 items a second here); before, the run went
    # on at full speed (2.7 million in these 6 s).
    assert during <= 400_000, during
    assert proc.returncode == 130, output
    summary = json.loads(next(out.glob("*/summary.json")).read_text())
    assert summary["failed"] == 0 and summary["succeeded"] + summary["unprocessed"] == count
    assert summary["succeeded"] == len(ledger.read_bytes().splitlines())  # every success journaled, none lost


@pytest.mark.parametrize("change, said", [
    ("n: Param[int] = 5 -> count: Param[int] = 5", "Unknown param"),
    ("n: Param[int] = 5 -> n: Param[bool] = False", "expects bool"),
])
def test_a_value_the_run_recorded_that_the_changed_job_refuses_is_named_as_the_runs(cli, tmp_path: Path, change: str, said: str) -> None:
    """A run started with -p n=3, then the job's param renamed (or retyped): resume said "Unknown param 'n'", a
    name the user never typed now, with no word of where it came from, and -p count=3 did not help."""
    job = tmp_path / "job.py"
    source = (
        "import os\n"
        "from batchcli import Param, Service, Source, inject\n"
        "@inject\nclass Numbers(Source[int]):\n"
        "    def __init__(self, n: Param[int] = 5) -> None:\n        self.n = n\n"
        "    def __iter__(self):\n        return iter(range(self.n))\n"
        "@inject\nclass Crash(Service[int]):\n"
        "    async def process(self, item: int) -> None:\n"
        "        if item == 1 and os.environ.get('CRASH'):\n            os._exit(3)\n"
    )
    job.write_text(source)
    crashed = subprocess.run([sys.executable, "-m", "batchcli", "exec", str(job), "-d", str(tmp_path / "out"), "-p", "n=3"],
                             capture_output=True, text=True, env=subprocess_env(CRASH="1"), timeout=60)
    assert crashed.returncode == 3, crashed.stderr
    run_dir = next((tmp_path / "out").iterdir())
    before, after = change.split(" -> ")
    job.write_text(source.replace(before, after).replace("self.n = n", f"self.n = {after.split(':')[0]}"))
    for extra in ([], ["-p", "count=3"] if "count" in after else ["-p", "n=true"]):
        resumed = cli("resume", run_dir, *extra)
        flat = " ".join(resumed.output.split())
        if extra and "bool" in after:  # the value given again, in the form the job takes now: it runs
            assert resumed.exit_code in (0, 1), resumed.output
            continue
        assert resumed.exit_code == 2, resumed.output
        assert said in flat and "That value is the run's own: it started with -p n=3, recorded in its journal" in flat, flat
        assert "Traceback" not in flat
