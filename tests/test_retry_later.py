"""``retry RUN`` leaves out the failures of RUN that a later retry of it processed successfully: ``retry RUN --limit 3``
to try a fix on a few, then ``retry RUN`` for the rest, processed those three again (their side effects twice)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import PROJECTS, subprocess_env

from batchcli.journal.rundir import read_run

JOBS = {"unkeyed": PROJECTS / "journal_retry" / "later.py", "keyed": PROJECTS / "journal_retry" / "later_keyed.py"}
ODD = [n for n in range(20) if n % 2]


def said(outcome) -> str:  # type: ignore[no-untyped-def]
    return " ".join(outcome.output.replace("│", " ").split())


def attempts(ledger: Path) -> Counter[tuple[int, str]]:
    return Counter((int(n), how) for n, how in (line.split() for line in ledger.read_text().splitlines()))


@pytest.mark.parametrize("kind", ["unkeyed", "keyed"])
def test_a_retry_leaves_out_what_a_later_retry_of_the_run_processed(cli, tmp_path: Path, kind: str) -> None:
    ledger = tmp_path / "ledger"
    first = cli("exec", JOBS[kind], "-d", "out", "--no-shell", "-p", f"ledger={ledger}", "-p", "max_retries=0")
    assert first.exit_code == 1 and len(first.failed) == 10, first.output
    run = first.run_dir
    split = cli("retry", run, "-p", "shards=2")  # a retry takes the failed inputs: it has no Source to split
    assert split.exit_code == 2 and "a retry takes the failed inputs, not the Source, so it would not be used" in said(split)
    tried = cli("retry", run, "--limit", "3", "-p", "fix=true", "--no-shell")
    assert tried.exit_code == 0 and tried.summary["succeeded"] == 3, tried.output

    dry = cli("retry", run, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"Leaving out 3 failure(s) of {str(run)!r} that a later retry of it processed successfully ({tried.run_dir.name})" in said(dry)
    assert f"Failures of {run}: 7 of 10" in said(dry) and "#1 " not in said(dry) and "#7 " in said(dry)

    rest = cli("retry", run, "-p", "fix=true", "--no-shell")
    assert rest.exit_code == 0 and rest.summary["succeeded"] == 7, rest.output
    assert "Leaving out 3 failure(s)" in said(rest)
    # every item succeeded exactly once: the three the first retry did were not processed again
    assert attempts(ledger) == Counter({**{(n, "ok"): 1 for n in range(20)}, **{(n, "failed"): 1 for n in ODD}})

    runs = sorted((tmp_path / "out").iterdir())
    again = cli("retry", run, "--no-shell")
    assert again.exit_code == 0, again.output
    assert "Every failure of run" in said(again) and "was processed successfully by a later retry; nothing to retry" in said(again)
    assert sorted((tmp_path / "out").iterdir()) == runs  # no run directory made for nothing
    limited = cli("retry", run, "--limit", "2", "--no-shell")  # not "matches" alone, as if --limit were wrong
    assert limited.exit_code == 0 and limited.run_dir is None, limited.output
    assert "matches --limit 2 among those left to retry (the others are said above); nothing to retry" in said(limited)


def test_what_failed_again_in_a_later_retry_is_retried_again(cli, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    first = cli("exec", JOBS["unkeyed"], "-d", "out", "--no-shell", "-p", f"ledger={ledger}", "-p", "max_retries=0")
    assert first.exit_code == 1, first.output
    tried = cli("retry", first.run_dir, "--limit", "3", "--no-shell")  # not fixed: the three fail again
    assert tried.exit_code == 1 and tried.summary["failed"] == 3, tried.output
    rest = cli("retry", first.run_dir, "-p", "fix=true", "--no-shell")
    assert rest.exit_code == 0 and rest.summary["succeeded"] == 10, rest.output
    assert "Leaving out" not in said(rest)


@pytest.mark.parametrize("kind", ["unkeyed", "keyed"])
def test_what_a_retry_of_a_retry_processed_is_done_for_the_run(cli, tmp_path: Path, kind: str) -> None:
    """run → R1 (its failures fail again) → R2 of R1, which fixes five: `retry run` listed all ten as still to do,
    and processed those five again. What R2 did goes back through R1 to the run."""
    ledger = tmp_path / "ledger"
    first = cli("exec", JOBS[kind], "-d", "out", "--no-shell", "-p", f"ledger={ledger}", "-p", "max_retries=0")
    assert first.exit_code == 1 and len(first.failed) == 10, first.output
    again = cli("retry", first.run_dir, "--no-shell")
    assert again.exit_code == 1 and again.summary["failed"] == 10, again.output
    fixed = cli("retry", again.run_dir, "--limit", "5", "-p", "fix=true", "--no-shell")
    assert fixed.exit_code == 0 and fixed.summary["succeeded"] == 5, fixed.output

    for listing in (cli("retry", first.run_dir, "--dry-run"), cli("show", first.run_dir, "--failures")):
        text = said(listing)
        assert f"Leaving out 5 failure(s) of {str(first.run_dir)!r} that a later retry of it processed successfully ({fixed.run_dir.name})" in text, text
        assert f"Failures of {first.run_dir}: 5 of 10" in text, text
    rest = cli("retry", first.run_dir, "-p", "fix=true", "--no-shell")
    assert rest.exit_code == 0 and rest.summary["succeeded"] == 5, rest.output
    # each item succeeded once: the five R2 did were not processed again
    assert Counter(n for (n, how), times in attempts(ledger).items() for _ in range(times) if how == "ok") == Counter(range(20))


@pytest.mark.parametrize("kind", ["unkeyed", "keyed"])
def test_a_retry_leaves_to_a_stopped_retry_what_it_has_still_to_process(cli, tmp_path: Path, kind: str) -> None:
    """`retry run` while a retry R1 of it was stopped took R1's unprocessed inputs too, and `resume R1` then
    processed them again."""
    ledger = tmp_path / "ledger"
    first = cli("exec", JOBS[kind], "-d", "out", "--no-shell", "-p", f"ledger={ledger}", "-p", "max_retries=0")
    assert first.exit_code == 1 and len(first.failed) == 10, first.output
    stopped = cli("retry", first.run_dir, "-p", "fix=true", "-p", "stop_at=5", "-p", "concurrency=1", "--no-shell")
    assert stopped.exit_code == 130 and stopped.run_dir is not None, stopped.output
    left = 10 - stopped.summary["succeeded"]
    assert 0 < left < 10, stopped.summary

    rest = cli("retry", first.run_dir, "-p", "fix=true", "--no-shell")
    assert rest.exit_code == 0 and rest.run_dir is None, rest.output  # nothing left to retry here
    text = said(rest)
    assert f"Leaving out {left} failure(s) of {str(first.run_dir)!r} that {stopped.run_dir.name} (stopped) has still to " \
        f"process: resume it with batchcli resume {stopped.run_dir}" in text, text
    assert "or is left to a stopped one to resume (said above); nothing to retry" in text, text
    resumed = cli("resume", stopped.run_dir, "--no-shell")
    assert resumed.exit_code == 0, resumed.output
    assert Counter(n for (n, how), times in attempts(ledger).items() for _ in range(times) if how == "ok") == Counter(range(20))


def test_a_retry_of_a_run_whose_later_retry_is_still_running_is_refused(cli, tmp_path: Path) -> None:
    """Both would process the same inputs at once; the dry run says so too."""
    ledger = tmp_path / "ledger"
    first = cli("exec", JOBS["unkeyed"], "-d", "out", "--no-shell", "-p", f"ledger={ledger}", "-p", "max_retries=0")
    assert first.exit_code == 1, first.output
    slow = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "retry", str(first.run_dir), "-p", "sleep_s=30", "-p", "fix=true", "--no-shell"],
        env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            children = [d for d in (tmp_path / "out").iterdir() if d != first.run_dir and (d / "journal.sqlite").exists()]
            if children and read_run(children[0]).status == "running":
                break
            assert time.monotonic() < deadline and slow.poll() is None, "the slow retry never started"
            time.sleep(0.05)
        refused = cli("retry", first.run_dir, "-p", "fix=true", "--no-shell")
        assert refused.exit_code == 2, refused.output
        assert f"is being retried by another process (pid {slow.pid})" in said(refused), refused.output
        assert len(list((tmp_path / "out").iterdir())) == 2  # no run directory made
        dry = cli("retry", first.run_dir, "--dry-run")
        assert dry.exit_code == 0 and "A retry of this run is still running" in said(dry), dry.output
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait(timeout=60)


def test_a_groups_retries_leave_out_what_later_retries_of_the_group_or_a_shard_did(cli, tmp_path: Path) -> None:
    """The same rule for a group of shards (shards number their failures alike, so each failure is named by its
    shard too): a group retry after a --limit one takes the rest, and a shard's retry sees the group's retries."""
    ledger = tmp_path / "ledger"
    args = ("-d", "out", "--no-shell", "-p", f"ledger={ledger}", "-p", "max_retries=0", "--group", "g")
    for index in (0, 1, 2):  # every third item each: odd ones fail in every shard
        assert cli("exec", JOBS["unkeyed"], "--shard", f"{index}/3", *args).exit_code == 1
    group = tmp_path / "out" / "g"
    tried = cli("retry", group, "--limit", "3", "-p", "fix=true", "--no-shell")
    assert tried.exit_code == 0, tried.output
    dry = cli("retry", group, "--dry-run")
    assert f"Leaving out 3 failure(s) of {str(group)!r} that a later retry of it processed successfully" in said(dry)
    assert f"Failures of {group}: 7 of 10" in said(dry), said(dry)
    rest = cli("retry", group, "-p", "fix=true", "--no-shell")
    assert rest.exit_code == 0 and "Finished: 7 succeeded, 0 failed of 7" in said(rest), rest.output
    assert attempts(ledger) == Counter({**{(n, "ok"): 1 for n in range(20)}, **{(n, "failed"): 1 for n in ODD}})
    for shard in ("0/3", "1/3", "2/3"):  # a shard's own retry finds nothing left either
        again = cli("retry", group, "--shard", shard, "--no-shell")
        assert again.exit_code == 0 and "nothing to retry" in said(again), again.output


@pytest.mark.parametrize("kind", ["unkeyed", "keyed"])
def test_what_another_retry_of_the_run_processed_is_done_for_a_retry_of_it(cli, tmp_path: Path, kind: str) -> None:
    """run → R1 (its ten failures fail again) → `retry run` (R2) takes those ten as the run's and fixes them: `retry R1`
    took R1's ten failures and processed them a second time, as R2 is a retry of the run, not of R1."""
    ledger = tmp_path / "ledger"
    first = cli("exec", JOBS[kind], "-d", "out", "--no-shell", "-p", f"ledger={ledger}", "-p", "max_retries=0")
    assert first.exit_code == 1 and len(first.failed) == 10, first.output
    again = cli("retry", first.run_dir, "--no-shell")
    assert again.exit_code == 1 and again.summary["failed"] == 10, again.output
    fixed = cli("retry", first.run_dir, "-p", "fix=true", "--no-shell")
    assert fixed.exit_code == 0 and fixed.summary["succeeded"] == 10, fixed.output

    for listing in (cli("retry", again.run_dir, "--dry-run"), cli("show", again.run_dir, "--failures")):
        text = said(listing)
        assert f"Leaving out 10 failure(s) of {str(again.run_dir)!r} whose inputs another retry of the run they came " \
            f"from processed successfully since ({fixed.run_dir.name}): they are done." in text, text
    runs = sorted((tmp_path / "out").iterdir())
    rest = cli("retry", again.run_dir, "-p", "fix=true", "--no-shell")
    assert rest.exit_code == 0 and rest.run_dir is None, rest.output
    assert "was processed successfully by a later retry (of this run, or of the run its inputs came from); nothing " \
        "to retry" in said(rest), said(rest)
    assert sorted((tmp_path / "out").iterdir()) == runs
    assert Counter(n for (n, how), times in attempts(ledger).items() for _ in range(times) if how == "ok") == Counter(range(20))


