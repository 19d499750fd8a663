"""Trial runs and targeted reruns through the real CLI: --limit, --sample, --dry-run, resume --all, retry filters,
show --failures, --skip-done-in, and their bad input."""

from __future__ import annotations

import json
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from conftest import subprocess_env
from joblog import wait_for

PROJECTS = Path(__file__).resolve().parent / "projects"
ROWS = PROJECTS / "trials" / "rows.py"
ORDERS = PROJECTS / "journal_retry" / "orders.py"
STREAM = PROJECTS / "generator_source" / "generator_source_job.py"
WORDS = "a b down-1 c bad-1 d down-2 e"


def rows_job(tmp_path: Path, words: str = WORDS, *extra: str) -> list[str]:
    """``exec`` arguments for the rows project over ``words``, retries off, runs under ``out``."""
    (tmp_path / "rows.txt").write_text(words)
    return ["exec", str(ROWS), "-p", "input=rows.txt", "-p", "ledger=ledger", "-p", "max_retries=0", "-d", "out", *extra]


def ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger"
    return path.read_text().splitlines() if path.exists() else []


def processed(tmp_path: Path) -> Counter[str]:
    """How many times each row was processed, over every run so far."""
    return Counter(line.split()[1] for line in ledger(tmp_path) if line.startswith("process "))


# Trial runs.


def test_limit_runs_the_first_items_and_says_so_in_summary_runs_and_show(cli, tmp_path: Path) -> None:
    """--limit 3 processes exactly the first three rows, and summary.json, the closing notice, runs and show say it was a trial."""
    first = cli(*rows_job(tmp_path, WORDS, "--limit", "3"))
    assert first.exit_code == 1, first.output  # down-1 is among the first three
    assert processed(tmp_path) == Counter({"a": 1, "b": 1, "down-1": 1})
    assert "Trial run (the first 3 items)" in first.output
    summary = first.summary
    assert summary["total"] == 3 and summary["unprocessed"] == 0
    assert summary["selection"]["limit"] == 3 and summary["selection"]["description"] == "the first 3 items"
    runs = cli("runs", "-d", "out")
    assert "trial: the first 3" in runs.output
    shown = cli("show", first.run_dir)
    assert "the first 3 items" in shown.output and "--all" in shown.output


def test_resume_keeps_the_limit_and_resume_all_does_each_row_exactly_once(cli, tmp_path: Path) -> None:
    """A crashed --limit run resumes to its limit only; resume --all then does the rest, each row once in all."""
    crashed = cli(*rows_job(tmp_path, WORDS, "--limit", "5", "-p", "crash_at=c"))
    assert crashed.exit_code == 3, crashed.output
    assert set(processed(tmp_path)) == {"a", "b", "down-1"}
    run_dir = next((tmp_path / "out").iterdir())
    resumed = cli("resume", run_dir, "-p", "crash_at=")
    assert resumed.exit_code == 1, resumed.output
    assert "Resuming a trial run (the first 5 items)" in resumed.output
    assert set(processed(tmp_path)) == {"a", "b", "down-1", "c", "bad-1"}  # the limit held: no d, down-2, e
    again = cli("resume", run_dir)
    assert "nothing to resume" in again.output and f"batchcli resume {run_dir} --all" in again.output
    whole = cli("resume", run_dir, "--all", "-p", "crash_at=")
    assert whole.exit_code == 1, whole.output
    assert processed(tmp_path) == Counter({row: 1 for row in WORDS.split()})
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (8, 5, 3)
    assert summary["selection"] is None
    assert "trial" not in cli("runs", "-d", "out").output


def test_a_keyed_trial_resumed_over_a_reordered_source_takes_its_limit_in_all(cli, tmp_path: Path) -> None:
    """A trial of 5 rows crashed after 3 (one failed); the file is rewritten in another order before the resume: the
    resume takes 2 more rows, the first ones not settled in the new order, so the trial holds 5 rows and no more."""
    crashed = cli(*rows_job(tmp_path, WORDS, "--limit", "5", "-p", "crash_at=c"))
    assert crashed.exit_code == 3, crashed.output
    assert set(processed(tmp_path)) == {"a", "b", "down-1"}
    (tmp_path / "rows.txt").write_text(" ".join(reversed(WORDS.split())))  # e down-2 d bad-1 c down-1 b a
    run_dir = next((tmp_path / "out").iterdir())
    resumed = cli("resume", run_dir, "-p", "crash_at=")
    assert resumed.exit_code == 1, resumed.output
    assert processed(tmp_path) == Counter({"a": 1, "b": 1, "down-1": 1, "e": 1, "down-2": 1})
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["total"], summary["succeeded"], summary["failed"], summary["unprocessed"]) == (5, 3, 2, 0)


