"""What process() returns is kept exactly once per item, and comes back through `batchcli results`, read_results and run_job."""

from __future__ import annotations

import csv
import io
import json
import marshal
import os
import pickle
import random
import re
import sqlite3
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import pytest
from conftest import subprocess_env

import batchcli
from batchcli.errors import JournalError
from batchcli.executors.asyncpool import SEAL_ROW_MAX, SEAL_SAMPLE
from batchcli.journal.batches import PICKLED_LIST, PICKLED_LISTS, batch_rows
from batchcli.journal.results import UnreadableResult
from batchcli.journal.rundir import read_run
from batchcli.testing import run_job

ROOT = Path(__file__).resolve().parent.parent
PROJECT = Path(__file__).resolve().parent / "projects" / "results"
SQUARES = PROJECT / "squares.py"
WORDS = PROJECT / "words.py"
BATCHED = PROJECT / "batched.py"


def square(n: int) -> dict[str, int]:
    return {"n": n, "square": n * n}


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def journal_rows(run_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def batch_sizes(run_dir: Path) -> list[int]:
    """The size of each batch the loop encoded, as the journal's rows hold them (a ``PICKLED_LISTS`` row holds several)."""
    sizes: list[int] = []
    for encoding, packed, length in journal_rows(run_dir, "SELECT encoding, sizes, length(data) FROM result_batches"):
        if encoding == PICKLED_LISTS:
            numbers = array("q")
            numbers.frombytes(packed)
            sizes += numbers
        else:
            sizes.append(length)
    return sizes


def kept_ordinals(run_dir: Path) -> list[int]:
    """Every result row the journal holds, duplicates included: pickled ones one per row, plain data in batch rows."""
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        single = [o for (o,) in conn.execute("SELECT ordinal FROM results")]
        return single + [row[0] for row in batch_rows(conn)]
    finally:
        conn.close()


def done_ordinals(run_dir: Path) -> set[int]:
    return {n for start, stop in journal_rows(run_dir, "SELECT start, stop FROM done_ranges") for n in range(start, stop)}


def test_results_export_as_jsonl_in_source_order_one_row_per_item_retries_included(cli, tmp_path: Path) -> None:
    """A run's results come out in source order with their ordinals, once per item however many attempts it took; None keeps nothing."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=12", "-p", "flaky_every=4", "-p", "none_every=5", "-p", "backoff_s=0")
    assert ran.exit_code == 0, ran.output
    exported = cli("results", ran.run_dir)
    assert exported.exit_code == 0, exported.output
    rows = jsonl(exported.output)
    kept = [n for n in range(12) if n % 5]  # 0, 5 and 10 returned None; 4 and 8 succeeded on their second attempt
    assert rows == [{"ordinal": n, "result": square(n)} for n in kept]
    assert [r.value for r in batchcli.read_results(ran.run_dir)] == [square(n) for n in kept]


def test_csv_export_of_a_keyed_source_carries_each_key_and_writes_to_a_file(cli, tmp_path: Path) -> None:
    """A keyed source's results export as CSV with an ordinal, key and result column, to -o FILE; a failed item has no row."""
    ran = cli("exec", WORDS, "-d", "out", "-p", "count=5", "-p", "fail_three=true")
    assert ran.exit_code == 1, ran.output
    exported = cli("results", ran.run_dir, "--format", "csv", "-o", "words.csv")
    assert exported.exit_code == 0, exported.output
    assert "Wrote 4 result(s) to words.csv." in exported.output
    rows = list(csv.reader(io.StringIO((tmp_path / "words.csv").read_text())))
    assert rows == [["ordinal", "key", "result"]] + [[str(n), f"word-{n}", f"WORD-{n}"] for n in (0, 1, 2, 4)]
    keyed = jsonl(cli("results", ran.run_dir).output)
    assert keyed[0] == {"ordinal": 0, "key": "word-0", "result": "WORD-0"}


def test_unkeyed_csv_and_values_json_cannot_hold(cli, tmp_path: Path) -> None:
    """An unkeyed CSV has no key column; a value JSON cannot hold is pickled, exported as its (compact) JSON form and read back as itself."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=4", "-p", "point_every=3")
    assert ran.exit_code == 0, ran.output
    rows = list(csv.reader(io.StringIO(cli("results", ran.run_dir, "-f", "csv").output)))
    assert rows[0] == ["ordinal", "result"]
    assert rows[1:] == [["0", '{"x":0,"y":0}'], ["1", '{"n":1,"square":1}'], ["2", '{"n":2,"square":4}'], ["3", '{"x":3,"y":9}']]
    values = [r.value for r in batchcli.read_results(ran.run_dir)]
    assert type(values[0]).__name__ == "Point" and (values[3].x, values[3].y) == (3, 9)
    assert values[1:3] == [square(1), square(2)]


def test_every_result_exports_as_compact_json_whichever_way_it_was_kept(cli, tmp_path: Path) -> None:
    """Results JSON holds as it is were written compact, and the JSON form of the others (pickled, or plain data
    with a tuple key) with spaces: the same export mixed ``{"n":1}`` and ``{"x": 3, "y": 9}``."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=9", "-p", "point_every=3", "-p", "pair_every=2")
    assert ran.exit_code == 0, ran.output
    lines = cli("results", ran.run_dir).output.splitlines()
    results = [line.split(', "result": ', 1)[1][:-1] for line in lines]
    assert results[:5] == ['{"x":0,"y":0}', '{"n":1,"square":1}', '{"[2, 2]":[2,4]}', '{"x":3,"y":9}', '{"[4, 4]":[4,16]}']
    assert [r.value for r in batchcli.read_results(ran.run_dir)][2] == {(2, 2): [2, 4]}


@pytest.mark.parametrize("executor", ["async", "process"])
def test_a_coroutine_returned_by_a_plain_def_process_says_to_declare_it_async(run_batchcli, executor: str) -> None:
    """A ``def process`` returning a coroutine fails that item saying to make it ``async def``, without Python's
    "never awaited" warning on top (it said only "cannot keep ... pickling it failed")."""
    ran = run_batchcli("exec", PROJECT / "forgot_async.py", "-d", "out", "-p", f"executor={executor}")
    assert ran.exit_code == 1, ran.output
    (failure,) = ran.failed
    assert failure["ordinal"] == 2
    assert failure["error_type"] == "batchcli.journal.results.UnkeepableResult"
    assert "(coroutine) instead of awaiting it" in failure["error_message"]
    assert "`async def process(...)`" in failure["error_message"]
    assert "never awaited" not in ran.output


