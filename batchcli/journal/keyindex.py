"""The item keys a run skips, held in memory when they are few and looked up on disk when they are many.

A keyed run's ``resume`` skips the keys its earlier sessions settled, and ``--skip-done-in`` the keys other runs
did. Held in a ``frozenset`` they cost about 100 bytes each: ten million keys, a gigabyte, for as long as the run
lasted. Past ``KEYS_HELD_MAX`` they go into a ``KeyIndex`` instead, a table in a private temporary SQLite
database: its pages live in a small cache, the rest in a file SQLite unlinks as it opens it (nothing is left
behind, even by a killed process; the space goes with the last reference to the index, or ``close``), so memory
stays flat whatever the count. A lookup costs 1.5-3 µs there against 0.1 µs
in a set, 0.6 µs a key when a batch is asked at once (``among``, as a resume does). A resume over 1.6 million items,
1.3 million of them settled (`bench.py keyed`), took 4.2-4.4 s instead of 2.6 s and held 86-92 MB instead of
209-225 MB. Hence the threshold: below a million keys (some 100 MB) the set is kept, and its speed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from sys import getsizeof
from typing import Any, Union

KEYS_HELD_MAX = 1_000_000
"""Up to this many keys are held in a frozenset (some 100 MB); more are kept in a ``KeyIndex``."""

KEYS_HELD_BYTES = 128 << 20
"""Nor more than about this many bytes of them (``key_set`` measures the first ``KEYS_SAMPLED``): a million keys of
312 characters took a resume 470 MB."""

KEYS_SAMPLED = 1024

KEY_OVERHEAD = 40
"""What a key costs a frozenset beyond its own object: its slot, at the set's usual fill."""


class KeyIndex:
    """A set of item keys as ``normal_key`` makes them (str, int, bytes), kept in a temporary SQLite database.

    Answers ``in``, ``len`` and iteration like the frozenset it stands for: SQLite compares a key's type and value
    as Python does for these three types (``1``, ``"1"`` and ``b"1"`` are three keys). Used by one thread at a
    time (built on one, looked up on the loop thread), hence not tied to a thread.
    """

    def __init__(self, keys: Iterable[Any] = ()) -> None:
        # "file:" with no path: a private database on disk, its file deleted by SQLite (unlinked as it is opened).
        self._conn = sqlite3.connect("file:", uri=True, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA cache_size=-8192")  # 8 MB of pages; the rest stays in the file
        self._conn.execute("PRAGMA journal_mode=OFF")  # nothing to recover: the index is rebuilt by the next run
        self._conn.execute("CREATE TABLE keys (key PRIMARY KEY) WITHOUT ROWID")
        self._lookup = self._conn.cursor()  # one cursor for every lookup: a new one per call costs 0.2 µs more
        self._count = 0
        self.add(keys)

    def add(self, keys: Iterable[Any]) -> None:
        """Add ``keys`` (already ``normal_key`` forms); one already there is kept once."""
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR IGNORE INTO keys VALUES (?)", ((key,) for key in keys))
        self._count = self._conn.execute("SELECT count(*) FROM keys").fetchone()[0]

    def __contains__(self, key: object) -> bool:
        return self._lookup.execute("SELECT 1 FROM keys WHERE key = ?", (key,)).fetchone() is not None

    def among(self, keys: list[Any]) -> set[Any]:
        """Those of ``keys`` the index holds: one statement per 500 keys (SQLite takes up to 999 values)."""
        found: set[Any] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            sql = f"SELECT key FROM keys WHERE key IN ({', '.join('?' * len(chunk))})"
            found.update(key for (key,) in self._lookup.execute(sql, chunk))
        return found

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Any]:
        cursor = self._conn.execute("SELECT key FROM keys")
        while rows := cursor.fetchmany(1000):
            for (key,) in rows:
                yield key

    def close(self) -> None:
        """Close the database, which removes its file; the index is empty and unusable after."""
        self._conn.close()


KeySet = Union[frozenset[Any], KeyIndex]
"""Keys to skip: ``in``, ``len`` and iteration."""


def key_set(count: int, keys: Iterable[Any]) -> KeySet:
    """``keys`` (about ``count`` of them, read once) as a frozenset when they are few and short enough to take less
    than ``KEYS_HELD_BYTES``, judged by the first ``KEYS_SAMPLED`` of them; else as a ``KeyIndex``."""
    if count > KEYS_HELD_MAX:
        return KeyIndex(keys)
    rest = iter(keys)
    first = list(islice(rest, KEYS_SAMPLED))
    if first and sum(map(getsizeof, first)) // len(first) * count + KEY_OVERHEAD * count > KEYS_HELD_BYTES:
        return KeyIndex(chain(first, rest))
    return frozenset(chain(first, rest))