def sampled(cli, tmp_path: Path, seed: str) -> list[int]:
    """The order ids a --sample 0.3 run with ``seed`` processed (the run's log lines name them)."""
    for log in tmp_path.glob("*.log"):
        log.unlink()
    outcome = cli("exec", ORDERS, "-p", "log_dir=.", "-p", "count=60", "-p", "strict=false", "-d", "out",
                  "--sample", "0.3", "--seed", seed)
    assert outcome.exit_code == 0, outcome.output
    ids = sorted(int(line.split("Order(id=")[1].split(",")[0]) for log in tmp_path.glob("*.log") for line in log.read_text().splitlines())
    assert outcome.summary["total"] == len(ids)
    return ids


def test_sample_takes_the_same_items_for_a_seed_and_others_for_another_seed(cli, tmp_path: Path) -> None:
    """--sample 0.3 --seed 1 picks the same orders twice; --seed 2 picks a different set; both are about 30%."""
    one, again, two = sampled(cli, tmp_path, "1"), sampled(cli, tmp_path, "1"), sampled(cli, tmp_path, "2")
    assert one == again
    assert one != two
    assert 6 <= len(one) <= 30 and 6 <= len(two) <= 30


def test_a_sample_of_an_async_keyed_source_resumes_all_with_each_item_once(cli, tmp_path: Path) -> None:
    """--sample over an async source keyed by item_key, then resume --all: every item processed exactly once."""
    (tmp_path / "logs").mkdir()
    keyed = PROJECTS / "journal_keyed" / "keyed.py"
    trial = cli("exec", keyed, "-p", "log_dir=logs", "-p", "count=40", "-d", "out", "--sample", "0.25", "--seed", "5")
    assert trial.exit_code in (0, 1), trial.output
    assert trial.run_dir is not None
    first = [line for log in (tmp_path / "logs").glob("*.log") for line in log.read_text().split()]
    assert 0 < len(first) < 40 and trial.summary["total"] == len(first)
    whole = cli("resume", trial.run_dir, "--all")
    assert whole.exit_code == 1, whole.output  # item-7 fails, in the sample or after it
    done = Counter(line for log in (tmp_path / "logs").glob("*.log") for line in log.read_text().split())
    assert done == Counter({f"item-{n}": 1 for n in range(40)})


def test_a_keyed_sample_is_decided_by_key_so_a_resume_over_another_order_takes_the_same_items(cli, tmp_path: Path) -> None:
    """A keyed Source may come in another order on resume (a directory listing). Sampled by position, the resume
    took another 25% on top of what the first session did (94 items grew to 159 of 400); by key it takes the rest of
    the same sample, the one a fresh run over the new order takes."""
    words = [f"w{n}" for n in range(80)]
    first = cli(*rows_job(tmp_path, " ".join(words), "--sample", "0.25", "--seed", "1", "-p", "crash_at=w40"))
    assert first.exit_code == 3 and first.run_dir is not None, first.output  # the source broke half way
    (tmp_path / "rows.txt").write_text(" ".join(reversed(words)))
    resumed = cli("resume", first.run_dir, "-p", "crash_at=")
    assert resumed.exit_code == 0, resumed.output
    done = processed(tmp_path)
    (tmp_path / "ledger").unlink()
    fresh = cli(*rows_job(tmp_path, " ".join(reversed(words)), "--sample", "0.25", "--seed", "1", "-d", "fresh"))
    assert fresh.exit_code == 0, fresh.output
    assert done == processed(tmp_path) and set(done.values()) == {1}, (done, processed(tmp_path))
    assert 5 <= len(done) <= 40 and first.summary["total"] == len(done), first.summary


def test_dry_run_shows_the_job_and_runs_no_hook_and_makes_no_run_directory(cli, tmp_path: Path) -> None:
    """--dry-run prints job, params (secret masked), executor, count and first items; only the constructors ran."""
    outcome = cli(*rows_job(tmp_path, WORDS, "--dry-run", "-p", "token=hunter2", "-p", "concurrency=3"))
    assert outcome.exit_code == 0, outcome.output
    assert not (tmp_path / "out").exists()
    assert ledger(tmp_path) == ["source built", "service built"]  # no setup, process, finish, persist_failed
    text = outcome.output
    assert "rows" in text and "concurrency=3" in text and "async, concurrency 3" in text
    assert "token=********" in text and "hunter2" not in text
    assert "8 (len of the source)" in text
    assert '#0     "a"' in text and '#4     "bad-1"' in text and '"c"' in text and '"d"' not in text


