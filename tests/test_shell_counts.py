"""Counts that agree and mean what they say: failed.jsonl, summary, show and retry after the pause shell's
retries; a live ``failures``; ``await self.process(x)``; retrying and elapsed while paused; resume's bar;
summary params as JSON; ``run_job``'s injected values and temporary directory."""

from __future__ import annotations

import json
import re
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS, newest_run
from joblog import JobLog
from test_shell import PROMPT, pause, terminal  # noqa: F401 - the fixture

from batchcli.journal.rundir import read_run
from batchcli.testing import run_job

ODD_MULTIPLES_OF_3 = [n for n in range(60) if n % 3 == 0 and n % 2]
"""With ``fail_every=3`` and ``fixed_mod=4`` once the shell fixed remainders 0 and 2: what keeps failing."""


def failed_lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "failed.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def shown_failed(cli: Any, run_dir: Path) -> int:
    """The failed count ``batchcli show`` prints."""
    shown = cli("show", run_dir)
    assert shown.exit_code == 0, shown.output
    match = re.search(r"([\d,]+) failed", shown.output)
    assert match is not None, shown.output
    return int(match.group(1).replace(",", ""))


def retried_total(cli: Any, run_dir: Path) -> int:
    """How many inputs ``batchcli retry`` takes up again (its run's total)."""
    retried = cli("retry", run_dir)
    match = re.search(r"failed of (\d+)\.", " ".join(retried.output.split()))
    assert match is not None, retried.output
    return int(match.group(1))


def test_retry_failed_in_the_shell_leaves_failed_jsonl_summary_show_and_retry_agreeing(terminal, cli) -> None:
    """After retry_failed, ``failures`` is live, ``self.retry(failure)`` processes its input, ``await self.process``
    runs an async service, and failed.jsonl, summary.json, ``show`` and ``retry`` all count the same failures."""
    term = terminal(
        "shell_counts", "-p", "count=60", "-p", "delay=0.06", "-p", "concurrency=2", "-p", "fail_every=3",
        "-p", "fixed_mod=4", "-p", "max_retries=0", "-p", "breaker_window=0",
    )
    pause(term, after=12)
    assert "await self.process(x)" in term.output()  # the banner offers the call that works for both kinds
    term.run("before = len(failures); print('BEFORE', before > 0, all(f.item % 3 == 0 for f in failures))", "BEFORE True True")
    term.run("service.fixed.update({0, 2}); again = self.retry_failed()", r"failed item\(s\) succeeded now")
    # The same name, read after the retries: only the odd ones are left, as the counts say.
    term.run(
        "print('LIVE', len(failures) == self.stats().failed == len(again), [f.item % 2 for f in failures] == [1] * len(failures))",
        "LIVE True True",
    )
    first = int(_answer(term, "print('FIRST', failures[0].item)", r"FIRST (\d+)"))
    term.run("service.fixed.add(3); print('RETRIED', self.retry(failures[0])); service.fixed.discard(3)", f"RETRIED processed {first}")
    term.run(f"print('GONE', all(f.item != {first} for f in failures))", "GONE True")
    term.run("print('GOT', await self.process(1001))", "GOT processed 1001")
    term.run("exit", "Resuming the run")
    assert term.exit_code() == 1
    assert term.log.done().count(first) == 1 and term.log.done().count(1001) == 1
    run_dir = newest_run(term.out)
    expected = [n for n in ODD_MULTIPLES_OF_3 if n != first]
    summary = term.summary()
    assert (summary["succeeded"], summary["failed"]) == (60 - len(expected), len(expected))
    assert sorted(line["ordinal"] for line in failed_lines(run_dir)) == expected
    assert shown_failed(cli, run_dir) == len(expected)
    assert retried_total(cli, run_dir) == len(expected)


def test_retry_failed_in_the_emergency_shell_keeps_failed_jsonl_exact(terminal, cli) -> None:
    """retry_failed in the emergency shell (the source broke): failed.jsonl, summary and show agree afterwards."""
    term = terminal(
        "shell_counts", "-p", "count=60", "-p", "break_at=30", "-p", "delay=0", "-p", "fail_every=3",
        "-p", "fixed_mod=4", "-p", "max_retries=0", "-p", "breaker_window=0",
    )
    term.expect("fatal error")
    term.expect(PROMPT)
    term.run("service.fixed.update({0, 2}); again = self.retry_failed()", r"failed item\(s\) succeeded now")
    term.run("print('LEFT', len(failures), self.stats().failed)", r"LEFT 5 5")
    term.run("exit", "Continuing the shutdown")
    assert term.exit_code() == 3
    run_dir = newest_run(term.out)
    expected = [n for n in ODD_MULTIPLES_OF_3 if n < 30]
    assert term.summary()["failed"] == len(expected)
    assert sorted(line["ordinal"] for line in failed_lines(run_dir)) == expected
    assert shown_failed(cli, run_dir) == len(expected)


