"""Results of plain data, kept as one journal row per batch rather than one per item.

A row per result cost SQLite a B-tree insert each (about a microsecond, a million times), and their
JSON cost the run's loop thread another; together a job that returns a small dict ran ten times
slower than one returning None. Plain data (what ``marshal`` writes: dicts, lists, tuples, sets,
strings, bytes, numbers, booleans, None, of exactly those types) is encoded with ``marshal``, and a
batch goes to the journal as one row, in the same transaction as the items' done marks. The async
executor pickles up to a thousand results as one list (``PICKLED_LIST``: one call, the keys the
results share written once, and only built-in types; see ``executors.asyncpool``), and the lists one
flush took go as one row (``PICKLED_LISTS``); the other executors send each result's own marshal
encoding (``MARSHAL``). Reading merges the rows back into source order, holding only the rows that
overlap the ordinal being read, so memory stays flat however many results there are.

``marshal`` is pinned to version 4 (every Python since 3.4 reads it) and runs no code when loading.
A pickled list holds only the types pickle writes itself, and is loaded with no class or function
allowed, so it runs none either. A row records its encoding so another one can follow.
"""

from __future__ import annotations

import heapq
import io
import marshal
import pickle
import sqlite3
import sys
from array import array
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

from batchcli.journal.rundir import table_exists

BATCHES_TABLE = """
CREATE TABLE IF NOT EXISTS result_batches (
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    encoding INTEGER NOT NULL,
    ordinals BLOB NOT NULL,
    sizes BLOB NOT NULL,
    data BLOB NOT NULL,
    keys BLOB
);
CREATE INDEX IF NOT EXISTS result_batches_lo ON result_batches (lo);
"""
"""One row per batch (or per stretch of one, see ``SPLIT_GAP``) of plain-data results, in the order they
settled (readers sort a row; it holds one flush at most): ``ordinals`` is a little-endian int64 array,
``keys`` the marshalled list of the items' keys in a keyed run, ``[lo, hi]`` the first and last ordinal.
``encoding`` says what ``data`` holds: ``MARSHAL``, the results' marshal encodings end to end, their
lengths in ``sizes`` (int64s); ``LIST``, the marshal encoding of the list of the results, ``sizes``
empty; ``LISTS``, several such lists end to end, their lengths in ``sizes``; ``PICKLED_LIST`` and
``PICKLED_LISTS``, the same with the lists pickled (``plain_list``), as they are written now. Journals of
older batchcli versions lack the table; ``Journal.open`` adds it."""

MARSHAL = 1
"""``encoding`` of a row whose results are each ``marshal`` version 4, end to end."""

LIST = 2
"""``encoding`` of a row whose ``data`` is the ``marshal`` version 4 encoding of the list of its results
(a batchcli from before this encoding refuses such a row, naming it). Read, no longer written: see
``PICKLED_LIST``."""

LISTS = 3
"""``encoding`` of a row whose ``data`` is several ``LIST`` encodings end to end (the batches one flush took),
their byte lengths in ``sizes``, ``ordinals`` every result's in the same order. Written so that a flush is a
few statements however many batches it took: each statement lets go of the GIL, and while the loop thread
runs pure Python the recorder waits up to the interpreter's switch interval (5 ms) to get it back, so a
thousand batch rows cost a second. A batchcli from before this encoding refuses such a row, naming it. Read, no
longer written: see ``PICKLED_LISTS``."""

PICKLED_LIST = 4
"""``encoding`` of a row whose ``data`` is the list of its results as ``plain_list`` pickles it, ``sizes`` empty.
Written since it replaced ``LIST`` (which older journals hold); a batchcli from before it refuses such a row,
naming it."""

PICKLED_LISTS = 5
"""``encoding`` of a row whose ``data`` is several ``PICKLED_LIST`` encodings end to end, as ``LISTS`` holds
``LIST``'s. A batchcli from before it refuses such a row, naming it."""

PICKLE_PROTOCOL = 5
"""The pickle protocol of ``plain_list`` (every Python since 3.8 reads it; it writes a bytearray as itself)."""

LISTS_BATCHES_MAX = 64
"""At most how many batches one ``PICKLED_LISTS`` row holds: a reader holds a row's ordinals and keys whole."""

LISTS_BYTES_MAX = 16 << 20
"""About how many bytes of data one ``PICKLED_LISTS`` row holds at most (one batch may pass it alone)."""