def test_dry_run_counts_a_source_without_len_and_applies_the_sample(cli, tmp_path: Path) -> None:
    """A source without len() is counted by iterating it; with --sample and --limit the count is what would run."""
    counted = cli("exec", STREAM, "-p", "count=30", "--dry-run")
    assert counted.exit_code == 0, counted.output
    assert "30, counted by iterating the source (it has no len())" in counted.output
    trial = cli("exec", STREAM, "-p", "count=30", "--dry-run", "--sample", "0.5", "--seed", "3", "--limit", "4")
    assert "the first 4 items of a 50% sample (seed 3)" in trial.output
    assert "4, counted by iterating the source" in trial.output


def test_a_sample_is_described_by_its_exact_percentage_never_rounded_to_all_or_nothing(cli, tmp_path: Path) -> None:
    """--sample 0.999999 is "a 99.9999% sample", not "100%" (every item); a tiny one keeps its one digit (one
    too small to take any item is refused: see test_bad_trial_options_are_one_paragraph_errors)."""
    near_all = cli("exec", STREAM, "-p", "count=30", "--dry-run", "--sample", "0.999999")
    assert near_all.exit_code == 0, near_all.output
    assert "a 99.9999% sample (seed 0)" in near_all.output and "100%" not in near_all.output
    tiny = cli("exec", STREAM, "-p", "count=30", "--dry-run", "--sample", "1e-15")
    assert tiny.exit_code == 0, tiny.output
    assert "a 1e-13% sample (seed 0)" in tiny.output


BROKEN_SOURCE = """
from batchcli import Configuration, Param, Service, Source, inject


@inject
class Nums(Source[int]):
    def __init__(self, config: Configuration, way: Param[str] = "iter") -> None:
        self.config, self.way = config, way

    def __iter__(self):
        yield 1
        raise ValueError("the feed broke at item 2")

    def __len__(self) -> int:
        if self.way == "run_dir":
            return len(list((self.config.run_dir / "inputs").iterdir()))
        raise TypeError("no count") if self.way == "len" else NotImplementedError


@inject
class Echo(Service[int]):
    async def process(self, item: int) -> int:
        return item
"""


@pytest.mark.parametrize(
    ("way", "said"),
    [
        ("len", "TypeError: no count"),
        ("run_dir", "A dry run makes no run directory, so the configuration's run_dir"),
    ],
)
def test_a_dry_run_whose_source_raises_shows_the_users_traceback_and_exits_3(cli, tmp_path: Path, way: str, said: str) -> None:
    """The Source raising in __len__ or __iter__ (or reading config.run_dir, which a dry run does not set) was a
    traceback through batchcli's own modules with exit 1; a run shows the user's frames and exits 3."""
    job = tmp_path / "broken_source.py"
    job.write_text(BROKEN_SOURCE)
    outcome = cli("exec", job, "--dry-run", "-p", f"way={way}", "-d", tmp_path / "out")
    assert outcome.exit_code == 3, outcome.output
    text = " ".join(outcome.output.split())
    assert "The Source raised while the dry run counted its items" in text and said in text
    assert 'broken_source.py", line' in outcome.output and "batchcli/" not in outcome.output
    assert not (tmp_path / "out").exists()


def test_a_dry_run_whose_source_breaks_while_iterated_shows_the_users_traceback(cli, tmp_path: Path) -> None:
    """Without len() the dry run iterates the source to count it, and it raises after one item."""
    job = tmp_path / "broken_source.py"
    job.write_text(BROKEN_SOURCE.replace("    def __len__(self) -> int:", "    def _unused(self) -> int:"))
    outcome = cli("exec", job, "--dry-run")
    assert outcome.exit_code == 3, outcome.output
    assert "ValueError: the feed broke at item 2" in outcome.output and "batchcli/" not in outcome.output


SLOW_SOURCE = """
import time
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Pages(Source[int]):
    \"\"\"No len(), and each item takes pause_s to read, as a slow API's pages do; touches ``marker`` when iterated.\"\"\"

    def __init__(self, pause_s: Param[float] = 0.05, marker: Param[Path | None] = None) -> None:
        self.pause_s, self.marker = pause_s, marker

    def __iter__(self):
        if self.marker is not None:
            self.marker.touch()
        for n in range(100_000):
            time.sleep(self.pause_s)
            yield n


@inject
class Untouched(Service[int]):
    async def process(self, item: int) -> None:
        raise AssertionError("a dry run calls no process()")
"""


