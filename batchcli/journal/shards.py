"""A shard: one process's share of a source, ``--shard I/N``, so N independent processes cover it once.

The share is decided where the items are enumerated (``Run._iterable``), so every executor gets it:
by a stable hash of ``item_key`` when the Source defines one (an item stays in its shard when the
source grows or changes order), by position otherwise (every N-th item from I, in C: nothing per item).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchcli.errors import UsageError
from batchcli.journal.rundir import has_table, query, table_exists
from batchcli.journal.settled import normal_key
from batchcli.load.configuration import MAX_SHARDS
from batchcli.load.source import is_async_source, iterate, source_length

INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
"""Where a Kubernetes Indexed Job puts each pod's index: ``--shard auto/N`` (or ``-p shards=N``) reads it."""


@dataclass(frozen=True)
class Shard:
    """Which share of the source a run processes."""

    index: int
    """0-based: this run processes the items whose share is ``index``."""
    count: int
    """How many shards the source is split into (N)."""
    group: str = ""
    """The group id every shard of one logical run shares (its directory under ``-d``)."""

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def share(self, source: Any, key_of: Callable[[Any], Any] | None) -> Any:
        """The part of ``source`` this shard processes, as an iterable the run numbers like the source itself.

        Sync or async like the source; sized when the source is and the share goes by position.
        """
        if key_of is not None:
            return (_AsyncKeyed if is_async_source(source) else _Keyed)(source, self, key_of)
        # The source's own count, read once and checked as an unsharded run checks it: a __len__ that returns
        # no count is ignored with a warning, where len() in the share's __len__ crashed a sharded run only.
        length = source_length(source)
        if length is None:
            return (_AsyncStrided if is_async_source(source) else _Strided)(source, self)
        share = (_SizedAsyncStrided if is_async_source(source) else _SizedStrided)(source, self)
        share.length = len(range(self.index, length, self.count))
        return share

    def owns_key(self, key: Any) -> bool:
        """True when the item with this ``item_key`` falls in this shard."""
        return stable_hash(key) % self.count == self.index


def stable_hash(key: Any) -> int:
    """A hash of an item key that every process and machine computes alike (Python's ``hash`` is salted).

    The key is first put in the form the journal stores (str, int and bytes as they are, anything
    else as its ``repr``), so shards agree with what ``resume`` matches on.
    """
    key = normal_key(key)
    if isinstance(key, bytes):
        data = b"b" + key
    elif isinstance(key, int):
        data = b"i" + str(key).encode()
    else:
        data = b"s" + str(key).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class _Share:
    def __init__(self, source: Any, shard: Shard, key_of: Callable[[Any], Any] | None = None) -> None:
        self.source, self.shard, self.key_of = source, shard, key_of

    def position(self, ordinal: int) -> int:
        """Where this share's item ``ordinal`` stands in the whole source (``--sample`` decides by that)."""
        return self.shard.index + ordinal * self.shard.count


def position_in_source(share: Any) -> Callable[[int], int] | None:
    """``share.position`` for a shard's share (``Shard.share``); None for anything else (a source, a retry's inputs)."""
    return share.position if isinstance(share, _Share) else None


class _Strided(_Share):
    """Items ``index, index + count, ...`` of the source, by position."""

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iterate(self.source), self.shard.index, None, self.shard.count)


class _AsyncStrided(_Share):
    async def __aiter__(self) -> AsyncIterator[Any]:
        index, count = self.shard.index, self.shard.count
        position = 0
        async for item in self.source:
            if position % count == index:
                yield item
            position += 1


class _Sized:
    length = 0
    """This shard's share of the source's count (``share`` sets it)."""

    def __len__(self) -> int:
        return self.length


class _SizedStrided(_Sized, _Strided):
    pass


class _SizedAsyncStrided(_Sized, _AsyncStrided):
    pass


class _ByKey(_Share):
    """The items whose key hashes to this shard; how many is known only once the source is exhausted."""

    last_position = 0
    """The source position of the item given last: the items are read one at a time, so it is the current one's."""

    def position(self, ordinal: int) -> int:
        return self.last_position


class _Keyed(_ByKey):
    def __iter__(self) -> Iterator[Any]:
        owns, key_of = self.shard.owns_key, self.key_of
        assert key_of is not None
        for position, item in enumerate(iterate(self.source)):
            if owns(key_of(item)):
                self.last_position = position
                yield item


class _AsyncKeyed(_ByKey):
    async def __aiter__(self) -> AsyncIterator[Any]:
        owns, key_of = self.shard.owns_key, self.key_of
        assert key_of is not None
        position = 0
        async for item in self.source:
            if owns(key_of(item)):
                self.last_position = position
                yield item
            position += 1


