"""What ``process`` returned: kept in the journal with the item's success, read back in source order.

A value JSON can write is stored as that JSON; anything else is pickled, with its JSON form beside
it for exports (as a failed input is). A value is encoded where its item ran (the run's loop thread,
or a worker process), so one that cannot be kept fails its own item there, through the usual retry
rules, and never the run. The journal writes a result in the transaction that marks its item done.
"""

from __future__ import annotations

import csv
import inspect
import json
import json.encoder
import marshal
import os
import pickle
import sys
import reprlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

from batchcli.errors import BatchcliError, UsageError
from batchcli.journal.batches import batch_rows, dump, has_batches, merged, write_batch
from batchcli.journal.records import json_form, json_text
from batchcli.journal.rundir import check_safe, connect, damaged, journal_path, table_exists
from batchcli.outcome import clip, writable

RESULTS_TABLE = """
CREATE TABLE IF NOT EXISTS results (
    item PRIMARY KEY,
    ordinal INTEGER NOT NULL,
    value TEXT NOT NULL,
    pickled BLOB
) WITHOUT ROWID;
"""
"""One row per succeeded item whose ``process`` returned something other than None. ``item`` is the item's
identity: its ordinal, or its key when the Source has ``item_key`` (a keyed source may change its order
between sessions, so an ordinal can name another item then). ``value`` is the result's JSON (the JSON form
of a pickled one), ``pickled`` the pickle when JSON could not hold it. Journals of older batchcli versions
lack the table; ``Journal.open`` adds it and readers treat a missing one as empty."""

Encoded = tuple["str | bytes", "bytes | None"]
"""A result as stored: its marshal encoding (bytes) when it is plain data; else its JSON text, and its pickle
when JSON cannot hold it."""

Kept = tuple[int, "str | bytes", "bytes | None"]
"""An item's ordinal and its encoded result, on their way to the journal (a keyed run adds the key)."""

FORMATS = ("jsonl", "csv")
"""What ``batchcli results --format`` writes."""

_CHUNK = 1000
"""Rows fetched from SQLite at a time when reading results back: memory stays flat however many there are."""

def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__qualname__} is not JSON serializable")


def _json_encoder(separators: tuple[str, str] = (",", ":"), allow_nan: bool = False) -> Any:
    """The JSON of a value (compact and without NaN unless told). The C encoder made once, as ``JSONEncoder.encode``
    does on every call (half the cost of a small dict); no cycle check: a cycle ends in RecursionError, and
    pickle takes it."""
    make = getattr(json.encoder, "c_make_encoder", None)  # not in the stubs
    if make is None:  # a Python without the _json accelerator
        return json.JSONEncoder(ensure_ascii=False, allow_nan=allow_nan, separators=separators).encode
    item, key = separators
    encoder = make(None, _not_json, json.encoder.encode_basestring, None, key, item, False, False, allow_nan)
    join = "".join

    def to_json(value: Any) -> str:
        return join(encoder(value, 0))

    return to_json


_to_json = _json_encoder()

_ids_json = _json_encoder((", ", ": "), allow_nan=True)
"""An exported row's ``{"ordinal": ..., "key": ...}`` as ``json.dumps`` writes it, without its cost per call."""


class UnkeepableResult(Exception):
    """``process`` returned a value that is neither JSON-serialisable nor picklable: its item fails."""


class UnreadableResult(Exception):
    """A kept result's pickle does not load: ``read_results`` names the item and shows its JSON form."""


class Encoding:
    """A result ``encode``d in the thread that ran a sync ``process``, before that thread took its next item: a
    job that refills one object per thread (``threading.local``) changed the value before the loop encoded it,
    and 297 of 1,000 items kept another item's result. ``encoded`` is what ``encode`` gave."""

    __slots__ = ("encoded",)

    def __init__(self, encoded: Encoded) -> None:
        self.encoded = encoded

    @classmethod
    def of(cls, value: Any) -> Encoding:
        """``value`` encoded now; ``UnkeepableResult`` when it cannot be kept."""
        return cls(encode(value))


RESULT_BYTES_MAX = 900_000_000
"""The largest result kept: SQLite holds at most 1,000,000,000 bytes in a row. One larger failed every flush as if
the disk were full ("string or blob too big"), so the run stopped for good, and every resume after it."""


def encode(value: Any) -> Encoded:
    """``value`` as stored: marshalled when it is plain data (``journal.batches``), else JSON when JSON can
    write it, else pickled; ``UnkeepableResult`` when none can, or when it is too large to keep."""
    plain = dump(value)
    if plain is not None:
        return fits((plain, None), value)
    return fits(encode_other(value), value)


