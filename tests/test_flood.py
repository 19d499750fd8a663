"""A flood of failures: the console shows them grouped with a bounded sample; files keep every one."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest
from conftest import PROJECTS, subprocess_env
from joblog import JobLog
from rich.console import Console
from test_resume import journaled, wait_for

from batchcli.journal.records import failure_line, row_lines
from batchcli.journal.rundir import query, read_run
from batchcli.outcome import FAILURES, Failure, FailureBatch, Tally, failure_text
from batchcli.run.failures import FailureReport
from batchcli.run.logs import FORMAT, RunFileHandler

FLOOD = PROJECTS / "flood" / "flood.py"
INDIVIDUAL = re.compile(r"^failed Item #\d+ ", re.M)
MORE = re.compile(r"^failed (.+?) \.\.\. and ([\d,]+) more like this \(see batchcli\.log\)$", re.M)


def more_counts(output: str) -> dict[str, int]:
    """The "... and N more like this" counts of each group, summed over the run."""
    counts: dict[str, int] = {}
    for label, number in MORE.findall(output):
        counts[label] = counts.get(label, 0) + int(number.replace(",", ""))
    return counts


def test_a_flood_prints_a_bounded_sample_then_how_many_more(run_batchcli: Any) -> None:
    """5,000 failures print a few individual lines and "... and N more like this", which add up to every failure."""
    result = run_batchcli("exec", FLOOD, "-d", "out", "-p", "count=5000", "-p", "max_retries=0", "-p", "breaker_window=0")
    assert result.exit_code == 1, result.output
    shown = len(INDIVIDUAL.findall(result.output))
    more = more_counts(result.output)
    assert 1 <= shown <= 60, result.output[-3000:]
    assert more == {"ValueError: record N is malformed": 5000 - shown}
    assert "  failed 5,000 × ValueError: record N is malformed" in result.output
    assert len(result.output.splitlines()) < 200


def test_every_failure_of_a_flood_reaches_the_log_failed_jsonl_and_the_journal(run_batchcli: Any, cli: Any) -> None:
    """batchcli.log holds each of 5,000 failures with its traceback; failed.jsonl, summary.json and show count them all."""
    result = run_batchcli("exec", FLOOD, "-d", "out", "-p", "count=5000", "-p", "max_retries=0", "-p", "breaker_window=0")
    assert result.exit_code == 1 and result.run_dir is not None
    log = (result.run_dir / "batchcli.log").read_text()
    items = re.findall(r"^\S+ \S+ ERROR    batchcli\.failures: Item #(\d+) \((\d+)\) failed after 1 attempt: ValueError: record \2 is malformed$", log, re.M)
    assert sorted(int(o) for o, _ in items) == list(range(5000))
    assert log.count("Traceback (most recent call last):") == 5000
    assert log.count('raise ValueError(f"record {item} is malformed")') == 5000
    assert sorted(r["ordinal"] for r in result.failed) == list(range(5000))
    assert result.summary["failed"] == 5000
    shown = " ".join(cli("show", result.run_dir).output.split())
    assert "Failures: 5,000, by error (1 kind)" in shown
    assert "5,000 ValueError: record N is malformed" in shown


def test_two_error_types_make_two_groups_with_their_counts(run_batchcli: Any) -> None:
    """A flood of two errors shows two groups whose counts and "... and N more" lines add up per group."""
    result = run_batchcli("exec", FLOOD, "-d", "out", "-p", "count=3000", "-p", "max_retries=0", "-p", "breaker_window=0", "-p", "mix=true")
    assert result.exit_code == 1, result.output
    assert "  failed 2,000 × ValueError: record N is malformed" in result.output
    assert "  failed 1,000 × KeyError: 'region N'" in result.output
    individual = INDIVIDUAL.findall(result.output)
    lines = [line for line in result.output.splitlines() if INDIVIDUAL.match(line)]
    keys = sum("KeyError" in line for line in lines)
    more = more_counts(result.output)
    assert more.get("KeyError: 'region N'", 0) + keys == 1000
    assert more.get("ValueError: record N is malformed", 0) + len(individual) - keys == 2000
    assert result.summary["failed"] == 3000


def test_the_live_display_groups_a_flood_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal the live display shows the group's count and the console "... and N more like this"."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "batchcli", "exec", str(FLOOD), "-d", str(tmp_path / "out"), "-p", "count=5000", "-p", "max_retries=0", "-p", "breaker_window=0"],
        cwd=str(tmp_path),
        env=subprocess_env(TERM="xterm"),
        dimensions=(40, 200),
        encoding="utf-8",
        timeout=60,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before)
    assert "5,000 × ValueError: record N is malformed" in text
    assert re.search(r"ValueError: record N is malformed \.\.\. and [\d,]+ more like this \(see batchcli\.log\)", text)
    assert len(re.findall(r"failed Item #\d+ ", text)) <= 60


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _failure(ordinal: int, message: str = "record {} is malformed") -> Failure:
    return Failure(ordinal, ordinal, "ValueError", message.format(ordinal), "Traceback", 1, 0.0, 0.0)


def test_the_report_prints_at_most_its_budget_per_second_and_announces_the_rest() -> None:
    """With a budget of 3 lines a second, 1,000 failures over two seconds print 6 lines; the rest are announced once each period and at the end."""
    tally, clock = Tally(), Clock()
    console = Console(record=True, width=200, file=open("/dev/null", "w"))
    report = FailureReport(tally, console, lines_per_second=3, more_every_s=10.0, clock=clock)
    for second in range(2):
        for ordinal in range(second * 500, second * 500 + 500):
            tally.unshown.append(_failure(ordinal))
        report.tick()
        clock.now += 1.0
    tally.unshown.append(_failure(1000, "another {} thing"))
    clock.now += 10.0
    report.tick()
    report.tick(final=True)
    text = console.export_text()
    assert len(INDIVIDUAL.findall(text)) == 7  # 3 + 3, then the new group's first in a fresh second
    assert more_counts(text) == {"ValueError: record N is malformed": 994}
    assert [(g.label, g.count) for g in report.groups] == [("ValueError: record N is malformed", 1000), ("ValueError: another N thing", 1)]


def test_failures_taken_back_are_neither_printed_nor_announced() -> None:
    """The breaker took back failures the report had counted or not read yet: it printed "failed Item #0 ..." for
    failures already taken back, and "... and 56 more like this" for failures that were no longer final, above a
    closing line of 0 failed."""
    tally, clock = Tally(), Clock()
    console = Console(record=True, width=200, file=open("/dev/null", "w"))
    report = FailureReport(tally, console, lines_per_second=3, more_every_s=10.0, clock=clock)
    earlier = [_failure(n) for n in range(20)]
    tally.unshown.extend(earlier)
    report.tick()  # 3 printed, 17 hidden
    now = [_failure(n) for n in range(20, 40)]
    tally.unshown.extend(now)
    tally.taken_back.extend(earlier + now)  # the breaker opened: all 40 are held
    clock.now += 1.0
    report.tick(final=True)
    text = console.export_text()
    assert len(INDIVIDUAL.findall(text)) == 3  # only the three printed before the trip
    assert more_counts(text) == {} and report.groups == []


CRASH = PROJECTS / "flood_crash" / "crash.py"


def test_row_lines_write_each_row_as_failure_line_does() -> None:
    """A flush's failed.jsonl lines are the text a rewrite from the journal makes, whatever the traceback and message hold."""
    texts = ["", "plain", "one\nTwo: 'q' \"d\" \\ é 雪 \x00 \x1f \u2028", "Traceback (most recent call last):\n  File \"x\"\nE: m\n"]
    rows = [
        (n, None, 1, b"", "builtins.int", str(n), kind, message, traceback, 1 + n % 2, 100.5 + n, 100.5 + n + n % 2 * 0.25)
        for n, (kind, message, traceback) in enumerate((k, m, t) for k in ("ValueError", "a.B") for m in texts for t in texts)
    ]
    lines = row_lines(rows)
    assert lines == [failure_line(r[0], r[5], r[6], r[7], r[9], r[10], r[11], r[8]) for r in rows]
    assert [json.loads(line)["traceback"] for line in lines] == [r[8] for r in rows]


