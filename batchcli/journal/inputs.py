"""A retry's inputs: copied, still pickled, from the journals they failed in into the retry's own, and read back a
page at a time as the run takes them.

A retry held every input it reprocessed at once, unpickled, with how and where each failed: 422 MB for a million
small inputs, and about 22 GB for a million failed 10 KB records, more than the machine that ran the job may
have. Now only the rowids of the failures a filter chose stay in memory (8 bytes each), and a page of inputs.
"""

from __future__ import annotations

import os
import pickle
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from batchcli.errors import JournalError
from batchcli.journal.rundir import check_safe, damaged, failures_by_rowid, has_table, query, quoted, stream
from batchcli.journal.settled import RangeSet

PAGE = 1000
"""Inputs read from a journal at a time."""

_FAILURE_INPUT = "item, error_type, shape(error_message), session, ordinal"

Progress = Callable[[str, int, int], None]
"""Told how a long preparation goes, a page at a time: the stage (a template for ``str.format(total=...)``), how many
inputs it has done, and of how many. A retry of a million inputs checks and copies each before its run starts."""

CHECKING = "Checking that each of the {total:,} failed inputs still loads"
COPYING = "Copying the {total:,} failed inputs into the retry's journal"

RETRY_ADVICE = "fix it, or leave this input out with --error-type, --match, --since or --until."
"""What to do about an input whose own unpickling code raised (``unpickle``), for a retry."""


class InputRow(NamedTuple):
    """One input of a retry, as its journal keeps it: the pickled input, how it failed, and the failure it was."""

    item: bytes
    error_type: str
    shape: str
    """The failure's ``message_shape``, for the circuit breaker (``EarlierErrors``)."""
    run: str
    """The name of the run directory that recorded the failure (a shard's, for a group's retry)."""
    session: int
    ordinal: int


@dataclass(frozen=True)
class Pick:
    """The failures of one run that a retry takes."""

    run_dir: Path
    rowids: array[int] | None
    """Their rowids in the failures table, in the order taken; None: every failure whose input was saved, in
    (session, ordinal) order."""
    count: int

    def rows(self) -> Iterator[InputRow]:
        """The picked failures' inputs, read a batch at a time."""
        name = self.run_dir.resolve().name
        for item, error_type, shape, session, ordinal in self._select(_FAILURE_INPUT):
            yield InputRow(item, error_type, shape, name, session, ordinal)

    def blobs(self) -> Iterator[bytes]:
        """Only the pickled inputs, as ``rows`` has them."""
        for (item,) in self._select("item"):
            yield item

    def _select(self, columns: str) -> Iterator[tuple[Any, ...]]:
        try:
            if self.rowids is None:
                yield from stream(self.run_dir, f"SELECT {columns} FROM failures WHERE item IS NOT NULL ORDER BY session, ordinal")
            else:
                yield from failures_by_rowid(self.run_dir, columns, self.rowids)
        except (JournalError, KeyError) as error:  # read before the retry began, and gone or changed since
            why = error.message.rstrip(".") if isinstance(error, JournalError) else "a failure it listed is no longer there"
            raise JournalError(
                f"The failed inputs of {str(self.run_dir)!r} could not be read as the retry took them: {why}. Was the "
                "run moved, deleted or changed meanwhile? Nothing was retried, and no run directory is left; retry "
                "again when the run is back in place."
            ) from error


@dataclass(frozen=True)
class RetryInputs:
    """The saved inputs a retry takes, from one run or from each shard of a group, in the order it takes them."""

    picks: tuple[Pick, ...]
    unsaved: int
    """Failures taken whose input could not be pickled when they failed: the retry cannot have them."""

    @property
    def count(self) -> int:
        return sum(pick.count for pick in self.picks)

    def rows(self) -> Iterator[InputRow]:
        for pick in self.picks:
            yield from pick.rows()

    def check(self, progress: Progress | None = None) -> None:
        """Unpickle each input once and let it go: one that no longer loads is a clear error before the run starts,
        not a fatal one in its middle."""
        total, done = self.count, 0
        if progress is not None:
            progress(CHECKING, 0, total)
        for pick in self.picks:
            path = check_safe(pick.run_dir)
            for blob in pick.blobs():
                unpickle(path, blob)
                done += 1
                if progress is not None and not done % PAGE:
                    progress(CHECKING, done, total)

    def rows_told(self, progress: Progress | None) -> Iterator[InputRow]:
        """``rows``, telling ``progress`` a page at a time (as the new run's journal copies them)."""
        if progress is None:
            yield from self.rows()
            return
        total = self.count
        progress(COPYING, 0, total)
        for done, row in enumerate(self.rows(), 1):
            yield row
            if not done % PAGE:
                progress(COPYING, done, total)


def copy_inputs(conn: Any, rows: Iterator[InputRow]) -> None:
    """Write a new retry run's inputs, how each failed and where, into its journal (``conn``), a page at a time."""
    ordinal = 0
    while page := list(islice(rows, PAGE)):
        numbered = range(ordinal, ordinal + len(page))
        conn.executemany("INSERT INTO inputs VALUES (?, ?)", zip(numbered, (row.item for row in page)))
        conn.executemany(
            "INSERT INTO input_errors VALUES (?, ?, ?)", ((n, row.error_type, row.shape) for n, row in zip(numbered, page))
        )
        conn.executemany(
            "INSERT INTO input_origins VALUES (?, ?, ?, ?)",
            ((n, row.run, row.session, row.ordinal) for n, row in zip(numbered, page)),
        )
        ordinal += len(page)


