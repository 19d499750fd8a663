"""A flood of failures: the console shows them grouped with a bounded sample; files keep every one."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pexpect
from conftest import PROJECTS, subprocess_env
from rich.console import Console

from batchcli.outcome import Failure, Tally
from batchcli.run.failures import FailureReport

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