def test_the_log_file_writes_a_failure_batch_as_a_record_per_failure_would_be_written(tmp_path: Path) -> None:
    """The log file writes a flush's failures in one loop, for speed: the same text as the plain formatter makes of a
    record per failure (its time to the millisecond, its level and logger, ``failure_text``), whatever they hold."""
    texts = ["", "plain", "one\nTwo: 'q' \"d\" \\ é 雪 \x00 \u2028"]
    items: list[Any] = [7, "s" * 40, 10**40, {"a": [1, 2]}, None]
    failures = [
        Failure(n, items[n % len(items)], kind, message, f"Traceback (most recent call last):\n  File \"x\"\n{kind}: {message}",
                1 + n % 3, 1_764_662_400.0, 1_764_662_400.0 + n * 0.3337)
        for n, (kind, message) in enumerate((k, m) for k in ("ValueError", "a.B") for m in texts * 3)
    ]  # fmt: skip
    handler = RunFileHandler(tmp_path / "batchcli.log", Console(file=io.StringIO()))
    handler.handle(FailureBatch(failures))
    handler.close()
    formatter = logging.Formatter(FORMAT)
    expected = []
    for failure in failures:
        record = logging.LogRecord(FAILURES, logging.ERROR, __file__, 0, "%s", (failure_text(failure),), None)
        record.created, record.msecs = failure.failed_at, int((failure.failed_at - int(failure.failed_at)) * 1000) + 0.0
        expected.append(formatter.format(record) + "\n")
    assert (tmp_path / "batchcli.log").read_text(encoding="utf-8") == "".join(expected)


