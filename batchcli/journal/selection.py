"""Trial runs and incremental runs: which items of the source a run takes (``--limit``, ``--sample``, ``--skip-done-in``).

A ``Selection`` is kept in the run's journal (table ``selection``), so ``resume`` takes the same items;
``resume --all`` drops the limit and the sample and carries the run on to the whole source. A sample is
decided per ordinal by a seeded hash (splitmix64), not by a random stream: the same seed picks the same
items on every run and every resume, whatever was processed before. A Source with ``item_key`` is sampled by
key instead (``Selection.by_key``): its order may change between sessions, and by position a resume took
another sample, on top of what the first session did (a 25% sample grew to 40% over a reshuffled listing).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import pickle
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from batchcli.errors import JournalError, UsageError
from batchcli.journal.rundir import GROUP_FILE, JOURNAL_NAME, check_safe, connect, has_table, query, read_run, stream
from batchcli.journal.settled import Numbered, RangeSet, normal_key
from batchcli.journal.keyindex import KeySet, key_set
from batchcli.outcome import clip

TABLE = "CREATE TABLE IF NOT EXISTS selection (id INTEGER PRIMARY KEY CHECK (id = 1), spec TEXT NOT NULL);"
"""One row: the run's ``Selection`` as JSON. Journals without the table took every item."""

SKIPPED_TABLE = "CREATE TABLE IF NOT EXISTS skipped_keys (key PRIMARY KEY) WITHOUT ROWID;"
"""The keys ``--skip-done-in`` skips, kept as the run starts: a resume needs neither those runs nor their place (one
moved to an archive or deleted made the run impossible to finish). Journals without the table read the runs again."""

EXACT_COUNT_MAX = 1_000_000
"""A sample of a source with ``len()`` up to this size is counted exactly up front (for the bar and the ETA)."""

_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Selection:
    """Which items of the source a run takes; the default takes them all."""

    limit: int | None = None
    """``--limit``: at most this many items (the first ones, after the sample and the skips)."""
    fraction: float | None = None
    """``--sample``: keep each item with this probability, decided by its ordinal and ``seed``."""
    seed: int = 0
    """``--seed``: which sample."""
    skip_done_in: tuple[Path, ...] = ()
    """``--skip-done-in``: runs whose succeeded item keys this run skips (absolute paths)."""
    by_key: bool = False
    """Whether the sample is decided by each item's key, not its position (a keyed Source; ``for_source``)."""

    @property
    def is_trial(self) -> bool:
        """True for a limited or sampled run (``resume --all`` carries it on to the whole source)."""
        return self.limit is not None or self.fraction is not None

    @property
    def takes_all(self) -> bool:
        """True when the run takes every item of the source."""
        return not self.is_trial and not self.skip_done_in

    def for_source(self, keyed: bool) -> Selection:
        """This selection for a new run of a Source that has ``item_key`` (``keyed``) or not: a keyed one's sample
        goes by key. Kept in the journal, so a run started by position (older journals) resumes by position."""
        return replace(self, by_key=keyed and self.fraction is not None)

    def widened(self) -> Selection:
        """``resume --all``: the same skips, no limit and no sample."""
        return replace(self, limit=None, fraction=None)

    def describe(self) -> str:
        """How the run says it is a trial: ``the first 10 items``, ``a 10% sample (seed 0)``; "" for a whole run."""
        sample = limit = ""
        if self.fraction is not None:
            sample = f"a {_percent(self.fraction)} sample (seed {self.seed})"
        if self.limit is not None:
            limit = f"the first {self.limit:,} item{'s' * (self.limit != 1)}"
        text = f"{limit} of {sample}" if limit and sample else limit or sample
        if self.skip_done_in:
            runs = len(self.skip_done_in)
            skip = f"skipping items done in {runs} earlier run{'s' * (runs != 1)}"
            text = f"{text}, {skip}" if text else skip
        return text

    def to_json(self) -> str:
        spec: dict[str, Any] = {"limit": self.limit, "fraction": self.fraction, "seed": self.seed, "skip_done_in": [str(p) for p in self.skip_done_in]}
        if self.by_key:  # only then: a journal without it samples by position, as before
            spec["by_key"] = True
        return json.dumps(spec)

    @classmethod
    def from_json(cls, text: str) -> Selection:
        data = json.loads(text)
        return cls(
            data.get("limit"),
            data.get("fraction"),
            int(data.get("seed", 0)),
            tuple(Path(p) for p in data.get("skip_done_in", ())),
            bool(data.get("by_key", False)),
        )

    def as_dict(self) -> dict[str, Any] | None:
        """The form in ``summary.json``: None for a run that takes every item."""
        if self.takes_all:
            return None
        return {**json.loads(self.to_json()), "description": self.describe()}

    # Applying it.

    def total(self, length: int | None, position: Callable[[int], int] | None = None) -> int | None:
        """How many items the run takes from a source of ``length`` items; None when unknown until the end.
        ``position``: where each ordinal stands in the whole source, for a shard's share (``apply``)."""
        if length is None or self.skip_done_in or self.by_key:  # a sample by key is known once the keys were read
            return None
        if self.fraction is not None:
            if length > EXACT_COUNT_MAX:
                return None
            keep = _sampler(self.fraction, self.seed)
            at = position or (lambda ordinal: ordinal)
            length = sum(1 for ordinal in range(length) if keep(at(ordinal)))
        return length if self.limit is None else min(length, self.limit)

    def apply(
        self,
        items: Numbered,
        done: KeySet,
        key_of: Callable[[Any], Any] | None,
        taken_before: int = 0,
        position: Callable[[int], int] | None = None,
    ) -> tuple[Numbered, Iterator[int]]:
        """``items`` (numbered by source ordinal) narrowed to this selection, and a counter that ends one past
        the number taken (as the driver's ``zip`` counter does, for the total at exhaustion). ``taken_before``
        items of the limit were taken by earlier sessions, and ``items`` holds none of them. ``position`` maps a
        shard's ordinals to where the items stand in the whole source: the sample decides by that, so the shards of
        a group take together the items one run with the same seed would (by their ordinals, each shard took the
        same few, and the group's sample was runs of neighbouring items)."""
        taken = itertools.count()
        keep = None if self.fraction is None else _sampler(self.fraction, self.seed)
        skip = None
        if done and key_of is not None:
            skip = lambda item: normal_key(key_of(item)) in done  # noqa: E731
        if keep is not None and self.by_key and key_of is not None:
            # By key, whatever the position (a shard's items too): the item is skipped when its key is not sampled,
            # or done elsewhere; its key is made once for both.
            sample, keep = keep, None

            def skip(item: Any) -> bool:
                key = normal_key(key_of(item))
                return not sample(key_number(key)) or key in done

        elif keep is not None and position is not None:
            sample = keep
            keep = lambda ordinal: sample(position(ordinal))  # noqa: E731
        limit = None if self.limit is None else self.limit - taken_before
        if isinstance(items, Iterator):
            return _select(items, keep, skip, limit, taken), taken
        return _aselect(items, keep, skip, limit, taken), taken


