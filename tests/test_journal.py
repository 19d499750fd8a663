"""The run journal: a real SQLite file per run, compact, durable, masked, and refused when unsafe."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from batchcli import read_results
from batchcli.journal.writer import Journal
from batchcli.outcome import Tally
from batchcli.journal.rundir import read_run
from batchcli.journal.settled import RangeSet, skip_ordinals

PROJECTS = Path(__file__).resolve().parent / "projects"
COUNTING = PROJECTS / "journal_counting" / "counting.py"
SECRETIVE = PROJECTS / "journal_secret" / "secretive.py"
ORDERS = PROJECTS / "journal_retry" / "orders.py"


def rows(run_dir: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_range_set_merges_overlapping_and_touching_ranges() -> None:
    """Ranges that touch or overlap merge, and the count of ints stays exact."""
    ranges = RangeSet()
    ranges.add([5, 6, 7, 1, 2, 9])
    assert ranges.ranges() == [(1, 3), (5, 8), (9, 10)]
    ranges.add([3, 4, 8, 6])
    assert ranges.ranges() == [(1, 10)]
    assert len(ranges) == 9
    assert 1 in ranges and 9 in ranges and 0 not in ranges and 10 not in ranges


def test_ten_million_in_order_successes_stay_a_handful_of_rows(cli, tmp_path: Path) -> None:
    """A 10-million-item run journaled in 0.5 s batches (with in-flight holes) is one range row, not 10M rows."""
    (tmp_path / "logs").mkdir()
    assert cli("exec", COUNTING, "-d", "out", "-p", "count=0", "-p", "log_dir=logs").exit_code == 0
    run_dir = next((tmp_path / "out").iterdir())
    journal = Journal.open(run_dir)
    journal.begin(Tally())
    batch, late = 100_000, [5, 17, 99]  # three items of each batch are still in flight at its flush
    most_rows = 0
    for start in range(0, 10_000_000, batch):
        # What Tally.take_done hands over: this batch minus its late items, plus the previous batch's late ones.
        edges = [start, *[e for o in late for e in (start + o, start + o + 1)], start + batch]
        done = list(zip(edges[::2], edges[1::2]))
        if start:
            done = sorted(done + [(start - batch + o, start - batch + o + 1) for o in late])
        journal.record(done, [])
        most_rows = max(most_rows, rows(run_dir, "SELECT count(*) FROM done_ranges")[0][0])
    journal.record([(10_000_000 - batch + o, 10_000_000 - batch + o + 1) for o in late], [])
    journal.finish("finished", None)
    journal.close()
    assert rows(run_dir, "SELECT start, stop FROM done_ranges") == [(0, 10_000_000)]
    assert most_rows <= 4
    assert read_run(run_dir).succeeded == 10_000_000


def test_skip_ordinals_filters_async_sources() -> None:
    """An async source's settled ordinals are skipped and counted, the rest pass through in order."""

    async def numbered():
        for n in range(10):
            yield n, f"item {n}"

    async def collect() -> list[int]:
        tally = Tally()
        kept = [o async for o, _ in skip_ordinals(numbered(), RangeSet([(2, 4), (7, 8)]), tally)]  # type: ignore[union-attr]
        assert tally.skipped == 3
        return kept

    assert asyncio.run(collect()) == [0, 1, 4, 5, 6, 8, 9]


def test_exec_journals_the_run(cli, tmp_path: Path) -> None:
    """exec writes an owner-only journal: status, counts, ranges, failures with pickled inputs and reasons, timeline."""
    (tmp_path / "logs").mkdir()
    result = cli("exec", COUNTING, "-d", "out", "-p", "count=40", "-p", "log_dir=logs", "-p", "fail_every=10")
    assert result.exit_code == 1
    run_dir = result.run_dir
    assert (run_dir.stat().st_mode & 0o777) == 0o700
    assert (os.stat(run_dir / "journal.sqlite").st_mode & 0o777) == 0o600
    info = read_run(run_dir)
    assert (info.status, info.succeeded, info.failed, info.total, info.sessions) == ("finished", 36, 4, 40, 1)
    assert info.params == {"count": ["40"], "log_dir": ["logs"], "fail_every": ["10"]}
    assert rows(run_dir, "SELECT start, stop FROM done_ranges") == [(1, 10), (11, 20), (21, 30), (31, 40)]
    failures = rows(
        run_dir,
        "SELECT ordinal, item IS NOT NULL, item_type, error_type, error_message, attempts, traceback FROM failures ORDER BY ordinal",
    )
    assert [f[:6] for f in failures] == [
        (n, 1, "builtins.int", "ValueError", f"{n} is a multiple of 10", 1) for n in (0, 10, 20, 30)
    ]
    assert "counting.py" in failures[0][6]
    assert rows(run_dir, "SELECT sum(succeeded), sum(failed) FROM timeline") == [(36, 4)]
    summary = result.summary
    assert summary["succeeded"] + summary["failed"] + summary["unprocessed"] == summary["total"] == 40