MARSHAL_VERSION = 4

MARSHAL_DEPTH_MAX = 2000
"""How deeply nested a value marshal writes at most (CPython's ``MAX_MARSHAL_STACK_DEPTH``)."""

SPLIT_GAP = 1024
"""A flush's results are cut into separate rows where consecutive ordinals lie further apart than this (an
item retried long after its neighbours), so that no row spans far beyond its own results: reading holds
every row that spans the ordinal being read."""

_ordinal = itemgetter(0)
_encoded = itemgetter(1)
_key = itemgetter(3)
_BIG_ENDIAN = sys.byteorder == "big"
_ENCODINGS = frozenset({MARSHAL, LIST, LISTS, PICKLED_LIST, PICKLED_LISTS})


class _PlainPickler(pickle.Pickler):
    """pickle's own pickler (in C), refusing every value it does not write itself.

    It writes None, booleans, ints, floats, strings, bytes, bytearrays, and lists, tuples, dicts, sets and
    frozensets of exactly those types without asking; for anything else (a subclass such as a numpy scalar, an
    ``array.array``, a complex number, an object) it asks ``reducer_override`` first, which refuses."""

    def reducer_override(self, obj: Any) -> Any:
        raise ValueError(f"not plain data ({type(obj).__qualname__})")


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler that allows no class and no function: what ``_PlainPickler`` wrote needs none, and a pickle
    that names one is not what it wrote (and loading it could run code)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it names {module}.{name}, which plain data never does")


class _PlainChecker(_PlainPickler):
    """``_PlainPickler`` letting through, as well, what marshal writes faithfully and pickle does not write itself:
    a complex number, and a memoryview of bytes (which comes back as bytes, as a bytearray does)."""

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is complex or _bytes_view(obj):
            return bytes, ()  # checked only: what is written is discarded
        if obj is bytes:  # the callable of the line above, written as pickle writes a class
            return NotImplemented
        raise ValueError(f"not plain data ({kind.__qualname__})")


def _bytes_view(obj: Any) -> bool:
    """True for a memoryview of bytes: marshal writes it as the bytes it shows, which equal it."""
    return type(obj) is memoryview and obj.format == "B" and obj.ndim == 1


class _Discard:
    """A file that keeps nothing: ``_PlainChecker`` only checks."""

    @staticmethod
    def write(data: bytes) -> int:
        return len(data)


_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray})
_CONTAINERS = frozenset({list, tuple, set, frozenset})