def test_a_result_that_cannot_be_kept_fails_only_its_item_with_the_reason(cli, tmp_path: Path) -> None:
    """A returned lock (neither JSON nor picklable) fails that item, saying why and what to return; the run and its other results go on."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=6", "-p", "lock_at=2")
    assert ran.exit_code == 1, ran.output
    (failure,) = ran.failed
    assert failure["ordinal"] == 2
    assert failure["error_type"] == "batchcli.journal.results.UnkeepableResult"
    assert "cannot keep" in failure["error_message"] and "Return plain data" in failure["error_message"]
    assert [r["ordinal"] for r in jsonl(cli("results", ran.run_dir).output)] == [0, 1, 3, 4, 5]


def test_a_dict_the_job_reuses_is_kept_as_it_was_when_each_item_returned_it(cli, tmp_path: Path) -> None:
    """Results are encoded a batch at a time, but one the job still holds (and changes for the next item) is
    encoded when it is returned: every item keeps its own value, over several batches."""
    ran = cli("exec", BATCHED, "-d", "out", "-p", "count=3000", "-p", "reuse=true")
    assert ran.exit_code == 0, ran.output
    assert [(r.ordinal, r.value) for r in batchcli.read_results(ran.run_dir)] == [(n, {"n": n}) for n in range(3000)]


@pytest.mark.parametrize("executor", ["async", "process"])
def test_a_sync_process_refilling_one_dict_per_thread_keeps_each_items_own_value(cli, tmp_path: Path, executor: str) -> None:
    """The value is encoded in the thread that returned it, before that thread takes another item: encoded on the
    loop afterwards, the thread had already refilled it, and about 30% of the items kept another item's value."""
    ran = cli(
        "exec", PROJECT / "per_thread.py", "-d", "out", "-p", "count=400", "-p", "concurrency=4",
        "-p", f"executor={executor}", *(["-p", "workers=2"] if executor == "process" else []),
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    values = [(r.ordinal, r.value) for r in batchcli.read_results(ran.run_dir)]
    assert values == [(n, {"n": n, "seen": [n]}) for n in range(400)]


def batched_so_far(out: Path, proc: subprocess.Popen[str], count: int) -> list[tuple[int, Any]]:
    """The live run's batched results under ``out`` once there are ``count`` (or after 30 s); the run still runs."""
    deadline = time.monotonic() + 30
    found: list[tuple[int, Any]] = []
    while len(found) < count and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        for journal in out.glob("*/journal.sqlite"):
            conn = sqlite3.connect(journal)
            try:
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'result_batches'").fetchone():
                    found = [(o, marshal.loads(v)) for o, _, v, _ in batch_rows(conn)]
            finally:
                conn.close()
    assert proc.poll() is None, proc.communicate()[1]
    return found


def test_a_list_the_job_keeps_changing_inside_a_new_result_is_kept_as_returned(cli, tmp_path: Path) -> None:
    """A fresh dict holding a list the job changes in place for the next item: such a result is encoded when
    returned (the collector tracks a dict that holds a list), not with the batch, which would store the list as it
    was a thousand items later."""
    ran = cli("exec", BATCHED, "-d", "out", "-p", "count=1500", "-p", "recent=true", "-p", "concurrency=1")
    assert ran.exit_code == 0, ran.output
    values = [r.value for r in batchcli.read_results(ran.run_dir)]
    assert values == [{"n": n, "last": ([-1, -1, -1] + list(range(max(0, n - 2), n + 1)))[-3:]} for n in range(1500)]


def test_results_reach_the_journal_while_the_run_still_waits_for_the_others(tmp_path: Path) -> None:
    """Results waiting to be encoded with others are written within a moment when no others come, not at the
    run's end: a job whose last items take an hour keeps what the others returned as it comes."""
    gate = tmp_path / "gate"
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(BATCHED), "-d", str(tmp_path / "out"), "-p", "count=12",
         "-p", f"gate={gate}", "-p", "gate_from=10"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
    )  # fmt: skip
    try:
        found = batched_so_far(tmp_path / "out", proc, 10)
        assert found == [(n, {"n": n}) for n in range(10)]  # items 10 and 11 are still waiting at the gate
    finally:
        gate.touch()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    (journal,) = (tmp_path / "out").glob("*/journal.sqlite")
    assert [r.value for r in batchcli.read_results(journal.parent)] == [{"n": n} for n in range(12)]


def test_results_reach_the_journal_between_items_that_hold_the_event_loop(tmp_path: Path) -> None:
    """An async process() that blocks (time.sleep) keeps the loop's timers from running: a waiting result is still
    written before the next item starts, not once that item (here one that waits for a file) lets go."""
    gate = tmp_path / "gate"
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(BATCHED), "-d", str(tmp_path / "out"), "-p", "count=3",
         "-p", "concurrency=1", "-p", "block_s=0.5", "-p", f"gate={gate}", "-p", "gate_from=2", "-p", "blocking=true"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
    )  # fmt: skip
    try:
        found = batched_so_far(tmp_path / "out", proc, 2)
        assert found == [(0, {"n": 0}), (1, {"n": 1})]  # item 2 holds the loop until the gate opens
    finally:
        gate.touch()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_unkeepable_results_in_a_batch_do_not_trip_the_circuit_breaker(cli, tmp_path: Path) -> None:
    """One item in ten returns a lock: those fail one by one among the others' successes, as when each result was
    kept on its own, so the circuit breaker (half of the last 100 failed) never opens and the run finishes."""
    ran = cli("exec", BATCHED, "-d", "out", "-p", "count=3000", "-p", "lock_every=10", "--no-shell")
    assert ran.exit_code == 1, ran.output
    assert "Circuit breaker" not in ran.output
    assert (ran.summary["succeeded"], ran.summary["failed"]) == (2701, 299)  # 10, 20, ... 2990 (item 0 is a dict)


def test_results_that_grow_large_wait_by_the_handful_and_no_batch_passes_a_row(cli, tmp_path: Path) -> None:
    """A thousand small results, then large ones: the batch that waits when they turn large holds a few of them,
    not hundreds (memory stays flat), and 9 MiB results are kept one by one rather than as one 64 MiB+ row."""
    ran = cli("exec", BATCHED, "-d", "out", "-p", "count=1540", "-p", "big_from=1500", "-p", "big_kb=512")
    assert ran.exit_code == 0, ran.output
    assert max(batch_sizes(ran.run_dir)) <= (SEAL_SAMPLE + 1) * 512 * 1024, batch_sizes(ran.run_dir)
    values = [r.value for r in batchcli.read_results(ran.run_dir)]
    assert values[:1500] == [{"n": n} for n in range(1500)]
    assert [(len(v), v.split(":")[0]) for v in values[1500:]] == [(512 * 1024, str(n)) for n in range(1500, 1540)]
    huge = cli("exec", BATCHED, "-d", "out", "-p", "count=1040", "-p", "big_from=1031", "-p", "big_kb=9216")
    assert huge.exit_code == 0, huge.output
    (largest,) = journal_rows(huge.run_dir, "SELECT max(length(data)) FROM result_batches")[0]
    assert largest <= SEAL_ROW_MAX, largest
    values = [r.value for r in batchcli.read_results(huge.run_dir)]
    assert values[:1031] == [{"n": n} for n in range(1031)] and [len(v) for v in values[1031:]] == [9216 * 1024] * 9


def test_values_marshal_refuses_in_a_batch_are_kept_one_by_one_and_unkeepable_ones_fail_alone(cli, tmp_path: Path) -> None:
    """A batch holding pickled values and locks (which nothing can keep) keeps every other result, pickles the
    Points, and fails each lock's item once with the reason, the last item of the run too; no item runs twice."""
    ran = cli(
        "exec", BATCHED, "-d", "out", "-p", "count=2000", "-p", "point_every=7", "-p", "lock_every=500",
        "-p", "lock_at=1999", "-p", f"log_dir={tmp_path}",
    )  # fmt: skip
    assert ran.exit_code == 1, ran.output
    locks = [500, 1000, 1500, 1999]
    assert [(f["ordinal"], f["attempts"]) for f in ran.failed] == [(n, 1) for n in locks]
    assert all(f["error_type"] == "batchcli.journal.results.UnkeepableResult" for f in ran.failed)
    results = list(batchcli.read_results(ran.run_dir))
    assert [r.ordinal for r in results] == [n for n in range(2000) if n not in locks]
    points = [r for r in results if r.ordinal and r.ordinal % 7 == 0]
    assert points and all(type(r.value).__name__ == "Point" and r.value.x == r.ordinal for r in points)
    assert all(r.value == {"n": r.ordinal} for r in results if not (r.ordinal and r.ordinal % 7 == 0))
    attempts = (tmp_path / "attempts.log").read_text().split()
    assert sorted(map(int, attempts)) == list(range(2000))


def test_large_results_wait_to_be_encoded_in_small_batches(cli, tmp_path: Path) -> None:
    """Results are encoded a batch at a time to save time per result, but large ones are not held by the
    hundred: a batch of 300 KiB strings is one result, while small results share a row by the thousand."""
    big = cli("exec", BATCHED, "-d", "out", "-p", "count=20", "-p", "big_kb=300")
    assert big.exit_code == 0, big.output
    sizes = batch_sizes(big.run_dir)  # a batch of one result each
    assert len(sizes) == 20 and all(300 * 1024 < size < 2 * 300 * 1024 for size in sizes), sizes
    assert [r.value[:4] for r in batchcli.read_results(big.run_dir)][:3] == ["0:xx", "1:xx", "2:xx"]
    small = cli("exec", BATCHED, "-d", "out", "-p", "count=5000")
    assert small.exit_code == 0, small.output
    rows = journal_rows(small.run_dir, "SELECT count(*), max(length(ordinals)) / 8 FROM result_batches")
    assert rows[0][0] <= 20 and rows[0][1] >= 500, rows


def test_the_process_executor_keeps_results_encoded_in_its_workers(cli, tmp_path: Path) -> None:
    """With executor=process, results (pickled ones too) come back in the chunk replies and an unkeepable one fails its item."""
    ran = cli(
        "exec", SQUARES, "-d", "out", "-p", "count=8", "-p", "executor=process", "-p", "concurrency=2",
        "-p", "point_every=3", "-p", "none_every=5", "-p", "lock_at=4",
    )
    assert ran.exit_code == 1, ran.output
    assert [f["ordinal"] for f in ran.failed] == [4]
    results = list(batchcli.read_results(ran.run_dir))
    assert [r.ordinal for r in results] == [1, 2, 3, 6, 7]
    assert (results[2].value.x, results[3].value.y) == (3, 36)