def test_a_dry_run_counts_a_slow_source_for_a_bounded_time_and_says_so(cli, tmp_path: Path, monkeypatch) -> None:
    """A source without len() that reads slowly (an API, page by page) is counted for ``COUNT_TIME_S`` at most: it used
    to be read up to the 10,000-item cap, 83 minutes at half a second an item."""
    from batchcli.run import preview

    monkeypatch.setattr(preview, "COUNT_TIME_S", 0.5)
    job = tmp_path / "slow_source.py"
    job.write_text(SLOW_SOURCE)
    counted = cli("exec", job, "--dry-run", "-d", tmp_path / "out")
    flat = " ".join(counted.output.split())
    assert counted.exit_code == 0, counted.output
    found = re.search(r"at least (\d+): the source has no len\(\), and counting stopped after 0.5 s", flat)
    assert found is not None and 1 <= int(found.group(1)) <= 11, flat  # 0.05 s an item, with room for a slow machine
    # A sample that picks nothing of what was read still stops reading at the deadline (it read on, for ever).
    sampled = cli("exec", job, "--dry-run", "--sample", "0.000001", "-d", tmp_path / "out")
    assert "at least 0 (stopped counting after 0.5 s), counted by iterating the source" in " ".join(sampled.output.split())
    assert not (tmp_path / "out").exists()


ASYNC_SOURCE = """
import asyncio

from batchcli import Service, Source, inject


@inject
class Feed(Source[int]):
    async def __aiter__(self):
        for n in range(30):
            await asyncio.sleep(0)
            yield n


@inject
class Untouched(Service[int]):
    async def process(self, item: int) -> None:
        raise AssertionError("a dry run calls no process()")
"""


def test_a_dry_run_counts_an_async_source(cli, tmp_path: Path) -> None:
    """An async Source without len() is counted by iterating it on an event loop of the dry run's own."""
    job = tmp_path / "async_source.py"
    job.write_text(ASYNC_SOURCE)
    counted = cli("exec", job, "--dry-run", "-d", tmp_path / "out")
    assert counted.exit_code == 0, counted.output
    assert "30, counted by iterating the source (it has no len())" in " ".join(counted.output.split())
    assert "#4 " in counted.output and "#5 " not in counted.output  # the first five items


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_abandons_a_dry_runs_counting(tmp_path: Path, signum: signal.Signals) -> None:
    """Ctrl-C or SIGTERM while a dry run counts the source stops it at once, as during loading (exit 130); it used
    to be remembered until the counting ended."""
    job = tmp_path / "slow_source.py"
    job.write_text(SLOW_SOURCE)
    marker = tmp_path / "counting"
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(job), "--dry-run", "-p", "pause_s=1", "-p", f"marker={marker}"],
        cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(marker.exists, "the dry run to count the source")
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=30)  # the counting alone would take its 10 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, output
    assert f"Stopped: {signum.name} arrived before the run started; nothing ran and no run directory was made." in output
    assert "Traceback" not in output and not (tmp_path / "batchcli_outputs").exists()


UNKEYED_JOB = """
from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __iter__(self):
        return iter(range(6))


@inject
class OddFails(Service[int]):
    def __init__(self, fixed: Param[bool] = False) -> None:
        self.fixed = fixed

    async def process(self, item: int) -> None:
        if item % 2 and not self.fixed:
            raise ValueError(f"{item} is odd")
"""

WORDS_JOB = """
from batchcli import Service, Source, inject


@inject
class Words(Source[str]):
    def __iter__(self):
        return iter(["w0", "w1"])

    def item_key(self, item: str) -> str:
        return item.upper()


@inject
class Echo(Service[str]):
    async def process(self, item: str) -> None:
        pass
"""


def test_skip_done_in_a_retry_run_of_another_job_is_a_clear_error(cli, tmp_path: Path) -> None:
    """A retry run's saved inputs are keyed with this job's item_key(): on another job's inputs it raised, and the
    user got batchcli's own traceback with exit 1. Now: one paragraph naming the run and the cause, exit 2."""
    (tmp_path / "unkeyed.py").write_text(UNKEYED_JOB)
    (tmp_path / "words.py").write_text(WORDS_JOB)
    first = cli("exec", tmp_path / "unkeyed.py", "-d", tmp_path / "out")
    assert first.exit_code == 1 and first.run_dir is not None, first.output
    retried = cli("retry", first.run_dir, "-p", "fixed=true")
    assert retried.exit_code == 0, retried.output
    retry_dir = max((tmp_path / "out").iterdir())  # the retry run, beside the first
    other = cli("exec", tmp_path / "words.py", "-d", tmp_path / "out2", "--skip-done-in", retry_dir)
    flat = " ".join(other.output.split())
    assert other.exit_code == 2, other.output
    assert f"--skip-done-in {str(retry_dir)!r}: this job's item_key() raised on input #0 of that retry run" in flat
    assert "AttributeError: 'int' object has no attribute 'upper'" in flat and "Traceback" not in flat
    assert not (tmp_path / "out2").exists()


