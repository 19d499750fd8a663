"""A failure retried successfully from the pause shell counts as a success in the Tally and in the journal."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from batchcli.load.wiring import Wiring, build_job
from batchcli.journal.writer import Journal
from batchcli.outcome import Failure, Tally
from batchcli.load.project import load_project
from batchcli.journal.rundir import read_run

PROJECTS = Path(__file__).resolve().parent / "projects"
COUNTING = PROJECTS / "journal_counting" / "counting.py"
KEYED = PROJECTS / "journal_keyed" / "keyed.py"


def rows(run_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def failure_of(ordinal: int, item: Any) -> Failure:
    return Failure(ordinal, item, "ValueError", "bad", "", 1, 0.0, 0.0)


def start(tmp_path: Path, keyed: bool) -> tuple[Journal, Tally, list[tuple[int, Any]], Path]:
    """A journaled run of ten items (the keyed project's are shuffled names), all taken from the source."""
    target = str(KEYED if keyed else COUNTING)
    wiring = Wiring(target=target, config_name=None, values={"log_dir": (str(tmp_path),), "count": ("10",)})
    job = build_job(load_project(target), wiring)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    journal = Journal.create(run_dir, job, wiring, keyed=keyed, parent=None, inputs=None)
    tally = Tally(total=10)
    journal.begin(tally)
    source: Any = job.source
    names = source.names if keyed else list(range(10))
    key_of = source.item_key if keyed else None
    taken = list(journal.skip_settled(zip(itertools.count(), iter(names)), tally, key_of))
    return journal, tally, taken, run_dir


def assert_all_ten_done(run_dir: Path, keyed: bool, item: Any) -> None:
    """The journal holds no failure and all ten items done, ``item`` among them (by key or by position)."""
    assert rows(run_dir, "SELECT count(*) FROM failures") == [(0,)]
    info = read_run(run_dir)
    assert (info.succeeded, info.failed) == (10, 0)
    if keyed:
        assert (item,) in rows(run_dir, "SELECT key FROM done_keys")
    else:
        assert rows(run_dir, "SELECT start, stop FROM done_ranges") == [(0, 10)]


@pytest.mark.parametrize("keyed", [False, True], ids=["by-position", "by-key"])
def test_a_journaled_failure_that_later_succeeds_is_forgiven(tmp_path: Path, keyed: bool) -> None:
    """The journal drops the failure row and counts the item done, so neither resume nor retry redoes it."""
    journal, tally, taken, run_dir = start(tmp_path, keyed)
    ordinal, item = taken[7]
    for n, _ in taken:
        if n != ordinal:
            tally.succeeded += 1
            tally.done.append(n)
    failure = failure_of(ordinal, item)
    tally.fail(failure)
    journal.record(tally.take_done(), [tally.new_failures.popleft()])
    assert rows(run_dir, "SELECT ordinal FROM failures") == [(ordinal,)]

    assert tally.recover(failure)
    assert (tally.succeeded, tally.failed, list(tally.failures), list(tally.recovered)) == (10, 0, [], [ordinal])
    journal.forgive([tally.recovered.popleft()])
    journal.record(tally.take_done(), [])
    journal.finish("finished", None)
    journal.close()

    assert_all_ten_done(run_dir, keyed, item)


def test_a_failure_recovered_before_it_was_journaled_never_reaches_the_journal(tmp_path: Path) -> None:
    """Recovered before the flush: no failure row, nothing to forgive, the item is journaled as done."""
    journal, tally, taken, run_dir = start(tmp_path, keyed=True)
    ordinal, item = taken[3]
    failure = failure_of(ordinal, item)
    tally.fail(failure)
    assert tally.recover(failure)
    assert not tally.recover(failure)  # only once
    assert (list(tally.new_failures), list(tally.recovered)) == ([], [])
    journal.record(tally.take_done(), [])
    journal.close()
    assert rows(run_dir, "SELECT count(*) FROM failures") == [(0,)]
    assert rows(run_dir, "SELECT key FROM done_keys") == [(item,)]


@pytest.mark.parametrize("keyed", [False, True], ids=["by-position", "by-key"])
def test_a_failure_taken_back_while_a_failed_write_still_held_its_row_is_never_journaled(tmp_path: Path, keyed: bool) -> None:
    """The breaker takes back a failure whose row a failed flush kept in memory (a locked or full disk): the next
    flush must not write that row after the delete that found nothing, and the item, done later, counts once."""
    journal, tally, taken, run_dir = start(tmp_path, keyed)
    ordinal, item = taken[4]
    failure = failure_of(ordinal, item)
    tally.fail(failure)
    journal._conn.execute("PRAGMA busy_timeout = 0")  # fail at once instead of after the journal's wait
    blocker = sqlite3.connect(run_dir / "journal.sqlite")
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError):
            journal.record(tally.take_done(), [tally.new_failures.popleft()])  # kept for the next flush
    finally:
        blocker.rollback()
        blocker.close()

    assert tally.unfail(failure) and list(tally.released) == [ordinal]  # the recorder had taken it: released
    journal.release([tally.released.popleft()])
    for n, _ in taken:  # everything succeeds now, the taken-back item too
        tally.succeeded += 1
        tally.done.append(n)
    journal.record(tally.take_done(), [])
    journal.finish("finished", None)
    journal.close()

    assert_all_ten_done(run_dir, keyed, item)