def fits(encoded: Encoded, value: Any) -> Encoded:
    """``encoded`` when a journal row can hold it; else ``UnkeepableResult`` for ``value``, naming its size."""
    text, blob = encoded
    size = len(text) + (len(blob) if blob is not None else 0)
    if type(text) is str and len(text) * 4 > RESULT_BYTES_MAX:  # a character is up to 4 bytes in UTF-8
        size += len(text.encode("utf-8", "surrogatepass")) - len(text)
    if size <= RESULT_BYTES_MAX:
        return encoded
    raise UnkeepableResult(
        f"process() returned {_shown(value)} ({type(value).__qualname__}), which is too large to keep: {size:,} bytes "
        f"encoded, and the journal keeps at most {RESULT_BYTES_MAX:,} bytes a result (SQLite's limit on a row). "
        "Store such a value yourself (a file, a bucket) and return where it is."
    )


def decode(text: str | bytes, blob: bytes | None) -> Any:
    """The value ``encode`` gave ``(text, blob)`` for, in a process that trusts the pickle (it made it, or the
    run directory's owner was checked: ``Values.of``)."""
    if type(text) is bytes:
        return marshal.loads(text)
    return json.loads(text) if blob is None else pickle.loads(blob)


def encode_other(value: Any) -> Encoded:
    """``encode`` for a value that is not plain data (marshal refused it): JSON, else pickled."""
    try:
        return writable(_to_json(value)), None  # a lone surrogate as a JSON escape: UTF-8 carries it, loads restores it
    except Exception:  # not JSON (TypeError, ValueError for NaN or a cycle, RecursionError): try pickle
        pass
    try:
        blob = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()  # never awaited, and now never will be: no "never awaited" warning on top of this
            raise UnkeepableResult(
                f"process() returned {_shown(value)} ({type(value).__qualname__}) instead of awaiting it: a plain "
                "`def process` is called as it is, and what it returns is the item's result. Declare it "
                "`async def process(...)` and `await` the call inside it."
            ) from None
        raise UnkeepableResult(
            f"process() returned {_shown(value)} ({type(value).__qualname__}), which batchcli cannot keep: it is not "
            f"JSON-serialisable and pickling it failed ({type(error).__name__}: {error}). Return plain data (dicts, "
            "lists, strings, numbers) or a picklable object, or return None and store the value yourself."
        ) from None
    try:
        shown = json_text(json_form(value), compact=True)  # compact, as the JSON of the other results
    except Exception:  # a value json_form cannot walk (a cycle): its repr, for exports
        shown = json.dumps(_shown(value), ensure_ascii=False)
    return writable(shown), blob


_encoded = itemgetter(1)

_BATCH = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

_INSERT_BATCH = (
    "INSERT OR REPLACE INTO results (item, ordinal, value)"
    " SELECT coalesce(value ->> 3, value ->> 0), value ->> 0, value ->> 1 FROM json_each(?)"
)
"""A batch of JSON results, ``[[ordinal, value, null, key?], ...]``, in one statement: SQLite runs it whole
without Python's GIL, where ``executemany`` takes the GIL back for every row, and the run's loop thread,
busy with items, makes each of those waits long (thousands of rows a second instead of a million)."""