def test_a_flood_killed_with_sigkill_resumes_with_each_failure_once_everywhere(tmp_path: Path, run_batchcli: Any, cli: Any) -> None:
    """kill -9 during a flood, then resume: every failure is in the journal once, failed.jsonl matches it line for line,
    the log names each one, retry's filters still pick them, and every item settles."""
    count, ledger = 2000, tmp_path / "ledger.txt"
    output = open(tmp_path / "first-session.txt", "wb")
    args = ["exec", CRASH, "-d", tmp_path / "out", "-p", f"count={count}", "-p", f"ledger={ledger}", "-p", "max_retries=0",
            "-p", "breaker_window=0", "-p", "rate_limit=1000"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "batchcli", *map(str, args)], stdout=output, stderr=output, env=subprocess_env())
    wait_for(lambda: journaled(tmp_path / "out") >= 400, "400 journaled items")
    proc.kill()
    proc.wait()
    run_dir = next((tmp_path / "out").iterdir())
    assert read_run(run_dir).status == "crashed"

    resumed = run_batchcli("resume", run_dir, "-p", "rate_limit=1000000")
    assert resumed.exit_code == 1, resumed.output
    odd = [n for n in range(count) if n % 2]
    rows = query(run_dir, "SELECT ordinal, item_json, error_type, error_message, attempts, first_failed_at, failed_at, traceback"
                          " FROM failures ORDER BY rowid")  # fmt: skip
    assert sorted(row[0] for row in rows) == odd  # each failure once: none lost, none doubled
    assert (run_dir / "failed.jsonl").read_text(encoding="utf-8").splitlines(True) == [failure_line(*row) for row in rows]
    assert rows[0][3].endswith("\nsecond line") or rows[0][2] == "KeyError"
    assert {r["ordinal"]: r["error_message"] for r in resumed.failed}[1] == 'record 1 says "no" \\ naïve\x00\nsecond line'
    log = (run_dir / "batchcli.log").read_text(encoding="utf-8")
    assert set(map(int, re.findall(r"ERROR    batchcli\.failures: Item #(\d+) ", log))) == set(odd)
    assert set(JobLog(ledger).done()) == set(range(0, count, 2))
    summary = resumed.summary
    assert (summary["succeeded"], summary["failed"], summary["total"]) == (count // 2, count // 2, count)
    quarter = count // 4
    assert f"matching --error-type KeyError: {quarter:,} of {count // 2:,}" in cli("retry", run_dir, "--error-type", "KeyError", "--dry-run").output
    assert f"matching --match 'naïve': {quarter:,} of {count // 2:,}" in cli("retry", run_dir, "--match", "naïve", "--dry-run").output


def test_a_flood_beyond_the_memory_budgets_waits_for_the_journal_and_loses_no_failure(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the budgets made small, failures waiting for the journal never pass theirs by more than the workers
    in flight (the loop waits for the recorder), the run holds only the latest failures in memory, and still the
    journal, failed.jsonl, persist_failed and run_job's outcome have every one."""
    from batchcli import outcome
    from batchcli.run import driver, recording
    from batchcli.testing import run_job

    monkeypatch.setattr(outcome, "FAILURE_BACKLOG_MAX", 20)
    monkeypatch.setattr(driver, "FAILURES_KEPT", 50)
    waiting: list[int] = []
    flush = recording.Recording.flush

    def observed(self: recording.Recording) -> None:
        waiting.append(len(self.tally.new_failures))
        flush(self)

    monkeypatch.setattr(recording.Recording, "flush", observed)
    count, concurrency = 300, 4
    params = ["-p", f"count={count}", "-p", "fail_every=1", "-p", "delay=0", "-p", "max_retries=0",
              "-p", "breaker_window=0", "-p", f"concurrency={concurrency}"]  # fmt: skip
    persisted = tmp_path / "persisted.json"
    ran = cli("exec", PROJECTS / "shell_slow", "-d", "out", "-p", f"log_file={tmp_path / 'job.log'}",
              "-p", f"persisted={persisted}", *params)  # fmt: skip
    assert ran.exit_code == 1, ran.output
    assert ran.summary["failed"] == count
    assert max(waiting) <= 20 + concurrency, waiting
    assert sorted(json.loads(persisted.read_text())) == list(range(count))
    assert len((ran.run_dir / "failed.jsonl").read_text().splitlines()) == count
    assert query(ran.run_dir, "SELECT count(*) FROM failures") == [(count,)]
    outcome_ = run_job(PROJECTS / "shell_slow", params={"log_file": str(tmp_path / "job2.log"), "count": count,
                       "fail_every": 1, "delay": 0, "max_retries": 0, "breaker_window": 0})  # fmt: skip
    assert outcome_.failed == count
    assert sorted(f.input for f in outcome_.failures) == list(range(count))  # read back: the run held only 50
    assert {f.error_type for f in outcome_.failures} == {"ValueError"}


def test_failures_with_large_messages_are_held_by_bytes_not_only_by_count(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory for failures was bounded by their count alone: 10,000 failures of 50 KB documents took 2 GB. With the
    byte budgets made small (each failure here holds a 50 KB message twice, in its traceback too), few wait for the
    journal and few are held for the pause shell, and the journal and failed.jsonl still have every one."""
    from batchcli import outcome
    from batchcli.run import recording

    monkeypatch.setattr(outcome, "FAILURE_BACKLOG_BYTES", 300_000)
    monkeypatch.setattr(outcome, "FAILURES_KEPT_BYTES", 500_000)
    seen: list[tuple[int, int]] = []
    flush = recording.Recording.flush

    def observed(self: recording.Recording) -> None:
        seen.append((len(self.tally.new_failures), len(self.tally.failures)))
        flush(self)

    monkeypatch.setattr(recording.Recording, "flush", observed)
    count, concurrency = 60, 2
    ran = cli("exec", FLOOD, "-d", "out", "-p", f"count={count}", "-p", "body=true", "-p", "max_retries=0",
              "-p", "breaker_window=0", "-p", f"concurrency={concurrency}")  # fmt: skip
    assert ran.exit_code == 1, ran.output[-2000:]
    waiting, kept = max(w for w, _ in seen), max(k for _, k in seen)
    assert waiting <= 3 + 1 + concurrency, seen  # 300 KB of 100 KB failures, one past it, those in flight
    assert kept <= 5, seen  # 500 KB of them
    lines = (ran.run_dir / "failed.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["ordinal"] for line in lines) == list(range(count))
    assert query(ran.run_dir, "SELECT count(*) FROM failures") == [(count,)]


def test_messages_that_each_have_a_shape_of_their_own_still_print_a_bounded_console(run_batchcli: Any) -> None:
    """2,000 failures whose messages all differ (a name per item, no digits to group by) print a few groups and one
    "other messages" group, not a "... and 1 more like this" line per failure; the counts still add up."""
    result = run_batchcli(
        "exec", FLOOD, "-d", "out", "-p", "count=2000", "-p", "named=true", "-p", "max_retries=0", "-p", "breaker_window=0"
    )
    assert result.exit_code == 1, result.output
    assert len(result.output.splitlines()) < 100, result.output[-3000:]
    shown = len(INDIVIDUAL.findall(result.output))
    more = more_counts(result.output)
    assert shown + sum(more.values()) == 2000  # every failure printed or counted once
    assert more["LookupError: (other messages)"] > 1900
    assert re.search(r"failed 1,9\d\d × LookupError: \(other messages\)", result.output), result.output[-2000:]


def test_a_message_that_carries_a_whole_response_body_is_clipped_on_the_console_and_kept_whole_in_the_files(
    run_batchcli: Any,
) -> None:
    """Failures whose messages carry 50 KB each print one clipped line apiece, not the body; failed.jsonl keeps
    every message whole; and ``show`` and ``watch`` group them (once, a shape of such a message took minutes)."""
    result = run_batchcli(
        "exec", FLOOD, "-d", "out", "-p", "count=12", "-p", "body=true", "-p", "max_retries=0", "-p", "breaker_window=0"
    )
    assert result.exit_code == 1, result.output[:3000]
    assert len(result.output) < 10_000, len(result.output)
    assert re.search(r"RuntimeError: the server said: <html>x{100,}… *$", result.output, re.M), result.output[:3000]
    lines = (result.run_dir / "failed.jsonl").read_text().splitlines()
    assert [len(json.loads(line)["error_message"]) for line in lines] == [len("the server said: <html></html>\nand more") + 50_000] * 12
    for command in ("show", "watch"):
        shown = run_batchcli(command, result.run_dir, timeout=60)  # seconds for this; minutes with a quadratic shape
        assert shown.exit_code == 0, shown.output[:3000]
        assert re.search(r"\b12\s+RuntimeError: the server said:\s+<html>x", shown.output), shown.output[:3000]
        assert len(shown.output) < 10_000


def test_a_recorder_that_breaks_stops_the_run_instead_of_running_on_unrecorded(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When recording fails with something other than a write error (a bug), the run stops as a crash, says so,
    and resume redoes exactly what was not recorded; a flood does not wait forever for the recorder that is gone."""
    from batchcli import outcome
    from batchcli.journal import writer

    monkeypatch.setattr(outcome, "FAILURE_BACKLOG_MAX", 5)
    record = writer.Journal.record
    calls: list[int] = []

    def breaks(self: writer.Journal, done: Any, failures: Any) -> list[str]:
        calls.append(len(failures))
        if len(calls) == 2:
            raise RuntimeError("the recorder broke")
        return record(self, done, failures)

    monkeypatch.setattr(writer.Journal, "record", breaks)
    log = tmp_path / "job.log"
    args = ["-p", f"log_file={log}", "-p", "count=400", "-p", "fail_every=2", "-p", "delay=0.001", "-p", "max_retries=0",
            "-p", "breaker_window=0"]  # fmt: skip
    ran = cli("exec", PROJECTS / "shell_slow", "-d", "out", *args)
    assert ran.exit_code == 3, ran.output
    assert "Recording the run failed" in ran.output
    assert ran.summary["status"] == "crashed"
    monkeypatch.setattr(writer.Journal, "record", record)
    resumed = cli("resume", ran.run_dir)
    assert resumed.exit_code == 1, resumed.output  # the odd items succeed, the even ones fail, each settled once
    summary = json.loads((ran.run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"], summary["status"]) == (200, 200, "finished")
    assert query(ran.run_dir, "SELECT count(*), count(DISTINCT ordinal) FROM failures") == [(200, 200)]


def test_a_flood_of_inputs_that_cannot_be_pickled_warns_once_then_counts_them(run_batchcli: Any, cli: Any) -> None:
    """3,000 failed rows that hold a live handle: one warning names the first and one at the end counts them all
    (a warning each printed three console lines per failure); the journal and failed.jsonl still have every one."""
    result = run_batchcli("exec", PROJECTS / "unpicklable" / "job.py", "-d", "out", "-p", "count=3000", "-p", "max_retries=0",
                          "-p", "breaker_window=0")  # fmt: skip
    assert result.exit_code == 1 and result.run_dir is not None, result.output
    flat = " ".join(result.output.split())
    assert flat.count("cannot be pickled (") == 1 and "Item #0 cannot be pickled (cannot pickle" in flat
    assert "3000 failed job.Row items could not be pickled" in flat
    assert len(result.output.splitlines()) < 100
    assert query(result.run_dir, "SELECT count(*), count(item) FROM failures") == [(3000, 0)]
    assert len(result.failed) == 3000 and result.failed[5]["input"] == "Row(5)"
    log = (result.run_dir / "batchcli.log").read_text()
    assert log.count("cannot be pickled (") == 1 and "3000 failed job.Row items could not be pickled" in log
    runs_before = sorted(result.run_dir.parent.iterdir())
    retried = cli("retry", result.run_dir)
    # Nothing could be retried: not exit 0, which a script reads as "retried" (`retry RUN && echo fixed`).
    assert retried.exit_code == 1, retried.output
    flat = " ".join(retried.output.split())
    assert "Nothing was retried: none of the 3000 failure(s)" in flat and "could not be pickled" in flat, flat
    assert "Traceback" not in retried.output and sorted(result.run_dir.parent.iterdir()) == runs_before


def test_a_job_that_calls_logging_basicconfig_does_not_print_every_failure_through_it(run_batchcli: Any) -> None:
    """logging.basicConfig() in the job adds a root handler of its own: it printed every final failure with its
    traceback (25,009 lines for 5,000), past the grouped console. The failures now go to the run's handlers only;
    the job's handler still gets the run's other records."""
    result = run_batchcli("exec", PROJECTS / "misbehaving" / "job.py", "-d", "out", "-p", "count=3000", "-p", "fail_every=1",
                          "-p", "basic_config=true", "-p", "max_retries=0", "-p", "breaker_window=0")  # fmt: skip
    assert result.exit_code == 1 and result.run_dir is not None, result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) < 100
    assert "INFO:batchcli:Run ended: finished, exit code 1" in result.output  # the job's handler, at work
    assert "  failed 3,000 × ValueError: item N is not a valid record" in result.output
    assert (result.run_dir / "batchcli.log").read_text().count("Traceback (most recent call last):") == 3000
    assert len(result.failed) == 3000



def test_a_logging_call_in_the_job_does_not_turn_on_info_lines(run_batchcli: Any) -> None:
    """A module-level logging.debug() in a constructor installs a stderr handler on the root logger by itself; the run
    then lowered the root level for its own handlers, and that handler printed every INFO line of the job and of
    batchcli, past the console's limits, without -v. It keeps showing what it showed; the log file has the rest."""
    result = run_batchcli("exec", PROJECTS / "misbehaving" / "job.py", "-d", "out", "-p", "count=300", "-p", "log_info=true",
                          "-p", "breaker_window=0")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "INFO:" not in result.output and len(result.output.splitlines()) < 20, result.output
    assert (result.run_dir / "batchcli.log").read_text().count("processed ") == 300


def test_a_message_starting_with_empty_lines_is_shown_and_grouped_by_its_first_words(run_batchcli: Any) -> None:
    """RuntimeError("\\n\\nline two N") showed, and grouped, as "RuntimeError: " with nothing after it."""
    result = run_batchcli("exec", FLOOD, "-d", "out", "-p", "count=300", "-p", "blank_first=true", "-p", "max_retries=0", "-p", "breaker_window=0")
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "300 × RuntimeError: line two N …" in said or "failed 300 × RuntimeError: line two N" in said, said
    assert "RuntimeError: line two 0" in said, said  # a line of its own, the first shown


def test_a_job_log_line_cannot_clear_the_screen(run_batchcli: Any) -> None:
    """A warning holding a terminal's escape sequence (a response body logged) was printed raw on the console, as
    failures' messages are not; its line breaks are kept. The log file keeps the message as it was."""
    result = run_batchcli("exec", FLOOD, "-d", "out", "-p", "count=20", "-p", "escapes=true", "-p", "max_retries=0", "-p", "breaker_window=0")
    assert result.exit_code == 1, result.output
    assert "\x1b[2J" not in result.output and "\r" not in result.output.replace("\r\n", "\n")
    assert "\\x1b[2Jcleared\\x0dover" in result.output, result.output
    assert b"\x1b[2Jcleared\rover" in (result.run_dir / "batchcli.log").read_bytes()