# Targeted reruns.


@pytest.fixture
def failed_run(cli, tmp_path: Path) -> Path:
    """A finished run of the rows project with two Unreachable failures and one ValueError."""
    outcome = cli(*rows_job(tmp_path))
    assert outcome.exit_code == 1 and outcome.summary["failed"] == 3, outcome.output
    (tmp_path / "ledger").unlink()
    assert outcome.run_dir is not None
    return outcome.run_dir


def retried(cli, tmp_path: Path, run_dir: Path, *options: str) -> tuple[str, Counter[str]]:
    """Retry ``run_dir`` with ``options`` (the fixed service): its output and the rows it processed. The retry runs go
    elsewhere (-d): beside the run, each would leave out what the ones before it did (test_retry_later.py)."""
    outcome = cli("retry", run_dir, "-p", "fixed=true", "-d", tmp_path / "retries", *options)
    assert outcome.exit_code == 0, outcome.output
    done = processed(tmp_path)
    (tmp_path / "ledger").unlink(missing_ok=True)
    return outcome.output, done


def test_retry_filters_take_exactly_the_matching_failures_and_say_how_many(cli, tmp_path: Path, failed_run: Path) -> None:
    """--error-type (a base class matches the user's subclass), --match, --since/--until and --limit each pick their failures."""
    output, done = retried(cli, tmp_path, failed_run, "--error-type", "ConnectionError")
    assert "2 failure(s) match --error-type ConnectionError" in output and set(done) == {"down-1", "down-2"}
    output, done = retried(cli, tmp_path, failed_run, "--error-type", "rows.Unreachable", "--limit", "1")
    assert "1 failure(s) match" in output and set(done) == {"down-1"}
    output, done = retried(cli, tmp_path, failed_run, "--match", r"row \w+-1 is malformed")
    assert "1 failure(s) match" in output and set(done) == {"bad-1"}
    output, done = retried(cli, tmp_path, failed_run, "--since", "2000-01-01", "--until", "2999-01-01T00:00+00:00")
    assert "3 failure(s) match" in output and set(done) == {"down-1", "bad-1", "down-2"}
    output, done = retried(cli, tmp_path, failed_run, "--until", "2000-01-01")
    assert "nothing to retry" in output and not done


def test_retry_dry_run_lists_the_failures_and_runs_nothing(cli, tmp_path: Path, failed_run: Path) -> None:
    """retry --dry-run lists the matching failures with the retry command and makes no run and processes nothing."""
    before = set((tmp_path / "out").iterdir())
    outcome = cli("retry", failed_run, "--error-type", "OSError", "--dry-run")
    assert outcome.exit_code == 0, outcome.output
    assert "matching --error-type OSError: 2 of 3" in outcome.output
    assert "rows.Unreachable: host down-1 unreachable" in outcome.output and "bad-1" not in outcome.output
    assert "Dry run: nothing was retried." in outcome.output
    assert set((tmp_path / "out").iterdir()) == before and not ledger(tmp_path)
    # -p is not checked without running (the job is not loaded): said, not passed over as if it had been.
    given = cli("retry", failed_run, "--dry-run", "-p", "bogus=1")
    assert given.exit_code == 0 and "The -p values given (bogus) were not checked: the retry checks them." in " ".join(given.output.split())
    assert cli("retry", failed_run, "--dry-run", "-p", "no-equals-sign").exit_code == 2


def test_show_failures_lists_input_error_attempts_and_when(cli, tmp_path: Path, failed_run: Path) -> None:
    """show --failures lists every matching failure with its input, error, attempts and time; a filter narrows it."""
    every = cli("show", failed_run, "--failures")
    assert every.exit_code == 0, every.output
    assert "3 of 3" in every.output and "1 attempt" in every.output and time.strftime("%Y-%m-%d") in every.output
    assert 'input: "bad-1"' in every.output and "ValueError: row bad-1 is malformed" in every.output
    narrowed = cli("show", failed_run, "--failures", "--error-type", "ConnectionError", "--match", "down-2")
    assert "1 of 3" in narrowed.output and "down-2" in narrowed.output and "down-1" not in narrowed.output
    assert f"batchcli retry {failed_run} --error-type ConnectionError --match down-2" in narrowed.output
    # The printed command is one a shell gives back as it was typed: repr() doubled the backslash of \d, and the
    # pasted command matched nothing.
    escaped = cli("show", failed_run, "--failures", "--match", r"down-\d")
    assert "2 of 3" in escaped.output
    command = " ".join(escaped.output.split()).split("Retry them with: ")[1]
    assert shlex.split(command)[2:] == [str(failed_run), "--match", r"down-\d"], command