def test_a_source_that_raises_leaves_a_resumable_crashed_run(cli, tmp_path: Path) -> None:
    """A run whose source raises is journaled as crashed with its error, and the counts still add up."""
    (tmp_path / "logs").mkdir()
    result = cli("exec", COUNTING, "-d", "out", "-p", "count=30", "-p", "log_dir=logs", "-p", "crash_at=12")
    assert result.exit_code == 3
    info = read_run(result.run_dir)
    assert info.status == "crashed"
    assert info.fatal is not None and info.fatal["message"] == "the source broke at 12"
    assert (info.succeeded, info.failed, info.unprocessed) == (12, 0, 18)
    summary = result.summary
    assert summary["succeeded"] + summary["failed"] + summary["unprocessed"] == summary["total"] == 30


def test_secret_params_are_never_stored_and_must_be_given_again(cli, tmp_path: Path, monkeypatch) -> None:
    """A Secret param's value is in no file of the run; resume names it, says how to give it again, and takes it
    from -p or the environment."""
    result = cli("exec", SECRETIVE, "-d", "out", "-p", "token=hunter2-XYZ", "-p", "crash_at=4")
    assert result.exit_code == 3
    run_dir = result.run_dir
    for path in run_dir.iterdir():
        assert b"hunter2-XYZ" not in path.read_bytes(), path.name
    assert read_run(run_dir).secrets == ["token"]

    refused = cli("resume", run_dir)
    assert refused.exit_code == 2
    assert "secret param 'token'" in refused.output
    assert "-p token=... (or set BATCHCLI_TOKEN)" in refused.output

    resumed = cli("resume", run_dir, "-p", "token=hunter2-XYZ", "-p", "crash_at=7")
    assert resumed.exit_code == 3, resumed.output
    assert read_run(run_dir).succeeded == 7
    monkeypatch.setenv("BATCHCLI_TOKEN", "hunter2-XYZ")
    resumed = cli("resume", run_dir, "-p", "crash_at=-1")
    assert resumed.exit_code == 0, resumed.output
    assert read_run(run_dir).succeeded == 10
    for path in run_dir.iterdir():
        assert b"hunter2-XYZ" not in path.read_bytes(), path.name


def test_resume_and_retry_refuse_a_journal_others_can_write(cli, tmp_path: Path) -> None:
    """A journal (or run directory) writable by group or others holds pickles nobody vouches for: refused, with the chmod fix."""
    (tmp_path / "logs").mkdir()
    result = cli("exec", ORDERS, "-d", "out", "-p", "count=8", "-p", "log_dir=logs")
    run_dir = result.run_dir
    journal = run_dir / "journal.sqlite"
    journal.chmod(0o666)
    for command in ("resume", "retry"):
        refused = cli(command, run_dir, "-p", "strict=false")
        assert refused.exit_code == 2
        assert "is writable by group and others (mode 0o666)" in refused.output
        assert f"chmod go-w '{run_dir}'/journal.sqlite*" in refused.output
    for path in run_dir.glob("journal.sqlite*"):
        path.chmod(0o600)
    run_dir.chmod(0o770)
    refused = cli("retry", run_dir)
    assert refused.exit_code == 2 and "writable by group" in refused.output
    assert f"chmod go-w '{run_dir}'" in refused.output
    run_dir.chmod(0o700)
    assert cli("retry", run_dir, "-p", "strict=false").exit_code == 0


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to give a file away")
def test_resume_refuses_a_journal_owned_by_someone_else(cli, tmp_path: Path) -> None:
    """A journal owned by another user is refused, saying why and what to do instead."""
    (tmp_path / "logs").mkdir()
    result = cli("exec", COUNTING, "-d", "out", "-p", "count=5", "-p", "log_dir=logs", "-p", "crash_at=2")
    journal = result.run_dir / "journal.sqlite"
    os.chown(journal, 4242, 4242)
    refused = cli("resume", result.run_dir)
    assert refused.exit_code == 2
    assert "belongs to user id 4242" in refused.output
    assert "copy the run directory" in refused.output