@dataclass(frozen=True)
class ShardRequest:
    """``--shard`` as given, before the index is known: ``I/N``, or ``auto/N`` (the index from the environment)."""

    index: int | None
    """None for ``auto``."""
    count: int


def whole_number(text: str) -> int:
    """``text`` as a number of ASCII digits (spaces around allowed); ``ValueError`` otherwise. ``int()`` also takes
    ``+1``, ``1_0`` and other scripts' digits (``०``), which a shard index written elsewhere would not match."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(text)
    return int(digits)


def parse_shard(text: str) -> ShardRequest:
    """``--shard I/N`` or ``auto/N``; a UsageError naming the bad value and the right form otherwise."""
    index_text, sep, count_text = text.strip().partition("/")
    form = "Give --shard I/N with 0 <= I < N (0-based: --shard 0/3, 1/3 and 2/3 split a source in three), or auto/N"
    form += f" to take I from {INDEX_VARIABLE}."
    try:
        count = whole_number(count_text)
        index = None if index_text.strip() == "auto" else whole_number(index_text)
    except ValueError:
        raise UsageError(f"--shard {text!r} is not I/N. {form}") from None
    if not sep:
        raise UsageError(f"--shard {text!r} is not I/N. {form}")
    if count < 1:
        raise UsageError(f"--shard {text!r}: N, the number of shards, must be at least 1. {form}")
    if count > MAX_SHARDS:
        raise UsageError(
            f"--shard {text!r}: N, the number of shards, is at most {MAX_SHARDS:,} (a group lists every shard). {form}"
        )
    if index is not None and not 0 <= index < count:
        raise UsageError(f"--shard {text!r}: the index must be from 0 to {count - 1} (0-based). {form}")
    return ShardRequest(index, count)


def resolve_shard(
    request: ShardRequest | None, configured: int | None, environ: Mapping[str, str] | None = None
) -> Shard | None:
    """The shard a run processes: from ``--shard``, or ``shards`` (``-p shards=N``) and the environment's index.

    None when neither asks for shards. ``JOB_COMPLETION_INDEX`` alone does not shard a run: a Kubernetes
    Job may be indexed for reasons of its own.
    """
    environ = os.environ if environ is None else environ
    if request is None and configured is None:
        return None
    if request is not None and configured is not None and request.count != configured:
        raise UsageError(
            f"--shard says {request.count} shards but shards={configured} (from -p, the environment or the "
            "configuration). Give one of them, or make them agree."
        )
    count = request.count if request is not None else configured
    assert count is not None
    index = request.index if request is not None else None
    if index is None:
        how = f"--shard auto/{count}" if request is not None else f"shards={count} without --shard"
        raw = environ.get(INDEX_VARIABLE)
        if raw is None:
            raise UsageError(
                f"{how} takes the shard's index from {INDEX_VARIABLE} (a Kubernetes Indexed Job sets it), which is "
                f"not set. Give the index yourself: --shard 0/{count} ... --shard {count - 1}/{count}."
            )
        try:
            index = whole_number(raw)
        except ValueError:
            index = -1
        if not 0 <= index < count:
            raise UsageError(
                f"{INDEX_VARIABLE}={raw!r} is not a shard index for {how}: it must be from 0 to {count - 1}. Set the "
                f"Indexed Job's completions to {count}, or give --shard I/{count}."
            )
    return Shard(index, count)


SHARD_TABLE = """
CREATE TABLE shard (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    shard_index INTEGER NOT NULL,
    shard_count INTEGER NOT NULL,
    grp TEXT NOT NULL
);
"""
"""A shard run's (I, N) and group, in its journal; only shard runs have the table, so the format is unchanged."""


def record_shard(conn: sqlite3.Connection, shard: Shard) -> None:
    """Write the shard's record into a journal being created (in its transaction)."""
    conn.execute(SHARD_TABLE)
    conn.execute("INSERT INTO shard VALUES (1, ?, ?, ?)", (shard.index, shard.count, shard.group))


def read_shard(conn: sqlite3.Connection) -> Shard | None:
    """The shard a journal's run processes; None for a run of the whole source."""
    if not table_exists(conn, "shard"):
        return None
    row = conn.execute("SELECT shard_index, shard_count, grp FROM shard").fetchone()
    return None if row is None else Shard(int(row[0]), int(row[1]), str(row[2]))


def shard_of(run_dir: Path) -> Shard | None:
    """The shard a run directory's journal records (read-only, no pickle); None for a run of the whole source."""
    if not has_table(run_dir, "shard"):
        return None
    rows = query(run_dir, "SELECT shard_index, shard_count, grp FROM shard")
    return Shard(int(rows[0][0]), int(rows[0][1]), str(rows[0][2])) if rows else None