def _percent(fraction: float) -> str:
    """``fraction`` as an exact percentage: ``99.9999%``, ``1e-298%``. Rounded (``.4g``), 0.999999 read "100%", a
    claim that every item is taken; the shortest decimal that reads back as ``fraction`` (its ``repr``, what the
    user typed) times 100 is exact, and as short as what was typed."""
    pct = (Decimal(repr(fraction)) * 100).normalize()
    return f"{pct:e}%" if pct.adjusted() < -4 else f"{pct:f}%"


def _cut_off(fraction: float) -> int:
    """The 64-bit hash below which a sample keeps an item: 0 takes none."""
    return math.floor(fraction * (1 << 64))


def _sampler(fraction: float, seed: int) -> Callable[[int], bool]:
    """Keep ordinal ``n`` when the splitmix64 hash of (seed, n) falls below ``fraction`` of its range."""
    threshold = _cut_off(fraction)
    offset = (seed * 0x9E3779B97F4A7C15) & _MASK

    def keep(ordinal: int) -> bool:
        z = (ordinal + offset + 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return (z ^ (z >> 31)) < threshold

    return keep


def key_number(key: str | int | bytes) -> int:
    """A 64-bit number for a normalised item key (``normal_key``), the same in every process (``hash`` of a str is
    not): what a sample by key hashes with its seed."""
    if isinstance(key, int):
        return key & _MASK
    data = key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _select(
    items: Iterator[tuple[int, Any]],
    keep: Callable[[int], bool] | None,
    skip: Callable[[Any], bool] | None,
    limit: int | None,
    taken: Iterator[int],
) -> Iterator[tuple[int, Any]]:
    n = 0
    if limit is not None and limit <= 0:  # all taken already: read nothing
        next(taken)
        return
    for ordinal, item in items:
        if (keep is not None and not keep(ordinal)) or (skip is not None and skip(item)):
            continue
        next(taken)
        n += 1
        yield ordinal, item
        if limit is not None and n >= limit:
            break  # before asking for another: a limited run reads no more of the source than it takes
    next(taken)


async def _aselect(
    items: AsyncIterator[tuple[int, Any]],
    keep: Callable[[int], bool] | None,
    skip: Callable[[Any], bool] | None,
    limit: int | None,
    taken: Iterator[int],
) -> AsyncIterator[tuple[int, Any]]:
    n = 0
    if limit is not None and limit <= 0:
        next(taken)
        return
    async for ordinal, item in items:
        if (keep is not None and not keep(ordinal)) or (skip is not None and skip(item)):
            continue
        next(taken)
        n += 1
        yield ordinal, item
        if limit is not None and n >= limit:
            break
    next(taken)


# Checking the options.


def selection_from_options(limit: int | None, sample: float | None, seed: int | None, skip_done_in: list[Path]) -> Selection:
    """The ``exec`` options as a Selection; bad values are a ``UsageError`` naming the value and the fix."""
    if limit is not None and limit < 1:
        raise UsageError(
            f"--limit {limit} takes no items. Give a positive number of items to try, e.g. --limit 10 "
            "(leave --limit out to run the whole source)."
        )
    if sample is not None and not 0 < sample <= 1:  # NaN fails the comparison too
        raise UsageError(
            f"--sample {sample!r} is not a fraction in (0, 1]. Give the share of items to take, e.g. --sample 0.1 "
            "for about one item in ten (leave --sample out to run the whole source)."
        )
    if sample is not None and _cut_off(sample) == 0:
        raise UsageError(
            f"--sample {sample!r} is too small to take any item: the sample decides by a 64-bit hash, so a fraction "
            "below 2**-64 (about 5.4e-20) takes none. Give a larger fraction, e.g. --sample 0.001, or --limit N for a "
            "few items."
        )
    if seed is not None and sample is None:
        raise UsageError(f"--seed {seed} only picks which --sample to take. Add --sample FRACTION, or leave --seed out.")
    if seed is not None and not -(2**63) <= seed < 2**63:  # the sampler takes 64 bits: seeds 2**64 apart picked alike
        raise UsageError(f"--seed {seed} is out of range. Give a whole number from -2**63 to 2**63 - 1, e.g. --seed 7.")
    # By resolved path, once each: a run given twice (or by two spellings) was counted as two earlier runs.
    runs = tuple(dict.fromkeys(run for path in skip_done_in for run in _runs_of(path)))
    return Selection(limit=limit, fraction=sample, seed=seed or 0, skip_done_in=runs)


def _runs_of(path: Path) -> list[Path]:
    """``--skip-done-in PATH``: a run directory, or a group's: its shards' runs and its retries (``runs`` lists a group
    as one line, and it was refused as "not a run directory")."""
    if (path / GROUP_FILE).is_file():
        runs = sorted(p.resolve() for p in path.iterdir() if (p / JOURNAL_NAME).is_file())
        if not runs:
            raise UsageError(f"--skip-done-in {str(path)!r} is a group with no run yet: none of its shards has started.")
        return runs
    return [check_run_dir(path, "--skip-done-in")]


def check_run_dir(path: Path, option: str) -> Path:
    """``path`` made absolute when it is a run directory (it has a journal); else a UsageError with the fix."""
    if not (path / JOURNAL_NAME).is_file():
        what = "does not exist" if not path.exists() else "has no journal.sqlite" if path.is_dir() else "is a file"
        raise UsageError(
            f"{option} {str(path)!r} is not a run directory: it {what}. Give a directory that `batchcli runs -d "
            "OUTPUT_DIR` lists (like batchcli_outputs/2024-05-01T10-00-00_myjob)."
        )
    return path.resolve()


def keys_done_in(runs: tuple[Path, ...], source_name: str, key_of: Callable[[Any], Any]) -> KeySet:
    """The item keys that succeeded in ``runs``: a keyed run's own, a retry run's by keying its saved inputs.

    A run that numbered its items by position (a Source without ``item_key``) is a UsageError.
    """
    count = 0
    keyed_runs: list[Path] = []
    retried: set[Any] = set()
    for run_dir in runs:
        info = read_run(run_dir)  # a damaged journal is a clear error here
        if info.status == "running":  # what it has done so far is not what it will have done: items ran twice
            raise JournalError(
                f"--skip-done-in {str(run_dir)!r}: that run is still running (pid {info.pid}), so the items it will "
                f"have done are not known yet. Wait for it to end, or stop it first (Ctrl-C, or kill -INT {info.pid}), then "
                "run this again."
            )
        keyed = query(run_dir, "SELECT keyed FROM run")[0][0]
        if keyed:
            count += query(run_dir, "SELECT count(*) FROM done_keys")[0][0]
            keyed_runs.append(run_dir)
        elif info.parent:  # a retry run: its inputs are saved, numbered by position in that list
            retried.update(_retried_keys(run_dir, key_of))
        else:
            raise UsageError(
                f"--skip-done-in {str(run_dir)!r}: that run identified its items by position, not by item_key() "
                f"(its Source did not define it then), so which of {source_name}'s items it did cannot be told once "
                "the input has changed. Give a run made with item_key(item) defined."
            )
    done = (key for run_dir in keyed_runs for (key,) in stream(run_dir, "SELECT key FROM done_keys"))
    return key_set(count + len(retried), itertools.chain(done, retried))


def _said(error: BaseException) -> str:
    return clip(f"{type(error).__name__}: {error}", 200)


def _retried_keys(run_dir: Path, key_of: Callable[[Any], Any]) -> set[Any]:
    """The keys of the inputs a retry run processed successfully (its saved inputs are unpickled: it must be yours)."""
    check_safe(run_dir)
    done = RangeSet(query(run_dir, "SELECT start, stop FROM done_ranges"))
    keys: set[Any] = set()
    for ordinal, blob in stream(run_dir, "SELECT ordinal, item FROM inputs ORDER BY ordinal"):
        if ordinal not in done:
            continue
        try:
            item = pickle.loads(blob)
        except Exception as error:  # its class is not importable from here, or changed since
            raise UsageError(
                f"--skip-done-in {str(run_dir)!r}: that retry run's saved inputs cannot be loaded here ({_said(error)}), "
                "so their keys cannot be told. Run this where that job's modules import (its directory), or give the "
                "run it retried, whose keys are recorded, if it was made with item_key(item) defined."
            ) from None
        try:
            keys.add(normal_key(key_of(item)))
        except Exception as error:  # the inputs of another job: this job's item_key cannot read them
            raise UsageError(
                f"--skip-done-in {str(run_dir)!r}: this job's item_key() raised on input #{ordinal} of that retry run "
                f"({_said(error)}), so it is not a run of this job's items. Give a run of this job."
            ) from None
    return keys


# In the journal.


def save_selection(conn: sqlite3.Connection, selection: Selection | None) -> None:
    """Record ``selection`` in an open journal (inside the caller's transaction); nothing for a whole run."""
    conn.execute(TABLE)
    if selection is not None and not selection.takes_all:
        conn.execute("INSERT OR REPLACE INTO selection VALUES (1, ?)", (selection.to_json(),))
    else:
        conn.execute("DELETE FROM selection")


def save_skipped(conn: sqlite3.Connection, keys: KeySet) -> None:
    """Keep the keys ``--skip-done-in`` skips in an open journal (inside the caller's transaction)."""
    conn.execute(SKIPPED_TABLE)
    conn.executemany("INSERT OR IGNORE INTO skipped_keys VALUES (?)", ((key,) for key in keys))


def recorded_skips(run_dir: Path) -> KeySet | None:
    """The keys the run kept as it started with ``--skip-done-in``; None when its journal kept none (older ones)."""
    if not has_table(run_dir, "skipped_keys"):
        return None
    count = query(run_dir, "SELECT count(*) FROM skipped_keys")[0][0]
    return key_set(count, (key for (key,) in stream(run_dir, "SELECT key FROM skipped_keys")))


def check_skip_runs_there(run_dir: Path, selection: Selection) -> None:
    """For a run whose journal kept no skipped keys: each ``--skip-done-in`` run must still be where it was."""
    for other in selection.skip_done_in:
        if not (other / JOURNAL_NAME).is_file():
            raise UsageError(
                f"Run {str(run_dir)!r} was started with --skip-done-in {str(other)!r}, which is no longer there (moved "
                "or deleted), and its journal, made by an older batchcli, did not keep the keys to skip. Put that run "
                "back at that path, then resume again."
            )


def read_selection(run_dir: Path) -> Selection | None:
    """The selection a run was started with; None when it takes every item (or its journal predates selections)."""
    if not has_table(run_dir, "selection"):
        return None
    rows = query(run_dir, "SELECT spec FROM selection")
    return Selection.from_json(rows[0][0]) if rows else None


def widen_selection(run_dir: Path, selection: Selection) -> None:
    """``resume --all``: record that the run now takes the whole source (its skips stay)."""
    record_selection(run_dir, selection.widened())


def record_selection(run_dir: Path, selection: Selection) -> None:
    """Record ``selection`` as the run's, in its own transaction (the run's lock is held by the caller)."""
    conn = connect(run_dir / JOURNAL_NAME, writer=True)
    try:
        with conn:
            save_selection(conn, selection)
    finally:
        conn.close()