def _walk_plain(value: Any) -> None:
    """``_PlainChecker``'s check, for a value nested deeper than it goes: a loop, not a recursion."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _ATOMS or _bytes_view(item):
            continue
        if kind not in _CONTAINERS and kind is not dict:
            raise ValueError(f"not plain data ({kind.__qualname__})")
        if id(item) in seen:  # held twice, or a cycle
            continue
        seen.add(id(item))
        if kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            stack.extend(item)


def plain(value: Any) -> bytes:
    """``value``'s marshal encoding; ValueError (or TypeError) when it is not plain data.

    marshal writes any object that lends out its memory (a numpy scalar or array, an ``array.array``, a subclass
    of ``bytes``) as ``bytes``, without a word: a ``np.float64(0.7)`` was kept as ``b'ffffff\\xe6?'``. Reading the
    encoding back and comparing it with the value caught those whose value changed, not a ``bytes`` subclass
    (equal to its bytes), nor anything nested deeper than a comparison goes. So every object in the value is
    checked for its exact type instead (``_PlainChecker``, in C; a value nested past the recursion limit by
    ``_walk_plain``): only what marshal writes as itself passes, and a bytearray or a memoryview of bytes, which
    come back as bytes.
    """
    data = marshal.dumps(value, MARSHAL_VERSION)
    try:
        _PlainChecker(_Discard(), PICKLE_PROTOCOL).dump(value)
    except RecursionError:  # nested deeper than pickle goes (marshal goes to 2,000)
        _walk_plain(value)
    except pickle.PicklingError as error:
        raise ValueError(f"not plain data: {error}") from None
    return data


def plain_list(values: list[Any]) -> bytes:
    """The pickle of ``values`` (a batch of results), holding only built-in types; ValueError when one is not
    plain data.

    It replaced ``plain`` on the async executor's path: pickle writes each type as itself, so no result can come
    back as something else (marshal writes a numpy scalar as ``bytes``), with no reading back to check (which cost
    about 140 ns a small dict; this pickle costs about 70 ns, marshal 46 ns)."""
    buffer = io.BytesIO()
    try:
        _PlainPickler(buffer, PICKLE_PROTOCOL).dump(values)
    except (pickle.PicklingError, RecursionError) as error:  # nested deeper than pickle goes, say
        raise ValueError(f"not plain data: {error}") from None
    if sys.getrecursionlimit() > MARSHAL_DEPTH_MAX:
        # The job raised the limit, and pickle goes as deep as it says; reading marshals each value, which stops at
        # 2,000 levels: a deeper value read as a damaged journal, and made every flush that split its batch fail.
        marshal.dumps(values, MARSHAL_VERSION)  # ValueError when too deep: kept result by result then
    return buffer.getvalue()


def plain_values(data: bytes | memoryview) -> list[Any]:
    """The list ``plain_list`` pickled; ``sqlite3.DatabaseError`` when ``data`` is not such a pickle (the journal
    was damaged, or written by something else), so it reads as a damaged journal."""
    try:
        values = _PlainUnpickler(io.BytesIO(data)).load()
    except Exception as error:  # UnpicklingError, EOFError, ValueError, ...: whatever a damaged pickle raises
        raise sqlite3.DatabaseError(f"a batch of results cannot be read: {error}") from None
    if type(values) is not list:
        raise sqlite3.DatabaseError(f"a batch of results holds a {type(values).__qualname__}, not a list")
    return values


def dump(value: Any) -> bytes | None:
    """``value``'s marshal encoding when it is plain data, else None (the caller tries JSON, then pickle)."""
    try:
        return plain(value)
    except (ValueError, TypeError):  # a type marshal does not write (a subclass, an object), or too deep
        return None


def _packed(kind: str, values: Any) -> bytes:
    numbers = array(kind, values)
    if _BIG_ENDIAN:
        numbers.byteswap()
    return numbers.tobytes()


def _unpacked(kind: str, blob: bytes) -> array[int]:
    numbers = array(kind)
    numbers.frombytes(blob)
    if _BIG_ENDIAN:
        numbers.byteswap()
    return numbers


def write_batch(conn: sqlite3.Connection, rows: list[tuple[Any, ...]], keyed: bool) -> None:
    """Insert marshalled ``(ordinal, encoding, None[, key])`` rows, in the caller's transaction, as few rows as they allow."""
    rows.sort(key=_ordinal)
    for part in (piece for stretch in _stretches(rows) for piece in _within(stretch, LISTS_BYTES_MAX)):
        ordinals = list(map(_ordinal, part))
        encoded = list(map(_encoded, part))
        keys = marshal.dumps(list(map(_key, part)), MARSHAL_VERSION) if keyed else None
        conn.execute(
            "INSERT INTO result_batches VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ordinals[0], ordinals[-1], MARSHAL, _packed("q", ordinals), _packed("q", map(len, encoded)),
             b"".join(encoded), keys),
        )


SealedRow = tuple["array[int]", bytes, "list[Any] | None", int, int]
"""A sealed batch as ``write_sealed`` takes it: its ordinals, its data, its items' keys in a keyed run (else None), and
its lowest and highest ordinal (found once, by the recorder: ``min`` and ``max`` of a thousand cost 40 µs)."""


def write_sealed(conn: sqlite3.Connection, batches: list[SealedRow]) -> None:
    """Insert the batches the loop encoded as lists (``Sealed``) that one flush took, in the caller's transaction:
    up to ``LISTS_BATCHES_MAX`` of them as one ``PICKLED_LISTS`` row, written as they are, when their items lie close
    together; else each batch as ``write_list`` writes it."""
    group: list[SealedRow] = []
    size = 0
    for batch in batches:
        if group and (len(group) == LISTS_BATCHES_MAX or size + len(batch[1]) > LISTS_BYTES_MAX):
            _write_lists(conn, group)
            group, size = [], 0
        group.append(batch)
        size += len(batch[1])
    if group:
        _write_lists(conn, group)