def test_show_failures_says_which_types_it_could_not_check_for_a_subclass(cli, tmp_path: Path) -> None:
    """With the project broken since (or moved), a base class matched none of its own subclasses, silently: "0 of 3",
    as if none of those failures were connection errors. ``show`` now says which types it could not check, and why."""
    job = tmp_path / "rows.py"
    job.write_text(ROWS.read_text())
    ran = cli("exec", job, *rows_job(tmp_path)[2:])  # the rows project, as a copy this test breaks
    assert ran.exit_code == 1 and ran.run_dir is not None, ran.output
    job.write_text("raise ImportError('the rows module is being rewritten')\n")
    shown = subprocess.run(  # a process of its own: this one imported the project's module already
        [sys.executable, "-m", "batchcli", "show", str(ran.run_dir), "--failures", "--error-type", "ConnectionError"],
        capture_output=True, text=True, timeout=60, env=subprocess_env(COLUMNS="250"),
    )  # fmt: skip
    said = " ".join(shown.stdout.split())
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "matching --error-type ConnectionError: 0 of 3" in said, said
    assert "Not checked for a subclass of ConnectionError: rows.Unreachable (the run's project does not load here: " \
        "ImportError: the rows module is being rewritten). Give such a type by name to take its failures: " \
        "--error-type Unreachable" in said, said
    by_name = subprocess.run(
        [sys.executable, "-m", "batchcli", "show", str(ran.run_dir), "--failures", "--error-type", "Unreachable"],
        capture_output=True, text=True, timeout=60, env=subprocess_env(COLUMNS="250"),
    )  # fmt: skip
    assert "matching --error-type Unreachable: 2 of 3" in " ".join(by_name.stdout.split()), by_name.stdout


def test_skip_done_in_does_only_new_rows_of_a_grown_input(cli, tmp_path: Path, failed_run: Path, keys_kept: str) -> None:
    """--skip-done-in a run and its retry skips every row either did; new rows (and the one still failing) run."""
    fixed = cli("retry", failed_run, "--error-type", "ConnectionError", "-p", "fixed=true")
    assert fixed.exit_code == 0, fixed.output
    retry_dir = fixed.run_dir  # not the newest directory: the retry's lock file leaves the run retried as it ends
    (tmp_path / "ledger").unlink()
    grown = "x a b y down-1 c z bad-1 d down-2 e"  # new rows in between shift every position
    outcome = cli(*rows_job(tmp_path, grown, "--skip-done-in", str(failed_run), "--skip-done-in", str(retry_dir)))
    assert outcome.exit_code == 1, outcome.output
    assert processed(tmp_path) == Counter({"x": 1, "y": 1, "z": 1, "bad-1": 1})
    assert outcome.summary["total"] == 4 and "skipping items done in 2 earlier runs" in cli("show", outcome.run_dir).output
    text = " ".join(outcome.output.split())
    assert "Skipping the items whose item_key() is one of the 7 that succeeded in those 2 runs" in text
    assert "made by another job" not in text