def write_results(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``(ordinal, value, pickled[, key])`` rows in the caller's transaction: marshalled ones as batch rows
    (``journal.batches``), the others one row each, in one statement when JSON can carry them."""
    if set(map(type, map(_encoded, rows))) != {str}:
        batched = [row for row in rows if type(row[1]) is bytes]
        if batched:
            write_batch(conn, batched, keyed=len(batched[0]) > 3)
            rows = [row for row in rows if type(row[1]) is not bytes]
    if not rows:
        return
    plain, other = rows, []
    if any(row[2] is not None for row in rows):
        plain = [row for row in rows if row[2] is None]
        other = [row for row in rows if row[2] is not None]
    if plain:
        try:
            conn.execute(_INSERT_BATCH, (_BATCH(plain),))
        except TypeError:  # a key JSON cannot carry (bytes): row by row
            other += plain
    if other:
        conn.executemany(
            "INSERT OR REPLACE INTO results (ordinal, value, pickled, item) VALUES (?, ?, ?, ?)",
            ((*row[:3], row[3] if len(row) > 3 else row[0]) for row in other),
        )


def _shown(value: Any) -> str:
    try:
        return reprlib.repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object>"


@dataclass(frozen=True)
class Result:
    """What ``process`` returned for one item."""

    ordinal: int
    """The item's position in the source (0-based)."""
    key: Any
    """The Source's ``item_key(item)`` as the journal stores it, or None when the Source has none."""
    value: Any
    """The returned value: parsed back from JSON, or unpickled."""
    shard: int | None = None
    """The shard it ran in, when read from a group directory (``ordinal`` is then the source position for
    shards split by position, the position within the shard's share for keyed ones); else None."""


def read_results(run_dir: str | os.PathLike[str]) -> Iterator[Result]:
    """Yield what ``process`` returned for each succeeded item of a run, in source order, one per item.

    Lazy: rows are read from the journal a chunk at a time, so memory stays flat however many there
    are (``pandas.DataFrame(r.value for r in read_results(run_dir))`` holds only the frame). A value that
    JSON could not hold comes back unpickled, and only from a journal you alone can write (loading a
    pickle runs code), as for ``resume`` and ``retry``; when its class is not importable, the job's
    project is imported first, as ``resume`` would. A shard group directory reads as its shards' results
    together (``journal.groupresults``).
    """
    if is_group(Path(run_dir)):
        from batchcli.journal.groupresults import read_group_results

        return read_group_results(Path(run_dir))
    path = journal_path(Path(run_dir))  # a bad directory is an error now, not at the first item
    values = Values(Path(run_dir), path)
    return (
        Result(ordinal, key, values.of(text, blob, ordinal)) for ordinal, key, text, blob in rows(path, keyed_run(path))
    )


def is_group(path: Path) -> bool:
    """True when ``path`` is a shard group's directory (``journal.groups`` says more; this is all reading needs)."""
    return (path / "group.json").is_file()


class Values:
    """Turns one run's stored results back into values: the run directory is checked once, before the first
    pickle is loaded, and the job's project imported when a pickled value's class needs it."""

    def __init__(self, run_dir: Path, path: Path) -> None:
        self.run_dir, self.path = run_dir, path
        self._checked = self._loaded = False

    def of(self, text: str | bytes, blob: bytes | None, ordinal: int = -1) -> Any:
        """The value stored as ``text`` (marshal or JSON) and ``blob`` (its pickle, or None), of item ``ordinal``.

        ``UnreadableResult`` when its pickle does not load even with the job's project imported."""
        if blob is not None and not self._checked:
            check_safe(self.run_dir)
            self._checked = True
        try:
            try:
                return decode(text, blob)
            except (ImportError, AttributeError):
                if blob is None or self._loaded:
                    raise
                # Its class lives in the job's project, which this process has not imported: import it, as resume would.
                _load_project(self.path)
                self._loaded = True
                return pickle.loads(blob)
        except BatchcliError:  # the project would not load (or the directory is not safe): said as it is
            raise
        except RecursionError:  # JSON of a job that raised its recursion limit, parsed under a lower one here
            raise UnreadableResult(
                f"The result of item #{ordinal} in {self.run_dir} is nested deeper than this process reads "
                f"(sys.getrecursionlimit() is {sys.getrecursionlimit():,}; the job raised its limit). Raise the limit "
                "as far before reading (sys.setrecursionlimit); `batchcli results` exports the value as it is."
            ) from None
        except Exception as error:
            if blob is None:
                raise
            raise UnreadableResult(
                f"The result of item #{ordinal} in {self.run_dir} does not unpickle ({type(error).__name__}: {error}): "
                f"its class does not rebuild from its pickle (a __reduce__ that leaves out what __init__ needs, or a "
                f"class changed since the run). Its JSON form, which `batchcli results` exports, is {clip(str(text), 200)}."
            ) from error


def _load_project(path: Path) -> None:
    from batchcli.load.project import load_recorded

    conn = connect(path)
    try:
        (target,) = conn.execute("SELECT target FROM run").fetchone()
    finally:
        conn.close()
    load_recorded(target)


def rows(path: Path, keyed: bool, pickled: bool = True) -> Iterator[tuple[Any, ...]]:
    """``(ordinal, key or None, value, pickled)`` rows in source order, one per item, fetched a chunk at a time.

    ``value`` is a marshal encoding (bytes) for a batched result, else JSON text; a journal may hold both
    kinds (a pickled result beside plain ones), and a journal of batchcli 0.x before batches only the second.
    """
    try:
        conn = connect(path)
    except sqlite3.Error as error:
        raise damaged(path, str(error)) from error
    try:
        if not table_exists(conn, "results"):
            return  # a journal from before results were kept
        batched = batch_rows(conn) if has_batches(conn) else iter(())
        yield from merged(_single_rows(conn, keyed, pickled), batched)
    except sqlite3.Error as error:
        raise damaged(path, str(error)) from error
    finally:
        conn.close()


def _single_rows(conn: sqlite3.Connection, keyed: bool, pickled: bool) -> Iterator[tuple[Any, ...]]:
    column = "pickled" if pickled else "NULL"
    # Unkeyed, the table's own order is the source's; keyed, SQLite sorts (spilling to disk, not to our memory).
    key, order = ("item", "ordinal, item") if keyed else ("NULL", "item")
    cursor = conn.execute(f"SELECT ordinal, {key}, value, {column} FROM results ORDER BY {order}")
    while rows := cursor.fetchmany(_CHUNK):
        yield from rows


def check_format(name: str) -> str:
    """``name`` when it is one of ``FORMATS``; else a ``UsageError`` naming it and the choices."""
    if name not in FORMATS:
        raise UsageError(
            f"Unknown results format {name!r}. Give --format jsonl (one JSON object per line) or --format csv."
        )
    return name


def export(run_dir: Path, fmt: str, out: IO[str], progress: Callable[[int], None] | None = None) -> int:
    """Write the results of ``run_dir`` to ``out`` as JSON lines or CSV, in source order; returns how many.
    ``progress`` is told the count written now and then (``PROGRESS_EVERY`` rows).

    Never unpickles: a value JSON could not hold is written as its JSON form (as ``failed.jsonl`` writes
    inputs), so any journal you can read can be exported. The key column is there when the Source has one.
    A group directory exports its shards' results together (``journal.groupresults``).
    """
    check_format(fmt)
    if is_group(run_dir):
        from batchcli.journal.groupresults import export_group

        return export_group(run_dir, fmt, out, progress)
    path = journal_path(run_dir)
    keyed = keyed_run(path)
    found = ((o, k, t, None) for o, k, t, _ in rows(path, keyed, pickled=False))
    return write_rows(found, fmt, out, keyed, False, progress)


PROGRESS_EVERY = 1 << 14
"""How many exported rows between two calls of an export's ``progress``."""


def write_rows(
    found: Iterator[tuple[Any, ...]],
    fmt: str,
    out: IO[str],
    keyed: bool,
    sharded: bool,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``(ordinal, key, stored value, shard)`` rows as ``fmt``, with a key column when ``keyed`` and a
    shard column when ``sharded``; returns how many, telling ``progress`` the count every ``PROGRESS_EVERY``."""
    count = 0
    names = ["ordinal", *(["key"] if keyed else []), *(["shard"] if sharded else [])]
    writer = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow([*names, "result"])
    write = out.write
    for ordinal, key, text, shard in found:
        count += 1
        if progress is not None and not count % PROGRESS_EVERY:
            progress(count)
        if isinstance(key, bytes):  # a bytes key, as text JSON and CSV can hold
            key = key.decode("utf-8", "backslashreplace")
        if type(text) is bytes:  # plain data, marshalled: written as JSON, non-JSON parts in their JSON form
            text = _export_json(marshal.loads(text))
        # A lone surrogate (a file name decoded with surrogateescape) as its JSON escape: UTF-8 cannot carry it.
        text = writable(text)
        if writer is None:  # the stored JSON as it is, not parsed and re-encoded
            if len(names) == 1:
                write(f'{{"ordinal": {ordinal}, "result": {text}}}\n')
            else:
                ids = _ids_json(dict(zip(names, (ordinal, key, shard) if keyed else (ordinal, shard))))
                write(f'{ids[:-1]}, "result": {text}}}\n')
        else:  # a string as itself (JSON text of one starts with its quote); anything else as its JSON
            cell = writable(json.loads(text)) if text.startswith('"') else text
            if isinstance(key, str):
                key = writable(key)
            writer.writerow([ordinal, *([key] if keyed else []), *([shard] if sharded else []), cell])
    return count


def _export_json(value: Any) -> str:
    try:
        return str(_to_json(value))
    except Exception:  # a tuple key, a set, bytes, NaN: as failed.jsonl writes inputs (compact, as the others)
        return json_text(json_form(value), compact=True)


def keyed_run(path: Path) -> bool:
    try:
        conn = connect(path)
        try:
            row = conn.execute("SELECT keyed FROM run").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise damaged(path, str(error)) from error
    if row is None:
        raise damaged(path, "it has no run record")
    return bool(row[0])