@pytest.mark.parametrize("kind", ["unkeyed", "keyed"])
def test_a_retry_of_a_retry_leaves_to_a_stopped_retry_of_the_run_what_it_has_still_to_process(
    cli, tmp_path: Path, kind: str
) -> None:
    """run → R1 (its failures fail again) → `retry run` (R2) stopped half-way: `retry R1` took the inputs R2 had still
    to process, and `resume R2` processed them again."""
    ledger = tmp_path / "ledger"
    first = cli("exec", JOBS[kind], "-d", "out", "--no-shell", "-p", f"ledger={ledger}", "-p", "max_retries=0")
    assert first.exit_code == 1 and len(first.failed) == 10, first.output
    again = cli("retry", first.run_dir, "--no-shell")
    assert again.exit_code == 1 and again.summary["failed"] == 10, again.output
    stopped = cli("retry", first.run_dir, "-p", "fix=true", "-p", "stop_at=5", "-p", "concurrency=1", "--no-shell")
    assert stopped.exit_code == 130 and stopped.run_dir is not None, stopped.output
    done = stopped.summary["succeeded"]
    assert 0 < done < 10, stopped.summary

    rest = cli("retry", again.run_dir, "-p", "fix=true", "--no-shell")
    assert rest.exit_code == 0 and rest.run_dir is None, rest.output
    text = said(rest)
    assert f"Leaving out {done} failure(s) of {str(again.run_dir)!r} whose inputs another retry" in text, text
    assert f"Leaving out {10 - done} failure(s) of {str(again.run_dir)!r} whose inputs a stopped retry of the run they " \
        f"came from has still to process: resume it with batchcli resume {stopped.run_dir}" in text, text
    assert "or is left to a stopped one to resume (said above); nothing to retry" in text, text
    resumed = cli("resume", stopped.run_dir, "--no-shell")
    assert resumed.exit_code == 0, resumed.output
    assert Counter(n for (n, how), times in attempts(ledger).items() for _ in range(times) if how == "ok") == Counter(range(20))
