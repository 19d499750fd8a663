"""What a run has already settled: ordinals as merged ranges (or item keys), and the filter that skips them."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator, Callable, Container, Iterable, Iterator
import time
from typing import Any

from batchcli.journal.keyindex import KeyIndex
from batchcli.outcome import Tally, clip, runs, writable

Numbered = Iterator[tuple[int, Any]] | AsyncIterator[tuple[int, Any]]


class RangeSet:
    """A set of non-negative ints kept as sorted, merged half-open ranges ``[start, stop)``.

    A run that settles its items roughly in order stays a handful of ranges however many items it
    has. ``dirty`` collects the starts of ranges added or removed since the journal last wrote, so
    only those rows are rewritten.
    """

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.starts: list[int] = []
        self.stops: list[int] = []
        self.count = 0
        """How many ints the set holds."""
        self.dirty: set[int] = set()
        for start, stop in sorted(ranges):
            self.add_range(start, stop)
        self.dirty.clear()

    def __len__(self) -> int:
        return self.count

    def __contains__(self, value: int) -> bool:
        i = bisect_right(self.starts, value) - 1
        return i >= 0 and value < self.stops[i]

    def ranges(self) -> list[tuple[int, int]]:
        """Every range, in order."""
        return list(zip(self.starts, self.stops))

    def stop_of(self, start: int) -> int | None:
        """The stop of the range beginning at ``start``, or None when no range begins there."""
        i = bisect_left(self.starts, start)
        return self.stops[i] if i < len(self.starts) and self.starts[i] == start else None

    def add_range(self, start: int, stop: int) -> None:
        """Add ``[start, stop)``, merging it with every range it overlaps or touches."""
        starts, stops = self.starts, self.stops
        i = bisect_left(stops, start)  # the first range ending at or after start touches it
        j = bisect_right(starts, stop)  # ranges starting at or before stop touch it
        if i < j:
            removed = sum(stops[k] - starts[k] for k in range(i, j))
            self.dirty.update(starts[i:j])
            start, stop = min(start, starts[i]), max(stop, stops[j - 1])
        else:
            removed = 0
        starts[i:j] = [start]
        stops[i:j] = [stop]
        self.dirty.add(start)
        self.count += stop - start - removed

    def add(self, values: Iterable[int]) -> None:
        """Add many ints at once (duplicates allowed)."""
        for start, stop in runs(sorted(set(values))):
            self.add_range(start, stop)

    def take_dirty(self) -> tuple[list[tuple[int, int]], list[int]]:
        """The ranges to write and the starts to delete since the last call."""
        upserts, deletes = [], []
        for start in self.dirty:
            stop = self.stop_of(start)
            if stop is None:
                deletes.append(start)
            else:
                upserts.append((start, stop))
        self.dirty.clear()
        return upserts, deletes


def normal_key(key: Any) -> Any:
    """An item key as the journal stores it: str, int and bytes as they are (a str that UTF-8 cannot carry, a
    file name with a lone surrogate, with that character escaped: ``outcome.writable``), anything else as its
    ``repr``. Every use of a key goes through here, so the journal, resume and shards agree.

    An int SQLite cannot hold (64 bits, signed: a 128-bit id, ``uuid.int``) is kept as its decimal text, like other
    types: stored as it was, it failed every flush ("Python int too large to convert to SQLite INTEGER"), so every
    session crashed without recording anything.

    A subclass of str, int or bytes (a ``StrEnum`` or ``IntEnum`` member) is its plain value, as SQLite stores it:
    kept as it was, marshal (which writes exact types only) refused the batch of keys, and every session crashed."""
    kind = type(key)
    if kind is str:
        return writable(key)
    if kind is int:
        return key if _INT64_MIN <= key <= _INT64_MAX else repr(key)
    if kind is bytes:
        return key
    if isinstance(key, str):
        return normal_key(str.__str__(key))  # the value itself: a str Enum's own __str__ may say "Color.RED"
    if isinstance(key, bytes):
        return b"".join([key])
    if isinstance(key, int) and not isinstance(key, bool):
        return normal_key(int.__int__(key))
    return writable(repr(key))


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def skip_ordinals(items: Numbered, settled: RangeSet, tally: Tally) -> Numbered:
    """``items`` without the ordinals in ``settled``, counted in ``tally.skipped``.

    Ordinals arrive in increasing order, so one cursor walks the ranges: O(1) per item, and once
    past the last range the rest of the source goes through untouched.
    """
    starts, stops = list(settled.starts), list(settled.stops)
    if not starts:
        return items
    if isinstance(items, Iterator):
        return _skip_ordinals(items, starts, stops, tally)
    return _askip_ordinals(items, starts, stops, tally)


def _skip_ordinals(
    items: Iterator[tuple[int, Any]], starts: list[int], stops: list[int], tally: Tally
) -> Iterator[tuple[int, Any]]:
    k, n = 0, len(starts)
    for ordinal, item in items:
        while k < n and ordinal >= stops[k]:
            k += 1
        if k == n:
            yield ordinal, item
            yield from items
            return
        if ordinal >= starts[k]:
            tally.skipped += 1
            continue
        yield ordinal, item


async def _askip_ordinals(
    items: AsyncIterator[tuple[int, Any]], starts: list[int], stops: list[int], tally: Tally
) -> AsyncIterator[tuple[int, Any]]:
    k, n = 0, len(starts)
    async for ordinal, item in items:
        while k < n and ordinal >= stops[k]:
            k += 1
        if k < n and ordinal >= starts[k]:
            tally.skipped += 1
            continue
        yield ordinal, item


def _no_key(key_of: Callable[[Any], Any], item: Any) -> TypeError:
    """``key_of(item)`` returned None, which every item would share: the Source's error (a forgotten ``return``).
    Every item after the first counted as a repeat, ended unprocessed, and ``results`` listed them under one key."""
    name = getattr(key_of, "__qualname__", "item_key")
    return TypeError(
        f"{name}() returned None for the item {clip(repr(item), 200)}: it must return the item's key, a str or an "
        "int unique per item (is a return missing?)."
    )


def skip_keys(
    items: Numbered, settled: Container[Any], key_of: Callable[[Any], Any], pending: dict[int, Any], tally: Tally
) -> Numbered:
    """``items`` without those whose key is in ``settled``; the others' keys go to ``pending`` by ordinal,
    where the journal picks them up when the item settles."""
    if isinstance(settled, KeyIndex):
        if isinstance(items, Iterator):
            return _skip_indexed(items, settled, key_of, pending, tally)
        return _askip_indexed(items, settled, key_of, pending, tally)
    if isinstance(items, Iterator):
        return _skip_keys(items, settled, key_of, pending, tally)
    return _askip_keys(items, settled, key_of, pending, tally)


LOOKUP_BATCH = 500
"""Items whose keys a ``KeyIndex`` is asked about at once: 0.6 µs a key, against 1.5-3 µs asked one by one."""
LOOKUP_WAIT_S = 0.005
"""A batch is looked up once it is this old, however few its items: a slow Source's items are not held back for
the next ones (a batch waits at most for one slow item after this)."""


def _skip_indexed(
    items: Iterator[tuple[int, Any]],
    settled: KeyIndex,
    key_of: Callable[[Any], Any],
    pending: dict[int, Any],
    tally: Tally,
) -> Iterator[tuple[int, Any]]:
    """``_skip_keys`` for keys on disk: looked up a batch at a time."""
    clock = time.monotonic
    while True:
        batch: list[tuple[int, Any, Any]] = []
        error: Exception | None = None
        started = clock()
        try:
            for ordinal, item in items:
                batch.append((ordinal, item, _key(key_of, item)))
                if len(batch) >= LOOKUP_BATCH or clock() - started >= LOOKUP_WAIT_S:
                    break
            else:
                items = iter(())  # exhausted: this batch is the last
        except Exception as raised:  # the items before it go on first, as they did one by one
            error = raised
        yield from _unsettled(batch, settled, pending, tally)
        if error is not None:
            raise error
        if not batch:
            return


async def _askip_indexed(
    items: AsyncIterator[tuple[int, Any]],
    settled: KeyIndex,
    key_of: Callable[[Any], Any],
    pending: dict[int, Any],
    tally: Tally,
) -> AsyncIterator[tuple[int, Any]]:
    """``_askip_keys`` for keys on disk: looked up a batch at a time."""
    clock = time.monotonic
    exhausted = False
    while not exhausted:
        batch: list[tuple[int, Any, Any]] = []
        error: Exception | None = None
        started = clock()
        try:
            while len(batch) < LOOKUP_BATCH and clock() - started < LOOKUP_WAIT_S:
                try:
                    ordinal, item = await items.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                batch.append((ordinal, item, _key(key_of, item)))
        except Exception as raised:
            error = raised
        for taken in _unsettled(batch, settled, pending, tally):
            yield taken
        if error is not None:
            raise error


def _key(key_of: Callable[[Any], Any], item: Any) -> Any:
    key = key_of(item)
    if key is None:
        raise _no_key(key_of, item)
    return normal_key(key)


def _unsettled(
    batch: list[tuple[int, Any, Any]], settled: KeyIndex, pending: dict[int, Any], tally: Tally
) -> Iterator[tuple[int, Any]]:
    """The items of ``batch`` whose key ``settled`` does not hold, their keys put in ``pending``."""
    known = settled.among([key for _, _, key in batch])
    for ordinal, item, key in batch:
        if key in known:
            tally.skipped += 1
            continue
        pending[ordinal] = key
        yield ordinal, item


def _skip_keys(
    items: Iterator[tuple[int, Any]],
    settled: Container[Any],
    key_of: Callable[[Any], Any],
    pending: dict[int, Any],
    tally: Tally,
) -> Iterator[tuple[int, Any]]:
    for ordinal, item in items:
        key = key_of(item)
        if key is None:  # a check, not a call, per item
            raise _no_key(key_of, item)
        key = normal_key(key)
        if key in settled:
            tally.skipped += 1
            continue
        pending[ordinal] = key
        yield ordinal, item


async def _askip_keys(
    items: AsyncIterator[tuple[int, Any]],
    settled: Container[Any],
    key_of: Callable[[Any], Any],
    pending: dict[int, Any],
    tally: Tally,
) -> AsyncIterator[tuple[int, Any]]:
    async for ordinal, item in items:
        key = key_of(item)
        if key is None:  # a check, not a call, per item
            raise _no_key(key_of, item)
        key = normal_key(key)
        if key in settled:
            tally.skipped += 1
            continue
        pending[ordinal] = key
        yield ordinal, item
