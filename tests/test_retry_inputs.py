"""A retry reads its inputs a page at a time: from the journal they failed in as it copies them into its own, then from
its own as the run takes them. It held every failed input at once, unpickled (about 22 GB for a million failed
10 KB records), more than the machine that ran the job may have."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

from conftest import PROJECTS

from batchcli.journal.inputs import PAGE
from batchcli.journal.rundir import query

RECORDS = PROJECTS / "journal_retry" / "records.py"
COUNT = 3 * PAGE


def stored(ledger: Path) -> tuple[Counter[int], int]:
    """How many times each record was stored, and the most Records alive at once while they were."""
    lines = [line.split() for line in ledger.read_text().splitlines()]
    return Counter(int(n) for n, _, _ in lines), max(int(live) for _, _, live in lines)


def fail_them_all(run_batchcli, job: Path, ledger: Path) -> Path:
    first = run_batchcli("exec", job, "-d", "out", "-p", f"ledger={ledger}", "-p", f"count={COUNT}",
                         "-p", "max_retries=0", "-p", "breaker_window=0")  # fmt: skip
    assert first.exit_code == 1 and first.summary["failed"] == COUNT, first.output
    return first.run_dir


def test_a_retry_holds_a_page_of_its_inputs_not_all_of_them(tmp_path: Path, run_batchcli) -> None:
    ledger = tmp_path / "ledger"
    run = fail_them_all(run_batchcli, RECORDS, ledger)

    retried = run_batchcli("retry", run, "-p", "fix=true")
    assert retried.exit_code == 0, retried.output
    assert retried.summary["succeeded"] == COUNT and retried.summary["failed"] == 0, retried.output
    times, most_alive = stored(ledger)
    assert times == Counter(range(COUNT))  # each record once, none lost in the paging
    assert most_alive < 2 * PAGE, f"{most_alive} of {COUNT} failed inputs were alive at once"

    # its journal holds each input once, in the order it failed, with where and how it failed
    origins = query(retried.run_dir, "SELECT ordinal, run, origin FROM input_origins ORDER BY ordinal")
    assert [(n, there) for n, _, there in origins] == [(n, n) for n in range(COUNT)]
    assert {name for _, name, _ in origins} == {run.name}
    assert query(retried.run_dir, "SELECT count(*), count(DISTINCT error_type) FROM input_errors") == [(COUNT, 1)]


def test_an_interrupted_retry_resumes_from_its_own_journal_a_page_at_a_time(tmp_path: Path, run_batchcli) -> None:
    ledger = tmp_path / "ledger"
    run = fail_them_all(run_batchcli, RECORDS, ledger)

    stopped = run_batchcli("retry", run, "-p", "fix=true", "-p", f"stop_at={PAGE + 10}")
    assert stopped.exit_code == 130, stopped.output
    retry_run = stopped.run_dir
    assert 0 < stopped.summary["succeeded"] < COUNT, stopped.output
    shutil.rmtree(run)  # a retry run keeps its inputs: it resumes without the run it retried

    resumed = run_batchcli("resume", retry_run)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.summary["succeeded"] == COUNT and resumed.summary["failed"] == 0, resumed.output
    times, most_alive = stored(ledger)
    assert times == Counter(range(COUNT))  # across the stop and the resume, each record stored exactly once
    assert most_alive < 2 * PAGE, f"{most_alive} of {COUNT} inputs were alive at once"


def test_a_retry_whose_inputs_no_longer_load_says_so_before_it_starts(tmp_path: Path, run_batchcli) -> None:
    job = tmp_path / "records.py"
    shutil.copy(RECORDS, job)
    ledger = tmp_path / "ledger"
    run = fail_them_all(run_batchcli, job, ledger)
    job.write_text(re.sub(r"\bRecord\b", "Row", job.read_text()))  # the inputs' class renamed
    runs = sorted((tmp_path / "out").iterdir())

    retried = run_batchcli("retry", run, "-p", "fix=true")
    said = " ".join(retried.output.split())
    assert retried.exit_code != 0 and "Traceback" not in retried.output, retried.output
    assert "cannot be loaded: AttributeError" in said and "restore that class (same module and name)" in said, said
    assert sorted((tmp_path / "out").iterdir()) == runs  # no run directory for a retry that could not start
    assert not ledger.exists()  # and nothing was processed


def test_a_long_retry_preparation_says_what_it_does(cli, tmp_path: Path, monkeypatch) -> None:
    """A retry of a million inputs checked and copied each for some 12 s before its display started, in silence.
    Each stage is said as it starts (here from 100 inputs instead of 10,000); a short one says nothing."""
    ledger = tmp_path / "ledger"
    first = cli("exec", RECORDS, "-d", "out", "-p", f"ledger={ledger}", "-p", "count=300", "-p", "max_retries=0",
                "-p", "breaker_window=0", "--no-shell")  # fmt: skip
    assert first.exit_code == 1, first.output
    quiet = cli("retry", first.run_dir, "--limit", "50", "-p", "fix=true", "--no-shell")
    assert quiet.exit_code == 0 and "Checking" not in quiet.output and "Copying" not in quiet.output, quiet.output

    monkeypatch.setattr("batchcli.run.preparing.SAID_FROM", 100)
    retried = cli("retry", first.run_dir, "-p", "fix=true", "--no-shell")
    assert retried.exit_code == 0, retried.output
    text = " ".join(retried.output.split())
    checking = text.index("Checking that each of the 250 failed inputs still loads, before the run starts...")
    copying = text.index("Copying the 250 failed inputs into the retry's journal, before the run starts...")
    assert checking < copying < text.index("Finished: 250 succeeded, 0 failed of 250"), text
    assert text.index("Leaving out 50 failure(s)") < checking, text  # what the retry takes, said before it starts


def test_a_long_retry_preparation_counts_on_a_terminal(tmp_path: Path, run_batchcli) -> None:
    """On a terminal the stages are a spinner that counts, gone before the run's own display starts; on a dumb one
    (an editor's shell, TERM=dumb), which draws no spinner, they are lines (it said nothing there)."""
    ledger = tmp_path / "ledger"
    first = run_batchcli("exec", RECORDS, "-d", "out", "-p", f"ledger={ledger}", "-p", "count=12000",
                         "-p", "max_retries=0", "-p", "breaker_window=0")  # fmt: skip
    assert first.exit_code == 1, first.output
    dumb = run_batchcli("retry", first.run_dir, "--limit", "11000", "--no-shell", TTY_COMPATIBLE="1", TERM="dumb")
    assert dumb.exit_code == 1, dumb.output  # not fixed: they fail again
    assert "Checking that each of the 11,000 failed inputs still loads, before the run starts..." in dumb.output
    assert "Copying the 11,000 failed inputs into the retry's journal, before the run starts..." in dumb.output

    retried = run_batchcli("retry", first.run_dir, "-p", "fix=true", "--no-shell", TTY_COMPATIBLE="1", TERM="xterm")
    assert retried.exit_code == 0, retried.output
    out = retried.output
    stage = r"(Checking that each of the 12,000 failed inputs still loads|Copying the 12,000 failed inputs into the retry's journal)"
    assert re.search(stage + r": [\d,]+ done", out), out[-2000:]  # as the spinner was last drawn, a stage's count
    assert "before the run starts" not in out  # the plain lines are for a console that is no terminal
    assert out.rindex("done") < out.index("Finished: 12000 succeeded, 0 failed of 12000"), out[-2000:]
    assert stored(ledger)[0] == Counter(range(12000))


def test_a_filtered_retry_holds_the_rowids_it_takes_not_the_failures(cli, tmp_path: Path, monkeypatch) -> None:
    """retry --match held every matched failure's row (its input's JSON, message, times) while it matched: some
    200 MB for 300,000 failures. It keeps their rowids now; the rows alive at once are counted here."""
    import weakref

    from batchcli.journal import matching

    ledger = tmp_path / "ledger"
    first = cli("exec", RECORDS, "-d", "out", "-p", f"ledger={ledger}", "-p", f"count={COUNT}", "-p", "max_retries=0",
                "-p", "breaker_window=0", "--no-shell")  # fmt: skip
    assert first.exit_code == 1, first.output
    alive: weakref.WeakSet = weakref.WeakSet()
    most = [0]

    class Counted(matching.FailureRow):
        def __init__(self, *values) -> None:
            super().__init__(*values)
            alive.add(self)
            most[0] = max(most[0], len(alive))

    monkeypatch.setattr(matching, "FailureRow", Counted)
    retried = cli("retry", first.run_dir, "--match", r"record \d+ is not", "-p", "fix=true", "--no-shell")
    assert retried.exit_code == 0, retried.output
    assert f"{COUNT} failure(s) match --match" in " ".join(retried.output.split()), retried.output
    assert stored(ledger)[0] == Counter(range(COUNT))
    assert 0 < most[0] < 10, f"{most[0]} of {COUNT} failure rows were alive at once"