def test_a_run_skipping_done_items_resumes_after_those_runs_moved(cli, tmp_path: Path, keys_kept: str) -> None:
    """A run started with --skip-done-in A could never be finished once A was archived: resume read A again, and
    said A "does not exist" as if the user had typed it. The run keeps the keys it skips as it starts."""
    first = cli(*rows_job(tmp_path, "a b c"))
    assert first.exit_code == 0, first.output
    crashed = cli(*rows_job(tmp_path, "a b c d e f", "--skip-done-in", str(first.run_dir), "-p", "crash_at=e"))
    assert crashed.exit_code == 3, crashed.output
    older = cli(*rows_job(tmp_path, "a b c d e f", "--skip-done-in", str(first.run_dir), "-p", "crash_at=d"))
    assert older.exit_code == 3, older.output
    with sqlite3.connect(older.run_dir / "journal.sqlite") as conn:
        conn.execute("DROP TABLE IF EXISTS skipped_keys")  # as an older batchcli made it
    archived = tmp_path / "archive"
    archived.mkdir()
    first.run_dir.rename(archived / first.run_dir.name)
    resumed = cli("resume", crashed.run_dir, "-p", "crash_at=")
    assert resumed.exit_code == 0, resumed.output
    assert processed(tmp_path) == Counter({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1})
    summary = json.loads((crashed.run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (3, 0)
    # A journal that kept no keys needs the run where it was, and says so of the run it was started with.
    refused = cli("resume", older.run_dir, "-p", "crash_at=")
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.output.split())
    assert f"Run '{older.run_dir}' was started with --skip-done-in '{first.run_dir}', which is no longer there" in said
    assert "Put that run back at that path, then resume again." in said and "Traceback" not in refused.output


def test_skip_done_in_the_same_run_twice_counts_it_once(cli, tmp_path: Path, failed_run: Path) -> None:
    """The same run given twice (once by another spelling of its path) is one earlier run, not two."""
    other_spelling = tmp_path / "out" / ".." / "out" / failed_run.name
    outcome = cli(*rows_job(tmp_path, WORDS, "--dry-run", "--skip-done-in", str(failed_run), "--skip-done-in", str(other_spelling)))
    assert outcome.exit_code == 0, outcome.output
    text = " ".join(outcome.output.split())
    assert "skipping items done in 1 earlier run" in text and "2 earlier runs" not in text, text
    assert "succeeded in that run" in text, text


def test_skip_done_in_a_run_of_another_job_warns_that_its_keys_are_compared_as_they_are(cli, tmp_path: Path, failed_run: Path) -> None:
    """A run of another job skipped every item whose key matched, without a word (a job keyed 0, 1, 2 ... did
    nothing); the skip stays, a warning names both jobs."""
    other = tmp_path / "other_rows.py"
    other.write_text(ROWS.read_text())
    args = rows_job(tmp_path, "a b new")
    args[1] = str(other)
    outcome = cli(*args, "--skip-done-in", str(failed_run))
    assert outcome.exit_code == 0, outcome.output
    text = " ".join(outcome.output.split())
    assert f"Warning: --skip-done-in '{failed_run}' was made by another job ('{ROWS}', not '{other}')" in text
    assert "Skipping the items whose item_key() is one of the 5 that succeeded in that run" in text
    assert processed(tmp_path) == Counter({"new": 1})


# Bad input.


def test_skip_done_in_needs_an_item_key(cli, tmp_path: Path) -> None:
    """A Source without item_key cannot skip by --skip-done-in: the error says why a key is needed, exit 2."""
    first = cli("exec", ORDERS, "-p", "log_dir=.", "-p", "count=3", "-p", "strict=false", "-d", "out")
    outcome = cli("exec", ORDERS, "-p", "log_dir=.", "-d", "out", "--skip-done-in", first.run_dir)
    assert outcome.exit_code == 2, outcome.output
    assert "--skip-done-in needs Orders.item_key(item)" in outcome.output
    assert "Define item_key(self, item) on Orders" in outcome.output and "Traceback" not in outcome.output


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        (["--limit", "0"], "Give a positive number of items to try"),
        (["--limit", "-2"], "--limit -2 takes no items"),
        (["--sample", "0"], "is not a fraction in (0, 1]"),
        (["--sample", "1.5"], "e.g. --sample 0.1"),
        (["--sample", "1e-300"], "is too small to take any item"),  # it ran, and took none
        (["--seed", "3"], "Add --sample FRACTION"),
        (["--skip-done-in", "nowhere"], "'nowhere' is not a run directory: it does not exist"),
        (["--skip-done-in", "."], "has no journal.sqlite"),
    ],
)
def test_bad_trial_options_are_one_paragraph_errors(cli, tmp_path: Path, options: list[str], fix: str) -> None:
    """Each bad --limit, --sample, --seed or --skip-done-in is exit 2 with the value and the fix, nothing run."""
    outcome = cli(*rows_job(tmp_path, WORDS, *options))
    assert outcome.exit_code == 2, outcome.output
    assert fix in outcome.output and "Traceback" not in outcome.output
    assert not ledger(tmp_path) and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        (["--match", "(unclosed"], "is not a regular expression"),
        (["--error-type", "NoSuchError"], "Give one of those, or a base class such as OSError"),
        (["--since", "last week"], "Give e.g. --since 2024-05-01"),
        (["--since", "2030-01-02", "--until", "2030-01-01"], "Swap them"),
        # Valid ISO dates that local time cannot count: a traceback from .timestamp() and fromtimestamp() before.
        (["--since", "0001-01-01"], "Give a nearer one, e.g. --since 2024-05-01"),
        (["--until", "9999-12-31T23:59-14:00"], "Give a nearer one, e.g. --until 2024-05-01"),
        (["--limit", "0"], "Give a positive number, e.g. --limit 10"),
    ],
)
def test_bad_failure_filters_are_one_paragraph_errors(cli, tmp_path: Path, failed_run: Path, options: list[str], fix: str) -> None:
    """Each bad retry/show filter is exit 2 with the fix, for retry and show --failures alike; nothing is retried."""
    for command in (["retry", str(failed_run)], ["show", str(failed_run), "--failures"]):
        outcome = cli(*command, *options)
        assert outcome.exit_code == 2, outcome.output
        assert fix in outcome.output and "Traceback" not in outcome.output
    assert not ledger(tmp_path)