def test_a_keyed_source_reordered_on_resume_keeps_one_result_per_key(cli, tmp_path: Path) -> None:
    """Results of a keyed run follow the key: resumed over a reshuffled source, each word has its own result once."""
    crashed = cli("exec", WORDS, "-d", "out", "-p", "count=30", "-p", "seed=1", "-p", "crash_after=12")
    assert crashed.exit_code == 3, crashed.output
    assert len(list(batchcli.read_results(crashed.run_dir))) == 12
    resumed = cli("resume", crashed.run_dir, "-p", "seed=2", "-p", "crash_after=-1")
    assert resumed.exit_code == 0, resumed.output
    results = list(batchcli.read_results(crashed.run_dir))
    assert sorted(r.key for r in results) == sorted(f"word-{n}" for n in range(30))
    assert all(r.value == r.key.upper() for r in results)


DRIVER_PEAK = """
import atexit, sys, tracemalloc
from pathlib import Path
peak = Path(sys.argv.pop(1))
tracemalloc.start()
atexit.register(lambda: peak.write_text(str(tracemalloc.get_traced_memory()[1] >> 20)))
sys.argv[0] = "batchcli"
from batchcli.__main__ import main
main()
"""


def test_large_results_from_worker_processes_come_back_a_few_mb_at_a_time(tmp_path: Path) -> None:
    """400 results of 1 MB each through `executor=process`: the driver's peak memory stays a fraction of them (chunks sized
    by time alone brought back up to 150 MB each, and the driver peaked near 1 GB), and every result is kept once."""
    count = 400
    peak = tmp_path / "peak.txt"
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER_PEAK, str(peak), "exec", str(BATCHED), "-d", str(tmp_path / "out"),
         "-p", f"count={count}", "-p", "big_kb=1024", "-p", "point_every=50", "-p", "executor=process", "-p", "workers=2"],
        capture_output=True, text=True, env=subprocess_env(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # What the driver's Python code holds at once, by tracemalloc: its RSS measures the allocator too, which kept
    # freed results in its per-thread arenas (160-200 MB here, once 409 MB under CI's load).
    peak_mb = int(peak.read_text())
    assert peak_mb < 200, f"the driver held {peak_mb} MB at once for {count} MB of results"  # here: 70 MB, before: 458 MB
    run_dir = next((tmp_path / "out").iterdir())
    results = list(batchcli.read_results(run_dir))
    assert [r.ordinal for r in results] == list(range(count))
    for r in results:
        n = r.ordinal
        if n and n % 50 == 0:
            assert r.value.x == n
        else:
            assert len(r.value) == 1024 * 1024 and r.value.startswith(f"{n}:x"), n


def test_a_result_whose_pickle_does_not_load_is_named_by_read_results_and_exported_as_json(cli, tmp_path: Path) -> None:
    """read_results raised the class's own TypeError at that row, naming neither the item nor the run; it says
    which item, why, and its JSON form now, and `batchcli results` exports every row."""
    ran = cli("exec", BATCHED, "-d", "out", "-p", "count=10", "-p", "half_pickled_at=4")
    assert ran.exit_code == 0, ran.output
    results = batchcli.read_results(ran.run_dir)
    assert [next(results).ordinal for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(UnreadableResult) as caught:
        next(results)
    said = str(caught.value)
    assert said.startswith(f"The result of item #4 in {ran.run_dir} does not unpickle (TypeError:"), said
    assert "missing 1 required positional argument: 'b'" in said and "<batched.HalfPickled object at" in said
    exported = cli("results", ran.run_dir)
    assert exported.exit_code == 0 and [r["ordinal"] for r in jsonl(exported.output)] == list(range(10))
    # run_job without output_dir reads results from a run directory it removes: the error says so, and how to keep it
    with pytest.raises(UnreadableResult, match=r"item #4 .*removed now: pass output_dir") as caught:
        run_job(BATCHED, params={"count": 10, "half_pickled_at": 4})
    assert isinstance(caught.value.__cause__, TypeError)


def test_results_of_a_retry_run_hold_the_retried_items(cli, tmp_path: Path) -> None:
    """`batchcli retry` keeps what the retried items return in its own run, and `results` of it lists them, each with
    its item_key (a retry run numbered its inputs by position only, so its results could not be joined back)."""
    first = cli("exec", WORDS, "-d", "out", "-p", "count=5", "-p", "fail_three=true")
    assert first.exit_code == 1, first.output
    again = cli("retry", first.run_dir, "-p", "fail_three=false")
    assert again.exit_code == 0, again.output
    assert jsonl(cli("results", again.run_dir).output) == [{"ordinal": 0, "key": "word-3", "result": "WORD-3"}]
    assert [row.key for row in batchcli.read_results(again.run_dir)] == ["word-3"]


def test_a_run_without_results_says_so(cli, tmp_path: Path) -> None:
    """A run whose process() returned None for every item exports nothing and says why, exit 0."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=3", "-p", "none_every=1")
    exported = cli("results", ran.run_dir)
    assert exported.exit_code == 0
    flat = " ".join(exported.output.split())
    assert "kept no results: its process() returned None for each of the 3 item(s) that succeeded" in flat, flat
    assert list(batchcli.read_results(ran.run_dir)) == []


def test_a_run_where_no_item_succeeded_says_that_not_that_process_returned_none(cli, tmp_path: Path) -> None:
    """Every item failed (its result could not be kept): results said process() returned None for every item."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=1", "-p", "lock_at=0", "-p", "max_retries=0")
    assert ran.exit_code == 1, ran.output
    exported = cli("results", ran.run_dir)
    flat = " ".join(exported.output.split())
    assert exported.exit_code == 0 and "returned None" not in flat, flat
    assert f"kept no results: no item succeeded: 1 failed; list them with: batchcli show {ran.run_dir} --failures" in flat


def test_a_journal_from_before_results_reads_as_none_and_resumes_with_them(cli, tmp_path: Path) -> None:
    """A journal without the results table (an older batchcli) has no results, and resuming it adds the table and keeps new ones."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=6")
    conn = sqlite3.connect(ran.run_dir / "journal.sqlite")
    with conn:
        conn.execute("DROP TABLE results")
        conn.execute("DELETE FROM done_ranges")  # as if killed before anything was journaled
        conn.execute("UPDATE sessions SET status = 'stopped'")
    conn.close()
    assert "kept no results" in cli("results", ran.run_dir).output
    resumed = cli("resume", ran.run_dir)
    assert resumed.exit_code == 0, resumed.output
    assert [r.value for r in batchcli.read_results(ran.run_dir)] == [square(n) for n in range(6)]


def test_bad_inputs_are_one_paragraph_errors_with_the_fix(cli, tmp_path: Path) -> None:
    """An unknown --format and a RUN that is not a run directory exit 2 with the bad value and the fix, no traceback."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=2")
    bad_format = cli("results", ran.run_dir, "--format", "xlsx")
    assert bad_format.exit_code == 2
    assert "'xlsx'" in bad_format.output and "--format jsonl" in bad_format.output and "--format csv" in bad_format.output
    (tmp_path / "plain").mkdir()
    for not_a_run in ("plain", "missing"):
        refused = cli("results", not_a_run)
        assert refused.exit_code == 2, refused.output
        assert repr(not_a_run) in refused.output and "batchcli runs -d OUTPUT_DIR" in refused.output
        assert "Traceback" not in refused.output
    (tmp_path / "notes.txt").write_text("mine\n")
    for under_a_file in ("notes.txt/all.jsonl", "notes.txt/more/all.jsonl"):  # "does not exist" before: it does
        refused = cli("results", ran.run_dir, "-o", under_a_file)
        said = " ".join(refused.output.split())
        assert refused.exit_code == 2 and f"{str(tmp_path / 'notes.txt')!r} is a file, not a directory" in said, said
    missing = cli("results", ran.run_dir, "-o", "nowhere/all.jsonl")
    assert missing.exit_code == 2 and "does not exist. Create it" in " ".join(missing.output.split())
    assert not list(tmp_path.glob("*.jsonl")) and (tmp_path / "notes.txt").read_text() == "mine\n"


def test_run_job_returns_the_results(tmp_path: Path) -> None:
    """batchcli.testing.run_job returns each succeeded item's result, in source order, with ordinal and key."""
    outcome = run_job(WORDS, params={"count": 3}, output_dir=tmp_path)
    assert [(r.ordinal, r.key, r.value) for r in outcome.results] == [(n, f"word-{n}", f"WORD-{n}") for n in range(3)]