def _write_lists(conn: sqlite3.Connection, group: list[SealedRow]) -> None:
    if len(group) > 1:
        low, high = min(batch[3] for batch in group), max(batch[4] for batch in group)
        count = sum(len(batch[0]) for batch in group)
        if high - low <= count + SPLIT_GAP:
            ordinals = array("q")
            for batch in group:
                ordinals += batch[0]
            keyed = group[0][2] is not None
            packed_keys = marshal.dumps([k for batch in group for k in batch[2] or ()], MARSHAL_VERSION) if keyed else None
            conn.execute(
                "INSERT INTO result_batches VALUES (?, ?, ?, ?, ?, ?, ?)",
                (low, high, PICKLED_LISTS, _packed("q", ordinals), _packed("q", [len(batch[1]) for batch in group]),
                 b"".join([batch[1] for batch in group]), packed_keys),
            )  # fmt: skip
            return
    for ordinals, data, keys, low, high in group:
        write_list(conn, ordinals, data, keys, (low, high))


def write_list(
    conn: sqlite3.Connection, ordinals: array[int], data: bytes, keys: list[Any] | None,
    bounds: tuple[int, int] | None = None,
) -> None:
    """Insert one batch the loop encoded as one list (``bounds``: its lowest and highest ordinal, when known), in the
    caller's transaction: one ``PICKLED_LIST`` row, written as it is, unless an item settled far from its neighbours (then
    a row per stretch, each result on its own)."""
    low, high = bounds if bounds is not None else (min(ordinals), max(ordinals))
    if high - low <= len(ordinals) + SPLIT_GAP:
        packed_keys = marshal.dumps(keys, MARSHAL_VERSION) if keys is not None else None
        conn.execute(
            "INSERT INTO result_batches VALUES (?, ?, ?, ?, ?, ?, ?)",
            (low, high, PICKLED_LIST, _packed("q", ordinals), b"", data, packed_keys),
        )
        return
    values = plain_values(data)
    rows = [
        (ordinal, marshal.dumps(value, MARSHAL_VERSION), None, *(() if keys is None else (keys[i],)))
        for i, (ordinal, value) in enumerate(zip(ordinals, values))
    ]
    write_batch(conn, rows, keys is not None)