def test_a_directory_without_a_journal_is_a_clear_error(cli, tmp_path: Path) -> None:
    """resume, retry and show on a directory that is not a run, or does not exist, say so and what to give instead."""
    (tmp_path / "not-a-run").mkdir()
    for command in ("resume", "retry", "show"):
        missing = cli(command, tmp_path / "not-a-run")
        assert missing.exit_code == 2
        assert "has no journal.sqlite" in missing.output
        assert "batchcli runs -d OUTPUT_DIR" in missing.output
        absent = cli(command, tmp_path / "nowhere")
        assert absent.exit_code == 2
        assert "does not exist" in absent.output


def test_a_damaged_journal_is_a_clear_error(cli, tmp_path: Path) -> None:
    """A journal that is not SQLite any more is reported as damaged, pointing at failed.jsonl and exec; runs lists it."""
    (tmp_path / "logs").mkdir()
    result = cli("exec", COUNTING, "-d", "out", "-p", "count=5", "-p", "log_dir=logs", "-p", "crash_at=2")
    (result.run_dir / "journal.sqlite").write_bytes(b"this is not a database, it is a grocery list" * 100)
    for command in ("resume", "retry", "show"):
        damaged = cli(command, result.run_dir)
        assert damaged.exit_code == 2
        assert "is damaged" in damaged.output
        assert "failed.jsonl and summary.json" in damaged.output
        assert "Traceback" not in damaged.output
    listing = cli("runs", "-d", "out")
    assert listing.exit_code == 0
    assert "damaged" in listing.output