def test_the_docs_example_runs_as_shown(cli, tmp_path: Path) -> None:
    """The read_results example in docs/runs.md runs as written against a real run and prints its rows."""
    page = (ROOT / "docs" / "runs.md").read_text(encoding="utf-8")
    section = page.split("## Results", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    ran = cli("exec", ROOT / "examples" / "quickstart.py", "-d", "out", "-p", "count=3", "-p", "failure_rate=0")
    assert ran.exit_code == 0, ran.output
    proc = subprocess.run(
        [sys.executable, "-c", code.replace("RUN_DIR", str(ran.run_dir))],
        capture_output=True, text=True, env=subprocess_env(), timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 {'id': 1, 'name': 'user-1'}" in proc.stdout


def start(tmp_path: Path, name: str, *args: Any) -> subprocess.Popen[bytes]:
    output = open(tmp_path / name, "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "batchcli", *[str(a) for a in args]], stdout=output, stderr=output, env=subprocess_env()
    )


def journaled(out: Path) -> int:
    runs = list(out.glob("*/journal.sqlite")) if out.exists() else []
    try:
        info = read_run(runs[0].parent) if runs else None
    except Exception:
        return 0
    return 0 if info is None else info.succeeded


def wait_for(condition: Any, what: str, limit_s: float = 60) -> None:
    """Poll until ``condition`` holds (the limit only stops a hung test; nothing is asserted about time)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_results_are_exactly_once_after_kill_9_at_random_moments_and_resume(tmp_path: Path) -> None:
    """kill -9 twice at random moments, then resume: each crash left a result for exactly the journaled items, and the end has one per item."""
    count, out, logs = 400, tmp_path / "out", tmp_path / "logs"
    logs.mkdir()
    chance = random.Random()
    args = ["-p", f"count={count}", "-p", f"log_dir={logs}", "-p", "delay_s=0.01", "-p", "concurrency=8"]
    args += ["-p", "rate_limit=300", "-p", "none_every=5", "-p", "point_every=7"]
    proc = start(tmp_path, "first.txt", "exec", SQUARES, "-d", out, *args)
    for session, least in enumerate((chance.randint(20, 80), chance.randint(150, 250))):
        wait_for(lambda: journaled(out) >= least, f"{least} journaled items")
        time.sleep(chance.uniform(0, 0.25))  # anywhere between two flushes, or in the middle of one
        proc.kill()
        proc.wait()
        run_dir = next(out.iterdir())
        done = done_ordinals(run_dir)
        kept = kept_ordinals(run_dir)
        assert len(kept) == len(set(kept))
        assert set(kept) == {n for n in done if n % 5}, f"results and successes disagree after kill {session + 1}"
        proc = start(tmp_path, f"resume-{session}.txt", "resume", run_dir)
    assert proc.wait(timeout=120) == 0
    attempts = sum(len(log.read_text().split()) for log in logs.glob("*.log"))
    assert attempts >= count  # items in flight at a kill were processed again, yet have one result
    results = list(batchcli.read_results(run_dir))
    assert [r.ordinal for r in results] == [n for n in range(count) if n % 5]
    for r in results:
        assert (r.value.x, r.value.y) == (r.ordinal, r.ordinal**2) if r.ordinal % 7 == 0 else r.value == square(r.ordinal)


MEMORY_CHILD = """
import resource, sys
import batchcli
results = batchcli.read_results(sys.argv[1])
first = next(results)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
count = 1 + sum(1 for _ in results)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(count, (after - before) / 1024)
"""


def test_read_results_streams_a_large_run_in_flat_memory(cli, tmp_path: Path) -> None:
    """Reading 200k results back grows peak memory by a few MB at most: rows are fetched in chunks, never all held."""
    count = 200_000
    ran = cli("exec", ROOT / "benchmarks" / "jobs" / "results.py", "-d", "out", "-p", f"count={count}", "-p", "keep=true")
    assert ran.exit_code == 0, ran.output
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(ran.run_dir)], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    read, growth_mb = proc.stdout.split()
    assert int(read) == count
    assert float(growth_mb) < 8, f"peak RSS grew {growth_mb} MB reading {count} results"  # all of them held: ~100 MB


def test_a_reader_left_half_read_is_closed_quietly_by_the_thread_that_collects_it(cli, tmp_path: Path) -> None:
    """A read_results generator left half-read (a notebook's ``next(rows)``) is closed by whichever thread the
    garbage collector runs on, such as a later run's recorder: its connection refused to close there, and Python
    printed "Exception ignored ... SQLite objects created in a thread can only be used in that same thread"."""
    import gc
    import threading

    ran = cli("exec", WORDS, "-d", "out", "-p", "count=5")
    assert ran.exit_code == 0, ran.output
    rows = batchcli.read_results(ran.run_dir)
    assert next(rows).ordinal == 0
    holder = [rows]
    del rows
    ignored: list[BaseException | None] = []
    previous, sys.unraisablehook = sys.unraisablehook, lambda unraisable: ignored.append(unraisable.exc_value)
    try:
        def drop() -> None:
            holder.clear()  # the last reference goes on this thread: the generator is closed here
            gc.collect()

        thread = threading.Thread(target=drop)
        thread.start()
        thread.join()
    finally:
        sys.unraisablehook = previous
    assert ignored == []


def test_a_journal_with_one_row_per_result_still_reads_and_resumes(cli, tmp_path: Path) -> None:
    """A journal written before batch rows (one `results` row per item, as JSON) reads, exports and resumes; old and new rows read together."""
    crashed = cli("exec", WORDS, "-d", "out", "-p", "count=10", "-p", "crash_after=4")
    assert crashed.exit_code == 3, crashed.output
    conn = sqlite3.connect(crashed.run_dir / "journal.sqlite")
    with conn:  # rewrite the journal as batchcli before batch rows wrote it
        old = [(key, ordinal, json.dumps(value)) for ordinal, key, value in
               ((r.ordinal, r.key, r.value) for r in batchcli.read_results(crashed.run_dir))]
        conn.executemany("INSERT INTO results (item, ordinal, value) VALUES (?, ?, ?)", old)
        conn.execute("DROP TABLE result_batches")
    conn.close()
    assert len(old) == 4
    assert jsonl(cli("results", crashed.run_dir).output)[0] == {"ordinal": 0, "key": "word-0", "result": "WORD-0"}
    resumed = cli("resume", crashed.run_dir, "-p", "crash_after=-1")
    assert resumed.exit_code == 0, resumed.output
    results = list(batchcli.read_results(crashed.run_dir))
    assert [(r.ordinal, r.key, r.value) for r in results] == [(n, f"word-{n}", f"WORD-{n}") for n in range(10)]


def test_batch_rows_read_back_sorted_split_and_once_per_item(tmp_path: Path) -> None:
    """A batch's rows come back in ordinal order whatever order items settled in, a straggler gets its own row, an
    item kept twice reads once (the later), and both encodings (a list per batch, one encoding per result) read alike."""
    from array import array
    from marshal import dumps

    from batchcli.journal.batches import (
        BATCHES_TABLE, MARSHAL, SPLIT_GAP, batch_rows, merged, plain_list, write_batch, write_list,
    )

    conn = sqlite3.connect(tmp_path / "j.sqlite")
    conn.executescript(BATCHES_TABLE)
    settled = [5, 3, 7, 2 * SPLIT_GAP + 10, 1]  # out of order, with one item far beyond the others
    write_list(conn, array("q", settled), plain_list([f"v{n}" for n in settled]), None)
    assert conn.execute("SELECT count(*) FROM result_batches").fetchone() == (2,)  # the straggler split off
    write_list(conn, array("q", [6, 4]), plain_list([{"six": 6}, "v4"]), None)
    write_batch(conn, [(4, dumps("again"), None)], keyed=False)  # later: the process executor's kind of row
    encodings = [e for (e,) in conn.execute("SELECT encoding FROM result_batches ORDER BY rowid")]
    assert encodings == [MARSHAL, MARSHAL, PICKLED_LIST, MARSHAL]  # a split batch is written a result at a time
    read = [(o, marshal.loads(v)) for o, _, v, _ in merged(batch_rows(conn))]
    far = 2 * SPLIT_GAP + 10
    assert read == [(1, "v1"), (3, "v3"), (4, "again"), (5, "v5"), (6, {"six": 6}), (7, "v7"), (far, f"v{far}")]


def test_batches_written_as_marshal_lists_by_an_older_batchcli_read_the_same(cli, tmp_path: Path) -> None:
    """Journals from before the pickled lists hold the same batches as marshal lists (``LIST``, ``LISTS``): a run's
    rows rewritten in those forms (a row's first half of lists one ``LIST`` row each, the rest one ``LISTS`` row)
    read back and export exactly as they did."""
    from batchcli.journal.batches import LIST, LISTS, plain_values

    ran = cli("exec", BATCHED, "-d", "out", "-p", "count=3000", "-p", "concurrency=50", "-p", "jitter_ms=1")
    assert ran.exit_code == 0, ran.output
    before = [(r.ordinal, r.value) for r in batchcli.read_results(ran.run_dir)]
    assert before == [(n, {"n": n}) for n in range(3000)]
    exported = cli("results", ran.run_dir).output
    conn = sqlite3.connect(ran.run_dir / "journal.sqlite")
    with conn:
        rows = conn.execute("SELECT rowid, ordinals, sizes, data FROM result_batches WHERE encoding = ?", (PICKLED_LISTS,))
        for rowid, packed, sizes, data in rows.fetchall():
            ordinals, lengths = array("q"), array("q")
            ordinals.frombytes(packed)
            lengths.frombytes(sizes)
            lists, offset = [], 0
            for size in lengths:
                values = plain_values(data[offset : offset + size])
                lists.append((ordinals[: len(values)], marshal.dumps(values, 4)))
                del ordinals[: len(values)]
                offset += size
            assert len(lists) > 2, "a flush of a few lists at least"
            half = len(lists) // 2
            conn.execute("DELETE FROM result_batches WHERE rowid = ?", (rowid,))
            for numbers, encoded in lists[:half]:
                conn.execute(
                    "INSERT INTO result_batches VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (min(numbers), max(numbers), LIST, numbers.tobytes(), b"", encoded),
                )
            rest = array("q", [n for numbers, _ in lists[half:] for n in numbers])
            conn.execute(
                "INSERT INTO result_batches VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (min(rest), max(rest), LISTS, rest.tobytes(), array("q", [len(e) for _, e in lists[half:]]).tobytes(),
                 b"".join(e for _, e in lists[half:])),
            )  # fmt: skip
        encodings = {e for (e,) in conn.execute("SELECT encoding FROM result_batches")}
        assert encodings == {LIST, LISTS}, encodings
    conn.close()
    assert [(r.ordinal, r.value) for r in batchcli.read_results(ran.run_dir)] == before
    assert cli("results", ran.run_dir).output == exported


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE result_batches SET ordinals = substr(ordinals, 1, 16)",  # fewer ordinals than results
        "UPDATE result_batches SET ordinals = 'text'",  # not an array at all
        "UPDATE result_batches SET sizes = x'ffffffffffffff7f'",  # sizes that do not cut the data
        "UPDATE result_batches SET keys = NULL, data = substr(data, 1, 40)",  # a cut pickle
    ],
)
def test_a_batch_row_edited_by_hand_reads_as_a_damaged_journal(cli, edit: str) -> None:
    """A batch row whose parts disagree gave an IndexError or TypeError traceback, or dropped results silently with
    exit 0; it reads as a damaged journal (exit 2, the reason named), in the export and in Python."""
    ran = cli("exec", BATCHED, "-d", "out", "-p", "count=50")
    assert ran.exit_code == 0, ran.output
    conn = sqlite3.connect(ran.run_dir / "journal.sqlite")
    with conn:
        conn.execute(edit)
    conn.close()
    out = cli("results", ran.run_dir)
    said = " ".join(out.output.split())
    assert out.exit_code == 2 and "is damaged (a batch of results cannot be read" in said, said
    assert "Traceback" not in said
    with pytest.raises(JournalError, match="cannot be read"):
        list(batchcli.read_results(ran.run_dir))


def test_a_batch_of_results_that_names_a_function_is_refused_unrun(cli, tmp_path: Path) -> None:
    """A batch row holds a pickle of built-in types only, and is read with no class or function allowed: one altered
    to call a function when loaded (here, to create a file) reads as a damaged journal, and the function never runs."""

    class Opens:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(tmp_path / "ran"), "w"))

    ran = cli("exec", BATCHED, "-d", "out", "-p", "count=50")
    assert ran.exit_code == 0, ran.output
    conn = sqlite3.connect(ran.run_dir / "journal.sqlite")
    with conn:
        data = pickle.dumps([Opens()] * 50, 5)
        conn.execute("UPDATE result_batches SET sizes = ?, data = ?", (array("q", [len(data)]).tobytes(), data))
    conn.close()
    for reader in ("results", "read_results"):
        if reader == "results":
            out = cli("results", ran.run_dir)
            assert out.exit_code == 2, out.output
            message = " ".join(out.output.split())
        else:
            with pytest.raises(JournalError) as raised:
                list(batchcli.read_results(ran.run_dir))
            message = str(raised.value)
        assert "is damaged" in message and "which plain data never does" in message, message
        assert "Traceback" not in message
    assert not (tmp_path / "ran").exists()


def test_keyed_batches_keep_each_key_with_its_result(tmp_path: Path) -> None:
    """A batch encoded as one list carries its items' keys in the same order, settled out of order or not."""
    from array import array

    from batchcli.journal.batches import BATCHES_TABLE, batch_rows, plain_list, write_list

    conn = sqlite3.connect(tmp_path / "j.sqlite")
    conn.executescript(BATCHES_TABLE)
    write_list(conn, array("q", [2, 0, 1]), plain_list(["c", "a", "b"]), ["k2", "k0", "k1"])
    assert [(o, k, marshal.loads(v)) for o, k, v, _ in batch_rows(conn)] == [(0, "k0", "a"), (1, "k1", "b"), (2, "k2", "c")]


@pytest.mark.parametrize("keyed", [False, True])
def test_the_batches_of_a_flush_go_as_one_row_and_read_back_in_order(tmp_path: Path, keyed: bool) -> None:
    """The lists one flush took are one row, read back sorted whether their items settled in order or not (each
    with its key), at most ``LISTS_BATCHES_MAX`` lists a row; lists whose items lie far apart keep rows of their own."""
    from array import array

    from batchcli.journal.batches import BATCHES_TABLE, LISTS_BATCHES_MAX, SPLIT_GAP, batch_rows, plain_list, write_sealed

    conn = sqlite3.connect(tmp_path / "j.sqlite")
    conn.executescript(BATCHES_TABLE)

    def batch(ordinals: list[int]) -> tuple[array[int], bytes, list[str] | None, int, int]:
        keys = [f"k{n}" for n in ordinals] if keyed else None
        return array("q", ordinals), plain_list([{"n": n} for n in ordinals]), keys, min(ordinals), max(ordinals)

    in_order = [batch(list(range(start, start + 10))) for start in range(0, 30, 10)]
    shuffled = [batch([35, 31, 30]), batch([33, 34, 32, 36])]
    many = [batch([100 + n]) for n in range(LISTS_BATCHES_MAX + 1)]
    far = [batch([300]), batch([300 + 2 * SPLIT_GAP])]
    for flush in (in_order, shuffled, many, far):
        write_sealed(conn, flush)
    rows = conn.execute("SELECT encoding, length(sizes) / 8 FROM result_batches ORDER BY rowid").fetchall()
    assert rows == [
        (PICKLED_LISTS, 3), (PICKLED_LISTS, 2), (PICKLED_LISTS, LISTS_BATCHES_MAX),
        (PICKLED_LIST, 0), (PICKLED_LIST, 0), (PICKLED_LIST, 0),
    ]  # fmt: skip
    expected = [*range(37), *range(100, 101 + LISTS_BATCHES_MAX), 300, 300 + 2 * SPLIT_GAP]
    read = [(o, k, marshal.loads(v)) for o, k, v, _ in batch_rows(conn)]
    assert read == [(n, f"k{n}" if keyed else None, {"n": n}) for n in expected]


def test_a_long_export_to_a_file_counts_what_it_wrote_on_a_terminal(cli, tmp_path: Path) -> None:
    """``results -o FILE`` in a terminal shows how many results it has written while it writes them (millions take
    seconds), then the file holds every one and the count is said once more."""
    import pexpect

    count = 20_000  # more than one progress step (PROGRESS_EVERY)
    ran = cli("exec", SQUARES, "-d", "out", "-p", f"count={count}")
    assert ran.exit_code == 0, ran.output
    child = pexpect.spawn(
        sys.executable, ["-m", "batchcli", "results", str(ran.run_dir), "-o", str(tmp_path / "all.jsonl")],
        env=subprocess_env(TERM="xterm"), dimensions=(24, 200), encoding="utf-8", timeout=60,
    )  # fmt: skip
    child.expect(pexpect.EOF)
    child.close()
    shown = str(child.before)
    assert child.exitstatus == 0, shown
    assert "16,384 so far" in shown
    assert f"Wrote {count:,} result(s)" in shown
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    assert len(lines) == count and json.loads(lines[-1])["ordinal"] == count - 1


def results_cli(*args: Any, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchcli", "results", *map(str, args)], text=True,
                          env=env or subprocess_env(), timeout=60, **kwargs)  # fmt: skip


def test_export_to_a_pipe_writes_into_it_instead_of_replacing_it(cli, tmp_path: Path) -> None:
    """-o naming a FIFO (or a device such as /dev/null) is written in place, as a shell redirection does: the
    export used to write a file beside it and rename it over it, so the reader got nothing (and, run as root,
    -o /dev/null replaced the device with a file)."""
    import os
    import stat
    import threading

    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=300")
    assert ran.exit_code == 0, ran.output
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(fifo.read_text().splitlines()), daemon=True)
    reader.start()
    exported = results_cli(ran.run_dir, "-o", fifo, capture_output=True)
    reader.join(timeout=30)
    assert exported.returncode == 0, exported.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [json.loads(line)["ordinal"] for line in got] == list(range(300))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".results.fifo")) == []


def test_the_draft_of_an_export_killed_with_sigkill_is_removed_by_the_next_export(cli, tmp_path: Path) -> None:
    """``kill -9`` during ``results -o FILE`` left its hidden draft (up to the whole export) for good. The next export
    of FILE removes it; a draft of a process still running, or of another machine (a shared disk), stays."""
    import os
    import signal
    import socket

    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=20000")
    assert ran.exit_code == 0, ran.output
    target = tmp_path / "all.jsonl"
    drafts = lambda: sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".all.jsonl."))  # noqa: E731
    export = subprocess.Popen([sys.executable, "-m", "batchcli", "results", str(ran.run_dir), "-o", str(target)],
                              env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    while not drafts() and export.poll() is None:
        time.sleep(0.001)
    export.send_signal(signal.SIGKILL)
    export.wait(timeout=30)
    if export.returncode != -signal.SIGKILL:
        pytest.skip("the export finished before its draft was seen")
    (killed,) = drafts()
    assert not target.exists() and killed.startswith(f".all.jsonl.{socket.gethostname()}.{export.pid}.")
    live = tmp_path / f".all.jsonl.{socket.gethostname()}.{os.getpid()}.draft"
    elsewhere = tmp_path / f".all.jsonl.another-host.{export.pid}.draft"
    live.write_text("being written\n")
    elsewhere.write_text("being written\n")
    exported = results_cli(ran.run_dir, "-o", target, capture_output=True)
    assert exported.returncode == 0, exported.stderr
    assert len(target.read_text().splitlines()) == 20000
    assert drafts() == sorted([live.name, elsewhere.name])


def test_an_export_into_the_run_directory_is_refused_and_the_journal_kept(cli, tmp_path: Path) -> None:
    """-o naming one of the run's own files (its journal held the results being exported) replaced it with the
    export, and the run could never be shown, resumed or exported again."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=30")
    assert ran.exit_code == 0, ran.output
    run_dir = ran.run_dir
    journal = (run_dir / "journal.sqlite").read_bytes()
    for inside in (run_dir / "journal.sqlite", run_dir / "failed.jsonl", run_dir / "new.jsonl", run_dir / ".." / run_dir.name / "summary.json"):
        refused = results_cli(run_dir, "-o", inside, capture_output=True)
        flat = " ".join(refused.stderr.split())
        assert refused.returncode == 2 and "is inside the run directory" in flat and "Traceback" not in flat, refused.stderr
    assert (run_dir / "journal.sqlite").read_bytes() == journal
    assert not (run_dir / "new.jsonl").exists()
    assert len(list(batchcli.read_results(run_dir))) == 30
    # -o the run directory itself: the example given is a file outside it (it was one inside, refused in turn).
    refused = results_cli(run_dir, "-o", run_dir, capture_output=True)
    flat = " ".join(refused.stderr.split())
    assert refused.returncode == 2 and "is a directory. Give -o a file name, e.g. -o results.jsonl." in flat, refused.stderr


def test_an_export_into_another_runs_directory_is_refused_and_its_files_kept(cli, tmp_path: Path) -> None:
    """-o another run's journal.sqlite or summary.json printed "Wrote 30 result(s)" and replaced that run's record
    with the export: the other run was damaged and could never be resumed."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=30")
    other = cli("exec", SQUARES, "-d", "out", "-p", "count=5")
    assert ran.exit_code == other.exit_code == 0, other.output
    kept = {name: (other.run_dir / name).read_bytes() for name in ("journal.sqlite", "summary.json")}
    (tmp_path / "link").symlink_to(other.run_dir)
    for inside in (other.run_dir / "journal.sqlite", other.run_dir / "summary.json", tmp_path / "link" / "new.jsonl"):
        refused = cli("results", ran.run_dir, "-o", inside)
        flat = " ".join(refused.output.split())
        assert refused.exit_code == 2 and "Traceback" not in flat, refused.output
        assert f"is inside the run directory '{other.run_dir}' of another run, whose files are batchcli's" in flat, flat
        assert "Write the export outside it, e.g. -o results.jsonl." in flat, flat
    assert {name: (other.run_dir / name).read_bytes() for name in kept} == kept
    assert not (other.run_dir / "new.jsonl").exists()
    assert cli("results", ran.run_dir, "-o", tmp_path / "out" / "all.jsonl").exit_code == 0  # beside the runs: fine