def test_limit_through_a_real_process(tmp_path: Path, run_batchcli) -> None:
    """python -m batchcli exec --limit 2 processes two rows and records the trial in its journal."""
    outcome = run_batchcli(*rows_job(tmp_path, "a b c d", "--limit", "2"))
    assert outcome.exit_code == 0, outcome.output
    assert processed(tmp_path) == Counter({"a": 1, "b": 1})
    assert outcome.run_dir is not None
    spec = sqlite3.connect(outcome.run_dir / "journal.sqlite").execute("SELECT spec FROM selection").fetchone()[0]
    assert json.loads(spec)["limit"] == 2


def test_retry_filter_through_a_real_process(tmp_path: Path, failed_run: Path, run_batchcli) -> None:
    """python -m batchcli retry --error-type OSError says how many match and reprocesses only those."""
    outcome = run_batchcli("retry", failed_run, "--error-type", "OSError", "-p", "fixed=true")
    assert outcome.exit_code == 0, outcome.output
    assert "2 failure(s) match --error-type OSError; retrying them." in outcome.output
    assert processed(tmp_path) == Counter({"down-1": 1, "down-2": 1})


@pytest.mark.parametrize("seed", [str(2**64), str(-(2**63) - 1)])
def test_a_seed_past_64_bits_is_refused(cli, seed: str) -> None:
    """Seeds 2**64 apart picked the same sample, though another seed is said to pick others."""
    refused = cli("exec", PROJECTS / "trials" / "rows.py", "-d", "out", "--sample", "0.5", "--seed", seed)
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and f"--seed {seed} is out of range" in said and refused.run_dir is None, said


def test_a_time_filter_with_a_fraction_of_a_second_is_repeated_with_it(cli, failed_run: Path) -> None:
    """`show --failures --since T.fff` filtered by the fraction but printed T cut to the second, in its header and in the
    "Retry them with:" command, which then selected other failures than the ones listed."""
    conn = sqlite3.connect(failed_run / "journal.sqlite")
    try:
        failed_at = sorted(r[0] for r in conn.execute("SELECT failed_at FROM failures"))
    finally:
        conn.close()
    between = (failed_at[0] + failed_at[1]) / 2  # the three failures are milliseconds apart
    since = datetime.fromtimestamp(between).isoformat(timespec="microseconds")
    shown = " ".join(cli("show", failed_run, "--failures", "--since", since).output.split())
    assert f"--since {since}" in shown and f"batchcli retry {failed_run} --since {since}" in shown, shown


def test_a_limited_run_closes_the_sources_generator_and_logs_what_its_finally_raised(run_batchcli, tmp_path: Path) -> None:
    """A run that ends before its Source does (--limit here; a stop or a fatal error alike) left the generator to
    the garbage collector: its finally ran whenever that came, and an error there was "Exception ignored in" on
    stderr, outside the run's log. The run closes it now and logs what it raised, with the user's traceback."""
    job = tmp_path / "cursor.py"
    job.write_text(
        "from batchcli import Service, Source, inject\n\n\n@inject\nclass Rows(Source[int]):\n"
        "    def __iter__(self):\n        try:\n            yield from range(20)\n        finally:\n"
        "            raise RuntimeError('the cursor did not close')\n\n\n"
        "@inject\nclass Work(Service[int]):\n    def process(self, item: int) -> None:\n        pass\n"
    )
    result = run_batchcli("exec", job, "-d", "out", "--limit", "5", "--no-shell")
    assert result.exit_code == 0, result.output
    assert "Exception ignored" not in result.output, result.output
    log = (result.run_dir / "batchcli.log").read_text()
    assert "The Source raised while it was closed" in log and "RuntimeError: the cursor did not close" in log, log
    assert 'cursor.py", line 10, in __iter__' in log


def test_since_and_until_at_a_failures_own_time_take_it_and_leave_it(cli, tmp_path: Path, failed_run: Path) -> None:
    """A failure's time copied from failed.jsonl (to the microsecond) and given to --since takes that failure, and
    to --until leaves it: compared as floats, about half the times fell a hair to the wrong side."""
    lines = [json.loads(line) for line in (failed_run / "failed.jsonl").read_text().splitlines()]
    times = sorted(line["failed_at"] for line in lines)
    for at in times:
        since = cli("show", failed_run, "--failures", "--since", at)
        until = cli("show", failed_run, "--failures", "--until", at)
        later, earlier = sum(t >= at for t in times), sum(t < at for t in times)
        assert f": {later} of 3" in " ".join(since.output.split()), (at, since.output)
        if earlier:
            assert f": {earlier} of 3" in " ".join(until.output.split()), (at, until.output)