def test_names_with_undecodable_bytes_are_journaled_escaped_and_matched_again(cli: Any, tmp_path: Path) -> None:
    """A failure whose message, input and key hold a lone surrogate (a file name os.listdir decoded with
    surrogateescape) is recorded with that character escaped instead of stopping the run's recording; resume,
    retry and --skip-done-in match the escaped keys to the same items."""
    job = PROJECTS / "surrogates" / "job.py"
    ran = cli("exec", job, "-d", "out", "-p", "max_retries=0")
    assert ran.exit_code == 1, ran.output
    assert "Traceback" not in ran.output
    assert ran.summary["succeeded"] == 2 and ran.summary["failed"] == 1
    [line] = (ran.run_dir / "failed.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["error_message"] == "cannot open caf\\udce9.txt"
    assert json.loads(line)["input"] == b"caf\xe9.txt".decode("utf-8", "surrogateescape")  # a JSON escape: exact
    assert "cannot open caf\\udce9.txt" in (ran.run_dir / "batchcli.log").read_text(encoding="utf-8")
    kept = {row.key: row.value for row in read_results(ran.run_dir)}  # the key escaped, the value exact
    naive = b"na\xefve.txt".decode("utf-8", "surrogateescape")
    assert kept == {"plain.txt": ["plain.txt"], "na\\udcefve.txt": [naive]}
    assert "nothing to resume" in cli("resume", ran.run_dir).output
    retried = cli("retry", ran.run_dir, "-p", "bad=0")  # the input comes back as it was: this time it succeeds
    assert retried.exit_code == 0, retried.output
    assert retried.summary["succeeded"] == 1
    # naïve.txt (its key escaped) succeeded in the first run: skipped, or bad=2 would fail it; café.txt runs.
    again = cli("exec", job, "-d", "out", "-p", "bad=2", "--skip-done-in", str(ran.run_dir))
    assert again.exit_code == 0, again.output
    assert (again.summary["succeeded"], again.summary["failed"]) == (1, 0)


def test_keys_that_repeat_are_named_once_and_counted_when_the_session_ends(run_batchcli: Any) -> None:
    """item_key() giving two rows the same id: both are processed, the key counts once, so half the rows read as
    unprocessed; that used to happen without a word. A warning says why, once, and the count comes at the end."""
    result = run_batchcli("exec", PROJECTS / "repeated_keys" / "job.py", "-d", "out", "-p", "count=20")
    assert result.exit_code == 0 and result.run_dir is not None, result.output
    flat = " ".join(result.output.split())
    assert flat.count("item_key() gave an item a key that an earlier item of this run already had") == 1
    assert "10 succeeded item(s) of this session had a key an earlier item already had" in flat
    assert "Finished: 10 succeeded, 0 failed, 10 unprocessed of 20" in flat
    log = (result.run_dir / "batchcli.log").read_text()
    assert log.count("item_key() gave an item a key") == 1 and "10 succeeded item(s)" in log


def test_a_key_index_answers_as_the_set_it_stands_for() -> None:
    """The keys a run skips, past KEYS_HELD_MAX, are looked up in a temporary SQLite table instead of a set: it
    must tell the same keys apart as the set does (1, "1" and b"1" are three keys; text exactly, case and all)."""
    from batchcli.journal.keyindex import KeyIndex
    from batchcli.journal.settled import normal_key

    stored = (1, "1", b"1", -(2**63), 2**63 - 1, 2**64, "", "Ünïcode", "a\x00b", "key", "KEY", "\udcff")
    keys = [normal_key(k) for k in stored]
    index = KeyIndex(iter(keys))
    index.add(["key", "more"])  # one already there is kept once
    held = frozenset(keys) | {"more"}
    asked = [*held, *(normal_key(k) for k in (2, "2", b"2", 1.5, "ke", "key ", 2**64 + 1, "a\x00c", b"", 0, True))]
    assert [k in index for k in asked] == [k in held for k in asked]
    assert len(index) == len(held) and sorted(map(repr, index)) == sorted(map(repr, held))
    index.close()


def test_long_keys_go_to_the_index_before_a_million_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resume held up to a million settled keys in a set whatever their length: 470 MB for 312-character keys.
    Judged by the first keys it reads, a set that would pass KEYS_HELD_BYTES is an index instead, with every key."""
    from batchcli.journal import keyindex

    monkeypatch.setattr(keyindex, "KEYS_HELD_BYTES", 1_000_000)
    short = [f"k{n}" for n in range(5000)]  # about 100 bytes each held: 0.5 MB
    long = [f"https://example.com/{'x' * 300}/{n}" for n in range(5000)]  # about 400: 2 MB
    assert isinstance(keyindex.key_set(len(short), iter(short)), frozenset)
    index = keyindex.key_set(len(long), iter(long))
    assert isinstance(index, keyindex.KeyIndex)
    assert len(index) == 5000 and all(key in index for key in long) and "k1" not in index
    index.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_keys_on_disk_are_looked_up_a_batch_at_a_time_with_the_same_outcome(kind: str) -> None:
    """Past KEYS_HELD_MAX a resume asks the index about a batch of keys at once: the same items go on, in order, the
    same are skipped and counted, each key waits in ``pending``; an item_key that raises lets the items before it
    go on first, as one by one, then stops the source."""
    from batchcli.journal.keyindex import KeyIndex
    from batchcli.journal.settled import LOOKUP_BATCH, skip_keys

    count = 2 * LOOKUP_BATCH + 7  # two full batches and a short last one
    settled = KeyIndex(f"k{n}" for n in range(0, count, 3))

    def key_of(item: int) -> str:
        if item == count - 2:
            raise ValueError("no key for this one")
        return f"k{item}"

    def numbered() -> Any:
        if kind == "sync":
            return iter(enumerate(range(count)))

        async def items() -> Any:
            for pair in enumerate(range(count)):
                yield pair

        return items()

    tally, pending = Tally(), {}
    taken: list[int] = []
    skipping = skip_keys(numbered(), settled, key_of, pending, tally)
    with pytest.raises(ValueError, match="no key for this one"):
        if kind == "sync":
            taken.extend(ordinal for ordinal, _ in skipping)
        else:

            async def drain() -> None:
                async for ordinal, _ in skipping:
                    taken.append(ordinal)

            asyncio.run(drain())
    before = range(count - 2)
    assert taken == [n for n in before if n % 3] and tally.skipped == len([n for n in before if n % 3 == 0])
    assert pending == {n: f"k{n}" for n in taken}