def test_the_results_of_a_run_that_has_not_finished_say_so(cli, tmp_path: Path) -> None:
    """`results` of a stopped run wrote what it had with exit 0 and no word that items were missing (a group's
    export warned); it now says the run's state, how many items are left and how to finish them."""
    import signal

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(SQUARES), "-d", str(out), "-p", "count=400", "-p", "delay_s=0.05",
         "-p", "concurrency=4"],
        env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("*/journal.sqlite")) or not any(True for _ in batchcli.read_results(next(out.glob("*")))):
            assert time.monotonic() < deadline, "no result was journaled"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_dir,) = out.glob("*")
    kept = len(list(batchcli.read_results(run_dir)))
    exported = results_cli(run_dir, capture_output=True)
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == kept
    said = " ".join(exported.stderr.split())
    assert f"Warning: Run '{run_dir}' stopped, {400 - kept:,} item(s) not processed yet" in said, exported.stderr
    assert f"batchcli resume {run_dir}" in said
    finished = cli("exec", SQUARES, "-d", "out", "-p", "count=3")
    assert "Warning" not in results_cli(finished.run_dir, capture_output=True).stderr


def test_dash_as_the_output_is_stdout(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o -` wrote a file named "-"; it is stdout, as for most tools."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=3")
    monkeypatch.chdir(tmp_path)
    exported = cli("results", ran.run_dir, "-o", "-")
    assert exported.exit_code == 0, exported.output
    assert [row["ordinal"] for row in jsonl(exported.output)] == [0, 1, 2]
    assert not (tmp_path / "-").exists()


def test_an_empty_output_name_is_refused_as_such(cli) -> None:
    """-o '' was read as '.', and refused as "-o '.' is a directory", a name the user never gave."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=3")
    refused = cli("results", ran.run_dir, "-o", "")
    flat = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "-o '' names no file" in flat and "'.'" not in flat, refused.output


def test_an_export_keeps_the_mode_of_the_file_it_replaces_and_a_new_one_gets_the_umask(cli, tmp_path: Path) -> None:
    """As ``> FILE`` does: the export is drafted owner-only and renamed, and the rename used to leave every export
    0600, so a results file shared with a team (0644, 0640) stopped being readable by it after the next export."""
    import os
    import stat

    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=50")
    assert ran.exit_code == 0, ran.output
    shared = tmp_path / "shared.csv"
    shared.write_text("the last export\n")
    shared.chmod(0o640)
    exported = results_cli(ran.run_dir, "--format", "csv", "-o", shared, capture_output=True)
    assert exported.returncode == 0, exported.stderr
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o640
    assert shared.read_text().splitlines()[0] == "ordinal,result"

    fresh = tmp_path / "fresh.jsonl"
    made = results_cli(ran.run_dir, "-o", fresh, capture_output=True, preexec_fn=lambda: os.umask(0o027))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o640  # 0666 under the umask 027
    assert len(fresh.read_text().splitlines()) == 50


def test_an_export_that_runs_out_of_space_says_so_and_leaves_the_file_as_it_was(cli, tmp_path: Path) -> None:
    """A write that fails (here the file-size limit, EFBIG; a full disk is ENOSPC): one paragraph, exit 1, the old
    file untouched and no draft left; on stdout too. It used to report success for a device and a traceback for stdout."""
    import resource

    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=20000")
    assert ran.exit_code == 0, ran.output
    old = tmp_path / "results.jsonl"
    old.write_text("the last export\n")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # the export needs about 800 KB

    # No bytecode written under the limit: a .pyc cut short there would be read by every later child of the session.
    limited = subprocess_env(PYTHONDONTWRITEBYTECODE="1")
    exported = results_cli(ran.run_dir, "-o", old, capture_output=True, preexec_fn=small_files, env=limited)
    assert exported.returncode == 1, exported.stderr
    assert "Error: Cannot write the results to" in exported.stderr and "File too large" in exported.stderr
    assert "is as it was" in exported.stderr and "Traceback" not in exported.stderr
    assert old.read_text() == "the last export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".results.jsonl")] == []

    with open("/dev/full", "w") as full:
        to_stdout = results_cli(ran.run_dir, stdout=full, stderr=subprocess.PIPE)
    assert to_stdout.returncode == 1
    assert "Cannot write the results to stdout (No space left on device)" in to_stdout.stderr
    assert "Traceback" not in to_stdout.stderr, to_stdout.stderr


def test_results_settling_out_of_order_in_many_batches_read_back_once_each_in_order(cli, tmp_path: Path) -> None:
    """Items that settle out of source order, fast enough that a flush takes several batches: the journal holds them
    as rows of several lists, and every result reads back once, in source order, in Python and in the export."""
    ran = cli("exec", BATCHED, "-d", "out", "-p", "count=6000", "-p", "concurrency=50", "-p", "jitter_ms=2")
    assert ran.exit_code == 0, ran.output
    rows = journal_rows(ran.run_dir, f"SELECT ordinals FROM result_batches WHERE encoding = {PICKLED_LISTS} AND length(sizes) > 8")
    unsorted = [r for (packed,) in rows if (r := array("q", packed)) != array("q", sorted(r))]
    assert unsorted, "no row of several batches held items that settled out of order"
    assert [(r.ordinal, r.value) for r in batchcli.read_results(ran.run_dir)] == [(n, {"n": n}) for n in range(6000)]
    exported = jsonl(cli("results", ran.run_dir).output)
    assert exported == [{"ordinal": n, "result": {"n": n}} for n in range(6000)]


def test_ctrl_c_or_sigterm_ends_an_export_at_once_with_one_line(cli, tmp_path: Path) -> None:
    """`results` stopped by Ctrl-C (exit 130), SIGTERM (143) or SIGHUP (129) ends at once, with a line that says what
    it left. The start-up handler used to keep the first two until the export ended on its own: blocked on a pipe its
    reader had stopped reading, never; a long one at its end, with exit 0."""
    import os
    import signal

    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=5000")  # about 200 KB: more than a pipe holds
    assert ran.exit_code == 0, ran.output
    command = [sys.executable, "-m", "batchcli", "results", str(ran.run_dir)]

    def terminal_defaults() -> None:
        """As a command typed at a terminal starts: this suite may run under nohup (SIGHUP ignored, and inherited)."""
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    for signum in (signal.SIGINT, signal.SIGHUP):  # SIGHUP (a closed terminal) used to kill it, leaving a -o draft
        to_stdout = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=subprocess_env(), preexec_fn=terminal_defaults)  # fmt: skip
        assert to_stdout.stdout is not None and to_stdout.stderr is not None
        assert to_stdout.stdout.readline().startswith('{"ordinal": 0,')  # then nobody reads: the export blocks
        to_stdout.send_signal(signum)
        assert to_stdout.wait(timeout=30) == 128 + signum
        said = to_stdout.stderr.read()
        assert f"Stopped: {signum.name} ended `batchcli results` before it finished; stdout got only part" in said, said
        assert "Traceback" not in said

    # Under nohup (SIGHUP ignored) the command is meant to outlive its terminal: the export goes on to the end.
    nohup = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # fmt: skip
    assert nohup.stdout is not None
    assert nohup.stdout.readline().startswith('{"ordinal": 0,')
    nohup.send_signal(signal.SIGHUP)
    rest = nohup.stdout.read()  # what readline() buffered too: communicate() would read past it
    assert nohup.wait(timeout=30) == 0 and len(rest.splitlines()) == 4999, nohup.communicate()[1]

    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        to_fifo = subprocess.Popen([*command, "-o", str(fifo)], stderr=subprocess.PIPE, text=True, env=subprocess_env())
        deadline = time.monotonic() + 30
        while True:  # the first results arrive, then nobody reads
            try:
                if os.read(reader, 100):
                    break
            except BlockingIOError:
                pass
            assert time.monotonic() < deadline, "the export wrote nothing into the FIFO"
            time.sleep(0.05)
        to_fifo.send_signal(signal.SIGTERM)
        assert to_fifo.wait(timeout=30) == 143
    finally:
        os.close(reader)
    said = " ".join(to_fifo.communicate()[1].split())
    assert f"Stopped: SIGTERM ended `batchcli results` before it finished; {str(fifo)!r} got only part" in said, said
    assert "Traceback" not in said


SURROGATE_JOB = """
from batchcli import Service, Source, inject


@inject
class Names(Source[str]):
    def __iter__(self):
        return iter(["plain.txt", "caf\\udce9.txt"])

    def item_key(self, item: str) -> str:
        return item


@inject
class Renamed(Service[str]):
    async def process(self, item: str) -> str:
        return "new-" + item  # a file name os.fsdecode made of the bytes caf\\xe9.txt: a lone surrogate
"""


def test_results_holding_a_lone_surrogate_export_with_it_escaped(cli, tmp_path: Path) -> None:
    """A result (and a key) decoded with surrogateescape, as os.listdir gives a non-UTF-8 file name, was kept, and
    its export died with batchcli's UnicodeEncodeError traceback: now the surrogate is written as its escape, as
    failed.jsonl writes such an input."""
    job = tmp_path / "names.py"
    job.write_text(SURROGATE_JOB)
    ran = cli("exec", job, "-d", "out")
    assert ran.exit_code == 0, ran.output
    assert cli("results", ran.run_dir, "-o", tmp_path / "r.jsonl").exit_code == 0
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    # The key is kept escaped (as the journal keeps such a key); the result's JSON escape reads back as the surrogate.
    assert rows[1] == {"ordinal": 1, "key": "caf\\udce9.txt", "result": "new-caf\udce9.txt"}
    assert cli("results", ran.run_dir, "-f", "csv", "-o", tmp_path / "r.csv").exit_code == 0
    assert list(csv.reader(io.StringIO((tmp_path / "r.csv").read_text(encoding="utf-8"))))[2] == [
        "1", "caf\\udce9.txt", "new-caf\\udce9.txt"
    ]  # fmt: skip


@pytest.mark.parametrize("executor", ["async", "process"])
def test_values_that_lend_out_their_memory_come_back_as_themselves_not_as_bytes(cli, tmp_path: Path, executor: str) -> None:
    """marshal writes any object with a buffer (an array.array, a numpy value) as bytes: such results were kept as
    their raw memory, and read_results gave back b'\\x00\\x00...' for a float array. They are pickled now."""
    ran = cli("exec", PROJECT / "buffers.py", "-d", "out", "-p", "count=30", "-p", f"executor={executor}")
    assert ran.exit_code == 0, ran.output
    values = {r.ordinal: r.value for r in batchcli.read_results(ran.run_dir)}
    assert len(values) == 30
    for n, value in values.items():
        if n % 3 == 0:
            assert type(value) is array and value == array("d", [n, n + 0.5]), value
        elif n % 3 == 1:
            assert value["n"] == n and type(value["values"]) is array and value["values"] == array("q", [n]), value
        else:  # as bytes, as a result kept on its own (marshal) comes back, whichever path it took
            assert value == {"n": n, "raw": b"%d" % n} and type(value["raw"]) is bytes, value


@pytest.mark.parametrize("executor", ["async", "process"])
def test_values_that_only_look_like_plain_data_are_kept_as_themselves_or_refused(cli, tmp_path: Path, executor: str) -> None:
    """A bytes subclass equals its bytes, and an array nested 1,500 deep is past what a comparison goes: reading the
    encoding back let both through as marshal wrote them (bytes, the array's raw memory). The type of every object is
    checked now: the subclass is pickled and comes back as itself; the deep array, which nothing else can keep that
    deep, fails its item; plain values (a list as deep, a complex number, a memoryview of bytes) are kept."""

    def innermost(value: Any) -> Any:
        while type(value) is list:
            value = value[0]
        return value

    ran = cli("exec", PROJECT / "lookalikes.py", "-d", "out", "-p", "count=12", "-p", f"executor={executor}", "-p", "max_retries=0")
    assert ran.exit_code == 1, ran.output
    assert (ran.summary["succeeded"], ran.summary["failed"]) == (10, 2)
    failed = [json.loads(line) for line in (ran.run_dir / "failed.jsonl").read_text().splitlines()]
    assert sorted((f["ordinal"], f["error_type"]) for f in failed) == [(n, "batchcli.journal.results.UnkeepableResult") for n in (2, 8)]
    values = {r.ordinal: r.value for r in batchcli.read_results(ran.run_dir)}
    for n in (0, 6):
        assert type(values[n]).__name__ == "Tagged" and values[n] == b"tag%d" % n, values[n]
    for n in (1, 7):
        assert type(values[n]["tag"]).__name__ == "Tagged" and values[n] == {"n": n, "tag": b"tag"}, values[n]
    assert innermost(values[3]) == 3 and innermost(values[9]) == 9
    assert values[4] == complex(4, 1) and values[10] == complex(10, 1)
    assert values[5] == {"n": 5, "view": b"view"} and type(values[5]["view"]) is bytes


@pytest.mark.parametrize(("keys", "nested", "executor"), [("str", False, "async"), ("int", True, "async"), ("str", True, "process")])
def test_keys_that_are_str_or_int_enum_members_are_kept_as_their_values(cli, keys: str, nested: bool, executor: str) -> None:
    """An ``item_key`` returning a StrEnum or IntEnum member (a str, an int, as the docs ask): marshal refused the
    batch of keys, so every session crashed with nothing recorded, resumes too. They are journaled as their values."""
    ran = cli(
        "exec", PROJECT / "enum_keys.py", "-d", "out", "-p", f"keys={keys}", "-p", f"nested={nested}",
        "-p", f"executor={executor}",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    expected = ["eu", "us", "asia"] if keys == "str" else [1, 2]
    rows = [(r.key, r.value) for r in batchcli.read_results(ran.run_dir)]
    assert rows == [(k, {"value": k, "seen": [k]} if nested else {"value": k}) for k in expected], rows
    assert [type(key) for key, _ in rows] == [type(expected[0])] * len(expected)
    exported = jsonl(cli("results", ran.run_dir).output)
    assert [row["key"] for row in exported] == expected
    again = cli("resume", ran.run_dir)  # every key settled: nothing to do
    assert again.exit_code == 0 and read_run(ran.run_dir).succeeded == len(expected), again.output


def test_a_value_nested_deeper_than_marshal_goes_under_a_raised_recursion_limit_is_kept(run_batchcli, tmp_path: Path) -> None:
    """A job that raised the recursion limit returned flat dicts holding a tuple 2,500 levels deep: pickle took their
    batch, and reading, which marshals each value (2,000 levels at most), read the journal as damaged from there on
    (and a batch split for far-apart ordinals, marshalled value by value when written, failed every flush). Such a
    batch is kept result by result now, the deep values as JSON, and every row exports."""
    count, every = 3000, 1000
    ran = run_batchcli(
        "exec", PROJECT / "deep_chain.py", "-d", tmp_path / "out", "--no-shell", "-p", f"count={count}",
        "-p", f"deep_every={every}",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    exported = run_batchcli("results", ran.run_dir, "-o", tmp_path / "r.jsonl")
    assert exported.exit_code == 0, exported.output
    deep = [n for n in range(count) if n > 1000 and n % every == every // 2]
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == count
    for n, line in enumerate(lines):
        if n in deep:  # 2,500 levels of JSON lists: deeper than this process parses
            assert line.startswith(f'{{"ordinal": {n}, "result": {{"n":{n},"chain":[2499,[2498,'), line[:80]
            assert line.count("[") == 2500
        else:
            assert json.loads(line) == {"ordinal": n, "result": {"n": n}}
    # read_results here, under the default recursion limit: the deep one is named (it was a bare RecursionError),
    # and read under a limit raised as the job's was
    reading = batchcli.read_results(ran.run_dir)
    assert [r.value for _, r in zip(range(deep[0]), reading)] == [{"n": n} for n in range(deep[0])]
    with pytest.raises(UnreadableResult, match=rf"item #{deep[0]} .* nested deeper than this process reads"):
        next(reading)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        value = next(r.value for r in batchcli.read_results(ran.run_dir) if r.ordinal == deep[0])
    finally:
        sys.setrecursionlimit(limit)
    assert value["n"] == deep[0] and value["chain"][0] == 2499


@pytest.mark.parametrize("char", ["x", "é"])
def test_a_result_too_large_for_the_journal_fails_its_item_and_the_run_goes_on(cli, tmp_path: Path, monkeypatch, char: str) -> None:
    """A result past SQLite's limit on a row (1 GB) failed every flush as if the disk were full: the run stopped,
    and every resume stopped the same way. It fails its own item now, naming its size (the limit lowered here: the
    same check, without a gigabyte); a str is measured in UTF-8 bytes."""
    monkeypatch.setattr("batchcli.journal.results.RESULT_BYTES_MAX", 1_000_000)
    # Below it, as the real 64 MB is below 900 MB: a batch that large is kept result by result, each one measured.
    monkeypatch.setattr("batchcli.executors.asyncpool.SEAL_ROW_MAX", 500_000)
    size = 600_000  # 600,000 bytes as "x", 1.2 MB as "é"
    ran = cli("exec", PROJECT / "large.py", "-d", "out", "-p", f"size={size}", "-p", f"char={char}", "-p", "max_retries=0")
    if char == "x":
        assert ran.exit_code == 0, ran.output
        assert len([r for r in batchcli.read_results(ran.run_dir)]) == 5
        return
    assert ran.exit_code == 1, ran.output
    assert ran.summary["succeeded"] == 4 and ran.summary["failed"] == 1 and ran.summary["status"] == "finished"
    [failure] = ran.failed
    assert failure["ordinal"] == 2 and failure["error_type"] == "batchcli.journal.results.UnkeepableResult"
    assert "too large to keep: 1,200,0" in failure["error_message"], failure["error_message"]
    assert [r.ordinal for r in batchcli.read_results(ran.run_dir)] == [0, 1, 3, 4]


@pytest.mark.parametrize(
    "command",
    [["results", "{run}"], ["show", "{run}"], ["show", "{run}", "--failures"], ["runs", "-d", "out"], ["watch", "{run}"],
     ["exec", str(SQUARES), "--dry-run"]],
    ids=["results", "show", "show-failures", "runs", "watch", "dry-run"],
)  # fmt: skip
def test_a_reader_that_stops_reading_early_ends_the_command_quietly_with_exit_0(cli, tmp_path: Path, command: list[str]) -> None:
    """`batchcli results RUN | head -1` (and show, runs, watch, a dry run): exit 0 and nothing on stderr, not exit 1
    (the code for failed items, which a pipefail script took for a failure) nor a BrokenPipeError."""
    ran = cli("exec", SQUARES, "-d", "out", "-p", "count=20000")  # its export is far more than a pipe holds
    assert ran.exit_code == 0, ran.output
    args = [part.format(run=ran.run_dir) for part in command]
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchcli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env()
    )
    assert proc.stdout is not None and proc.stderr is not None
    if command[0] == "results":
        assert json.loads(proc.stdout.readline()) == {"ordinal": 0, "result": square(0)}  # as `head -1` reads
    proc.stdout.close()  # no reader is left: whatever the command writes from here on meets a broken pipe
    errors = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, errors
    assert errors == ""


@pytest.mark.parametrize(
    "command", [["--help"], ["exec", "--help"], ["exec", str(SQUARES), "--help"], ["results", "--help"]],
    ids=["batchcli", "exec", "a-job", "results"],
)  # fmt: skip
def test_help_whose_reader_has_left_ends_quietly_with_exit_0(command: list[str]) -> None:
    """`batchcli --help | head -1`, the reader gone before the help is written: typer's own console (rich) ended the
    command with exit 1, the code for failed items, where every other command ends with 0 (``ReaderLeft``)."""
    read, write = os.pipe()
    os.close(read)  # no reader from the start: the first write of the help meets a broken pipe
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "batchcli", *command], stdout=write, stderr=subprocess.PIPE, env=subprocess_env(),
            timeout=60,
        )  # fmt: skip
    finally:
        os.close(write)
    assert proc.returncode == 0 and proc.stderr.decode() == "", proc.stderr.decode()