class _Settled:
    """What ``SavedInputs`` yields in place of an input that an earlier session settled: the resume skips it unseen."""

    def __repr__(self) -> str:
        return "<an input settled earlier, not loaded>"


SETTLED = _Settled()


class SavedInputs:
    """A retry run's inputs, unpickled from its own journal a page at a time as the run takes them, so that it
    resumes without the run it retried. Each page is its own short read: a read held open for the whole run
    would keep SQLite from ever folding its write-ahead log back into the journal.

    ``settled``: the ordinals earlier sessions of a resumed run settled, which it skips: they are not unpickled
    (``SETTLED`` stands in), so one that no longer loads does not stop the resume. None for a keyed run, which
    skips by each input's key and so loads them all."""

    def __init__(self, run_dir: Path, settled: RangeSet | None = None, advice: str = RETRY_ADVICE) -> None:
        self._run_dir = run_dir
        self._advice = advice
        """What to do about an input that no longer loads (``unpickle``)."""
        self._path = check_safe(run_dir)
        self._count: int = query(run_dir, "SELECT count(*) FROM inputs")[0][0]
        self._settled = settled if settled else None

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Any]:
        after = -1
        while page := query(
            self._run_dir, "SELECT ordinal, item FROM inputs WHERE ordinal > ? ORDER BY ordinal LIMIT ?", (after, PAGE)
        ):
            settled = self._settled
            for ordinal, blob in page:
                yield SETTLED if settled is not None and ordinal in settled else unpickle(self._path, blob, self._advice)
            after = page[-1][0]

    def check(self, progress: Progress | None = None) -> None:
        """As ``RetryInputs.check``: an input the resume takes that no longer loads says so before it starts."""
        settled = self._settled
        total, done = self._count - (len(settled) if settled is not None else 0), 0
        if progress is not None:
            progress(CHECKING, 0, total)
        for ordinal, blob in stream(self._run_dir, "SELECT ordinal, item FROM inputs ORDER BY ordinal"):
            if settled is None or ordinal not in settled:
                unpickle(self._path, blob, self._advice)
                done += 1
                if progress is not None and not done % PAGE:
                    progress(CHECKING, done, total)


class EarlierErrors(Sequence[tuple[str, str]]):
    """How each of a retry run's inputs failed before, by ordinal (type, message shape), for its circuit breaker.

    Each distinct pair is held once, and each input holds its index: a flood's million failures have a few pairs."""

    def __init__(self, pairs: list[tuple[str, str]], index: array[int]) -> None:
        self._pairs = pairs
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, ordinal: int) -> tuple[str, str]:  # type: ignore[override]
        return self._pairs[self._index[ordinal]]


class ErrorsNoted:
    """Builds ``EarlierErrors`` from a retry's inputs as they pass (``note``): a new retry has them as its journal
    takes them, and need not read them back."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._index = array("L")

    def note(self, rows: Iterator[InputRow]) -> Iterator[InputRow]:
        for row in rows:
            self.add(row.error_type, row.shape)
            yield row

    def add(self, error_type: str, shape: str) -> None:
        pair = (error_type, shape)
        number = self._seen.get(pair)
        if number is None:
            number = self._seen[pair] = len(self._seen)
        self._index.append(number)

    @property
    def count(self) -> int:
        return len(self._index)

    @property
    def errors(self) -> EarlierErrors | None:
        return EarlierErrors(list(self._seen), self._index) if self._index else None


def input_errors(run_dir: Path) -> EarlierErrors | None:
    """How a retry run's inputs failed before (``INPUT_ERRORS_TABLE``); None for a journal without them."""
    if not has_table(run_dir, "input_errors"):
        return None
    noted = ErrorsNoted()
    for ordinal, error_type, shape in stream(run_dir, "SELECT ordinal, error_type, shape FROM input_errors ORDER BY ordinal"):
        if ordinal != noted.count:  # not one row per input
            return None
        noted.add(error_type, shape)
    return noted.errors


def resume_advice(parent: str) -> str:
    """What a resumed retry run that cannot load an input it has still to process may do: the filters are
    ``retry``'s, of the run it retried (``parent``), which leaves out what this run processed successfully."""
    if not os.path.isdir(parent):
        return f"fix it, then resume again (the run it retried, {parent!r}, is gone: no new retry can leave it out)."
    return (
        f"fix it, or retry the run it retried instead, leaving this input out with --error-type, --match, --since or "
        f"--until (what this run processed successfully is left out too): batchcli retry {quoted(parent)} --match ..."
    )


def unpickle(path: Path, blob: bytes, advice: str = RETRY_ADVICE) -> Any:
    """One saved input, or a clear error when it cannot be loaded any more; ``advice`` says what to do when its own
    unpickling code raised."""
    try:
        return pickle.loads(blob)
    except Exception as error:
        if isinstance(error, pickle.UnpicklingError):
            raise damaged(path, f"a saved input is unreadable: {error}") from error
        if isinstance(error, (ImportError, AttributeError)):  # the class moved or is gone
            fix = (
                "The project's classes must be importable as they were when the run saved it; restore that class "
                "(same module and name), then try again."
            )
        else:  # the class is there, and its own unpickling code (__reduce__, __setstate__) raised
            fix = (
                f"Its class's unpickling code (__reduce__, __setstate__, __init__ of what it rebuilds) raised that: {advice}"
            )
        raise JournalError(
            f"An input saved in {str(path)!r} cannot be loaded: {type(error).__name__}: {error}. {fix}"
        ) from error