def test_while_paused_retrying_stays_counted_and_elapsed_stands_still(terminal, cli) -> None:
    """Paused: items whose backoff ran out still count as retrying, elapsed does not move, and
    ``await self.process(x)`` runs a sync service; summary.json and ``show`` leave the pause out of the duration."""
    term = terminal(
        "shell_counts", "-p", "count=30", "-p", "delay=0.05", "-p", "concurrency=3", "-p", "flaky=true",
        "-p", "sync=true", "-p", "backoff_s=0.2", "-p", "backoff_max_s=0.2", "-p", "max_retries=2",
    )
    pause(term, after=3)
    log = term.log
    term.run("import time\nwhile self.stats().in_flight: time.sleep(0.01)\n\nprint('SETTLED')", "SETTLED")
    waiting = len(set(log.started()) - set(log.done()))  # tried, failed once, not started again
    assert waiting > 0
    term.run(
        "a = self.stats(); time.sleep(1); b = self.stats(); "
        "print('PAUSED', b.retrying, a.elapsed_s == b.elapsed_s, a.items_per_s == b.items_per_s)",
        f"PAUSED {waiting} True True",  # every backoff (0.2 s) is over by now
    )
    term.run("print('GOT', await self.process(0))", "GOT processed 0")  # item 0's first attempt is behind it
    term.run("exit", "Resuming the run")
    assert term.exit_code() == 0
    assert sorted(set(log.done())) == list(range(30))
    summary = term.summary()
    assert summary["paused_s"] >= 1.0  # the cell above slept a second in the shell
    # Both figures are rounded (rate to 0.1, duration to 1 ms), so on a sub-second run the rate recomputed from the
    # rounded duration can differ by a little more than 0.1; a pause counted in would make it a third of this.
    assert summary["items_per_s"] == pytest.approx(30 / summary["duration_s"], rel=0.01)
    run_dir = newest_run(term.out)
    assert read_run(run_dir).active_s == pytest.approx(summary["duration_s"], abs=0.3)
    shown = cli("show", run_dir)
    match = re.search(r"duration\s+(\d+):(\d\d):(\d\d)", shown.output)
    assert match is not None, shown.output
    hours, minutes, seconds = map(int, match.groups())
    assert abs(hours * 3600 + minutes * 60 + seconds - summary["duration_s"]) < 1, (shown.output, summary)


def test_resume_shows_the_whole_run_in_the_bar_and_the_counts(cli, tmp_path: Path) -> None:
    """After ``resume``, the bar and "ok" both count the whole run: earlier sessions' items are done already."""
    log = tmp_path / "job.log"
    args = ("-p", f"log_file={log}", "-p", "count=20", "-p", "delay=0", "-p", "fail_every=7", "-p", "max_retries=0")
    crashed = cli("exec", PROJECTS / "shell_counts", "-d", "out", *args, "-p", "break_at=12")
    assert crashed.exit_code == 3
    resumed = cli("resume", crashed.run_dir, "-p", "break_at=-1")
    assert resumed.exit_code == 1
    last = [line for line in resumed.output.splitlines() if line.startswith("20/20")][-1]
    assert re.match(r"20/20 \(100%\)  ok 17  failed 3  retrying 0", last), last
    assert sorted(JobLog(log).started()) == list(range(20))  # each item once, over both sessions


def test_summary_params_are_json_values_and_run_job_records_only_what_was_passed(tmp_path: Path) -> None:
    """summary.json writes a timedelta as seconds, a set as a sorted list, a datetime as ISO 8601 and a secret
    masked; run_job's own backoff_s=0 is in neither the summary nor the journal."""
    outcome = run_job(
        PROJECTS / "ux_types",
        params={"wait": timedelta(minutes=5), "tags": {"b", "a"}, "token": "s3cret", "when": datetime(2026, 1, 2, 3, 4)},
        output_dir=tmp_path,
    )
    assert outcome.ok, outcome.output
    params = json.loads((outcome.run_dir / "summary.json").read_text())["params"]
    assert params == {"wait": 300, "tags": ["a", "b"], "token": "********", "when": "2026-01-02T03:04:00"}
    assert "backoff_s" not in read_run(outcome.run_dir).params
    assert "s3cret" not in (outcome.run_dir / "summary.json").read_text()


def test_run_job_without_output_dir_leaves_no_temporary_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without output_dir the run happens in a temporary directory that is gone when run_job returns."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    outcome = run_job(PROJECTS / "ux_types", params={"count": 1})
    assert outcome.ok and outcome.succeeded == 1
    assert list(scratch.iterdir()) == []
    assert not outcome.run_dir.exists()


def _answer(term: Any, line: str, pattern: str) -> str:
    """Type ``line`` and return the first group of ``pattern`` in what it printed."""
    term.child.sendline(line)
    term.child.expect(pattern)
    return str(term.child.match.group(1))