def _stretches(rows: list[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    """``rows`` (sorted) cut where ordinals jump by more than ``SPLIT_GAP``; a dense batch is one stretch, found without a loop."""
    if rows[-1][0] - rows[0][0] <= len(rows) + SPLIT_GAP:
        yield rows
        return
    start = 0
    for i in range(1, len(rows)):
        if rows[i][0] - rows[i - 1][0] > SPLIT_GAP:
            yield rows[start:i]
            start = i
    yield rows[start:]


def _within(rows: list[tuple[Any, ...]], limit: int) -> Iterator[list[tuple[Any, ...]]]:
    """``rows`` cut so that no piece's encodings pass ``limit`` bytes (one larger result is a piece alone): nine
    results of 9 MB that the loop had to keep one by one (``SEAL_ROW_MAX``) made one 75 MB row, which a reader
    holds whole."""
    if sum(len(row[1]) for row in rows) <= limit:
        yield rows
        return
    start, size = 0, 0
    for i, row in enumerate(rows):
        if i > start and size + len(row[1]) > limit:
            yield rows[start:i]
            start, size = i, 0
        size += len(row[1])
    yield rows[start:]


def has_batches(conn: sqlite3.Connection) -> bool:
    """True when the journal has the batch table (older ones have only ``results``)."""
    return table_exists(conn, "result_batches")


def batch_rows(conn: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    """``(ordinal, key or None, encoding, None)`` of every batched result, in ordinal order (equal ones as written).

    Rows are fetched in ``lo`` order and opened only once the merge reaches their first ordinal.
    """
    cursor = conn.execute(
        "SELECT lo, ordinals, sizes, data, keys, encoding FROM result_batches ORDER BY lo, rowid"
    )
    heap: list[tuple[int, int, tuple[Any, ...], Iterator[tuple[Any, ...]]]] = []
    seq = 0
    row = cursor.fetchone()
    while heap or row is not None:
        while row is not None and (not heap or row[0] <= heap[0][0]):
            if row[5] not in _ENCODINGS:
                raise sqlite3.DatabaseError(f"results encoded as {row[5]!r}, which this batchcli cannot read")
            entries = _entries(*row[1:6])
            first = _next_entry(entries)
            if first is None:
                raise sqlite3.DatabaseError("a batch of results holds no result")
            heapq.heappush(heap, (first[0], seq, first, entries))
            seq += 1
            row = cursor.fetchone()
        _, order, entry, entries = heap[0]
        yield entry
        following = _next_entry(entries)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (following[0], order, following, entries))


def _next_entry(entries: Iterator[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    """The next of a row's ``_entries``, None after the last; ``sqlite3.DatabaseError`` when the row does not read as
    batchcli wrote it (edited by hand, damaged on disk): such a journal reads as damaged, not as a traceback."""
    try:
        return next(entries, None)
    except (TypeError, ValueError, IndexError, EOFError, OverflowError) as error:
        raise sqlite3.DatabaseError(f"a batch of results cannot be read: {error}") from None


def _entries(ordinals: bytes, sizes: bytes, data: bytes, keys: bytes | None, encoding: int) -> Iterator[tuple[Any, ...]]:
    """A row's results in ordinal order (a row holds one flush at most, so sorting it holds little), each as
    its own marshal encoding; ValueError (or another error ``_next_entry`` names) when its parts disagree."""
    key_list = marshal.loads(keys) if keys is not None else None
    numbers = _unpacked("q", ordinals)
    if key_list is not None and len(key_list) != len(numbers):
        raise ValueError(f"{len(key_list)} keys for {len(numbers)} results")
    lengths = _unpacked("q", sizes)  # empty for a single list
    if encoding != LIST and encoding != PICKLED_LIST and sum(lengths) != len(data):
        raise ValueError(f"its sizes add up to {sum(lengths)} bytes, its data holds {len(data)}")
    order: Any = range(len(numbers))
    if any(a > b for a, b in zip(numbers, numbers[1:])):
        order = sorted(order, key=numbers.__getitem__)
    dumps = marshal.dumps
    loads = plain_values if encoding in (PICKLED_LIST, PICKLED_LISTS) else marshal.loads
    if encoding in (LIST, PICKLED_LIST):
        values = loads(data)
        if len(values) != len(numbers):
            raise ValueError(f"{len(values)} results for {len(numbers)} ordinals")
        for i in order:
            yield numbers[i], None if key_list is None else key_list[i], dumps(values[i], MARSHAL_VERSION), None
        return
    if encoding in (LISTS, PICKLED_LISTS):
        # A list at a time, so a reader never holds a whole row's values: in order as they come when the row's
        # ordinals are, else each value encoded on its own first (as a MARSHAL row holds them), then sorted.
        lists = _parts(data, lengths)
        if isinstance(order, range):
            i = 0
            for part in lists:
                for value in loads(part):
                    yield numbers[i], None if key_list is None else key_list[i], dumps(value, MARSHAL_VERSION), None
                    i += 1
            if i != len(numbers):
                raise ValueError(f"{i} results for {len(numbers)} ordinals")
            return
        encoded = [dumps(value, MARSHAL_VERSION) for part in lists for value in loads(part)]
        if len(encoded) != len(numbers):
            raise ValueError(f"{len(encoded)} results for {len(numbers)} ordinals")
        for i in order:
            yield numbers[i], None if key_list is None else key_list[i], encoded[i], None
        return
    if len(lengths) != len(numbers):
        raise ValueError(f"{len(lengths)} sizes for {len(numbers)} ordinals")
    starts = [0] * len(lengths)
    offset = 0
    for i, size in enumerate(lengths):
        starts[i] = offset
        offset += size
    view = memoryview(data)
    for i in order:
        start = starts[i]
        yield numbers[i], None if key_list is None else key_list[i], bytes(view[start : start + lengths[i]]), None


def _parts(data: bytes, lengths: array[int]) -> Iterator[memoryview]:
    """``data`` cut into consecutive pieces of ``lengths`` bytes."""
    view = memoryview(data)
    offset = 0
    for size in lengths:
        yield view[offset : offset + size]
        offset += size


def merged(*streams: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """Rows of several ordinal-sorted streams in ordinal order, one per item: of two rows for the same
    ordinal and key (an item kept twice), the later stream's."""
    previous: tuple[Any, ...] | None = None
    for row in heapq.merge(*streams, key=_ordinal):
        if previous is not None and (previous[0], previous[1]) != (row[0], row[1]):
            yield previous
        previous = row
    if previous is not None:
        yield previous
