"""The run directory's plain files: ``failed.jsonl`` and ``summary.json``."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from datetime import date, datetime, time as dtime, timedelta
from decimal import Decimal
from pathlib import Path, PurePath
from collections.abc import Iterable
from typing import Any, Callable

from batchcli.outcome import Failure


def json_form(value: Any) -> Any:
    """A JSON-able form of an input or a param: JSON values as they are, dataclasses and named tuples
    as objects, datetimes as ISO strings, timedeltas as seconds, sets as sorted lists, anything else
    as its ``repr``; a value that holds itself, or is nested deeper than the interpreter's stack, as its ``repr``
    (it raised ``RecursionError`` in the recorder, which stopped the run and every resume of it)."""
    try:
        return _json_form(value)
    except RecursionError:
        return safe_repr(value)  # Python's repr writes a cycle as {...}; too deep, it names the error


_LONG_INT_BITS = 14_000
"""Ints this long or longer may pass the interpreter's limit on int-to-text conversion (4300 digits), which
raised ``ValueError`` in the recorder (every failed item's input stopped the run, and each resume of it); shorter
ones never do (14,000 bits are at most 4,215 digits)."""


def long_int_text(value: int) -> str:
    """Every digit of an int of any length, as text: ``str()`` refuses past 4300 digits, ``Decimal`` does not."""
    return format(Decimal(value), "f")


def _writes_as_number(value: int) -> bool:
    """True when the interpreter writes ``value`` as text (JSON writes it as a number then), as every JSON encoder
    here decides it: exactly, so an int of 4,250 digits is a number whichever way its value was encoded."""
    if value.bit_length() < _LONG_INT_BITS:
        return True
    try:
        int.__repr__(value)
    except ValueError:
        return False
    return True


def _json_form(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and infinities are not JSON; every line of failed.jsonl must parse
    if value is None or isinstance(value, (bool, float, str)):
        return value
    if isinstance(value, int):
        return value if _writes_as_number(value) else long_int_text(value)
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_form(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: _json_form(v) for k, v in value._asdict().items()}
    if isinstance(value, enum.Enum):
        return _json_form(value.value)
    if isinstance(value, (Decimal, PurePath)):
        return str(value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_form(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_form(v) for v in value]
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        return int(seconds) if seconds.is_integer() else seconds
    if isinstance(value, (set, frozenset)):
        items = [_json_form(v) for v in value]
        try:
            return sorted(items)
        except TypeError:  # mixed kinds: any fixed order will do
            return sorted(items, key=lambda v: (type(v).__name__, json.dumps(v, sort_keys=True)))
    if isinstance(value, dict):  # keys that are not strings: JSON's keys are
        form = {_json_key(k): _json_form(v) for k, v in value.items()}
        if len(form) < len(value):  # keys alike as text (1 and "1"): the later value replaced the earlier
            return [[_json_form(k), _json_form(v)] for k, v in value.items()]
        return form
    return safe_repr(value)


def _json_key(key: Any) -> str:
    """A dict key as a JSON object key: its JSON form, as text."""
    form = _json_form(key)
    return form if isinstance(form, str) else json.dumps(form, ensure_ascii=False)


def safe_repr(value: Any) -> str:
    """``repr(value)``, or a placeholder when the user's ``__repr__`` itself raises: a failure record
    must never be lost to a broken ``__repr__``."""
    try:
        return repr(value)
    except Exception as error:
        return f"<{type(value).__name__} object; repr() raised {type(error).__name__}>"


def failure_record(failure: Failure) -> dict[str, Any]:
    """One line of ``failed.jsonl``."""
    return _record(
        failure.ordinal,
        json_form(failure.item),
        failure.error_type,
        failure.error_message,
        failure.attempts,
        failure.first_failed_at,
        failure.failed_at,
        failure.traceback,
    )


def failure_line(
    ordinal: int,
    item_json: str,
    error_type: str,
    error_message: str,
    attempts: int,
    first_failed_at: float,
    failed_at: float,
    traceback: str,
) -> str:
    """One line of ``failed.jsonl`` (newline included) from a journal failure row, whose input is
    already in JSON form: the journal is what the file is written from.

    Assembled from its parts rather than parsed and dumped again as one dict (a flood writes one line
    per item): the same text as ``json.dumps(_record(...), ensure_ascii=False)``.
    """
    text = _text
    failed = _iso(failed_at)
    first = failed if first_failed_at == failed_at else _iso(first_failed_at)
    return (
        f'{{"ordinal": {int(ordinal)}, "input": {item_json}, "error_type": {text(error_type)}, '
        f'"error_message": {text(error_message)}, "attempts": {int(attempts)}, '
        f'"first_failed_at": "{first}", "failed_at": "{failed}", '
        f'"traceback": {text(traceback)}}}\n'
    )


def row_lines(rows: list[tuple[Any, ...]]) -> list[str]:
    """``failure_line`` of each of a flush's ``failures`` rows (columns in the table's order), the same text.

    A flood repeats the same traceback frames and error type in every row: their JSON text is made
    once per run of rows that share them (compared, not hashed: a long traceback's frames cost less so), and only
    the last line of each traceback (the message) is escaped anew. A row's time is written as ``_iso`` writes it,
    without its two calls, which took 0.6 µs of a line's 2.0 (now 1.85; a 20-frame traceback's text 2.1 -> 1.6).
    """
    text, floor, seconds = _text, math.floor, _SECONDS
    head: str | None = None  # the frames of the row before, and their JSON text
    head_text = ""
    kinds: dict[str, str] = {}
    lines = []
    for ordinal, _key, _session, _blob, _type, item_json, error_type, message, traceback, attempts, first, last in rows:
        cut = 0 if head is None else len(head)
        if head is None or not traceback.startswith(head) or traceback.find("\n", cut) >= 0:  # other frames
            cut = traceback.rfind("\n") + 1
            head = traceback[:cut]
            head_text = text(head)[:-1]  # escaping is per character: the halves join exactly
        kind = kinds.get(error_type)
        if kind is None:
            kind = kinds[error_type] = text(error_type)
        second = floor(last)
        micros = round((last - second) * 1e6)  # as _iso, from here to the line's time
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        stamp, offset = seconds.get(second) or _second_parts(second)
        failed = f"{stamp}.{'%06d' % micros}{offset}" if micros else stamp + offset
        lines.append(
            f'{{"ordinal": {int(ordinal)}, "input": {item_json}, "error_type": {kind}, '
            f'"error_message": {text(message)}, "attempts": {int(attempts)}, '
            f'"first_failed_at": "{failed if first == last else _iso(first)}", "failed_at": "{failed}", '
            f'"traceback": {head_text}{text(traceback[cut:])[1:]}}}\n'
        )
    return lines


_dumps = json.JSONEncoder(ensure_ascii=False).encode
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_text = json.encoder.encode_basestring  # a str as JSON, as dumps(..., ensure_ascii=False) writes it


def json_text(value: Any, compact: bool = False) -> str:
    """``json.dumps(value, ensure_ascii=False)``, with the common inputs (str, int) written directly; ``compact``:
    without spaces after ``,`` and ``:``, as results are stored."""
    kind = type(value)
    if kind is str:
        return _text(value)
    if kind is int:
        try:
            return int.__repr__(value)
        except ValueError:  # past the interpreter's limit on writing ints as text (4300 digits)
            return _text(long_int_text(value))
    try:
        return _compact(value) if compact else _dumps(value)
    except RecursionError:  # nested deeper than the encoder goes: as json_form writes such a value
        return _text(safe_repr(value))


def _iso(timestamp: float) -> str:
    """``datetime.fromtimestamp(timestamp).astimezone().isoformat()``, the date, time and offset made once a second."""
    stamp, micros, offset = iso_parts(timestamp)
    if micros:
        return f"{stamp}.{micros:06d}{offset}"
    return stamp + offset


def iso_parts(timestamp: float) -> tuple[str, int, str]:
    """The date and time to the second, the microseconds and the UTC offset of ``timestamp`` in local time, as
    ``datetime.fromtimestamp(timestamp).astimezone()`` has them; the date, time and offset made once a second."""
    second = math.floor(timestamp)
    micros = round((timestamp - second) * 1e6)  # as datetime rounds: the fraction exactly, half to even
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    stamp, offset = _SECONDS.get(second) or _second_parts(second)
    return stamp, micros, offset


def _second_parts(second: int) -> tuple[str, str]:
    """The date and time of a whole second in local time, and its UTC offset, kept in ``_SECONDS``."""
    if len(_SECONDS) > 256:
        _SECONDS.clear()
    text = datetime.fromtimestamp(second).astimezone().isoformat()
    parts = _SECONDS[second] = (text[:19], text[19:])
    return parts


_SECONDS: dict[int, tuple[str, str]] = {}
"""``(date and time, UTC offset)`` of recent whole seconds, for ``_iso``."""


def _record(
    ordinal: int,
    item: Any,
    error_type: str,
    error_message: str,
    attempts: int,
    first_failed_at: float,
    failed_at: float,
    traceback: str,
) -> dict[str, Any]:
    return {
        "ordinal": ordinal,
        "input": item,
        "error_type": error_type,
        "error_message": error_message,
        "attempts": attempts,
        "first_failed_at": _iso(first_failed_at),
        "failed_at": _iso(failed_at),
        "traceback": traceback,
    }


class FailedFile:
    """``failed.jsonl``: a plain-text copy of the journal's failure rows, one line per failed item.

    The journal is the source of truth. Lines are appended only after the journal commit that holds
    them, so a crash can leave the file short (or with a torn last line) but never ahead of the
    journal; a file that may not match the journal is *stale* and is rewritten whole from it,
    atomically, before anything more is appended. A resumed run starts stale, which is what makes
    the file exact after any sequence of crashes and resumes. A write that fails (a full disk)
    keeps its lines in memory and cuts the file back to its last complete line, so the next
    ``sync`` writes them once. The lines of failures taken back (``drop``) are cut out of the file's
    tail, where recent failures are, instead of rewriting the whole file for a few lines.
    """

    def __init__(self, path: Path, *, stale: bool = False) -> None:
        self.path = path
        self.stale = stale
        """True when the file may not match the journal: the next ``sync`` rewrites it whole."""
        self.pending: list[str] = []
        """Lines committed to the journal and not yet in the file."""
        self._fd: int | None = None
        self._size = 0  # bytes of complete lines in the file, where a failed append is cut back to
        self._dropped: list[int] = []

    def drop(self, ordinals: list[int]) -> None:
        """Take out, at the next ``sync``, the line of each of these failures of this session (released by
        the breaker or forgiven after a later try): the journal commit before that sync deletes their rows."""
        self._dropped.extend(ordinals)

    def sync(self, new_lines: list[str], all_lines: Callable[[], Iterable[str]]) -> None:
        """Add ``new_lines`` (just committed to the journal) to the file; ``all_lines`` gives every line
        the journal holds, for a rewrite. Raises ``OSError`` with the lines kept for the next call."""
        behind = bool(self.pending)  # lines a failed write kept are not in the file: a cut cannot find theirs
        self.pending.extend(new_lines)
        dropped, self._dropped = self._dropped, []
        if dropped and not self.stale:
            self.stale = True  # until the lines are out: a cut that fails half-way leaves the file to be rewritten
            if not behind and self._cut(set(dropped)):
                self.stale = False
        if self.stale:
            self._rewrite(all_lines())
            self.pending, self.stale = [], False
        elif self.pending:
            self._append("".join(self.pending).encode("utf-8"))
            self.pending = []

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._size = os.fstat(self._fd).st_size
        try:
            _write_all(self._fd, data)
        except OSError:
            try:  # a torn line must not stay: cut back to the last complete one (shrinking needs no space)
                os.ftruncate(self._fd, self._size)
            except OSError:
                self.stale = True
            raise
        self._size += len(data)

    def _cut(self, ordinals: set[int]) -> bool:
        """Remove the last line of each of ``ordinals`` (this session's lines come after all others) when all
        are within ``CUT_TAIL_MAX`` bytes of the end: cut the file there and append the lines after it again.
        False, having changed nothing, when one is not found there."""
        if self._fd is None:
            if not self.path.exists():
                return False
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._size = os.fstat(self._fd).st_size
        start = max(0, self._size - CUT_TAIL_MAX)
        reader = os.open(self.path, os.O_RDONLY)
        try:
            tail = os.pread(reader, self._size - start, start)
        finally:
            os.close(reader)
        if len(tail) != self._size - start or not tail.endswith(b"\n"):
            return False
        if start > 0:  # from the first whole line on
            skip = tail.find(b"\n") + 1
            start, tail = start + skip, tail[skip:]
        lines = tail.split(b"\n")[:-1]
        found: dict[int, int] = {}
        for index in range(len(lines) - 1, -1, -1):
            ordinal = _ordinal_of(lines[index])
            if ordinal in ordinals and ordinal not in found:
                found[ordinal] = index
                if len(found) == len(ordinals):
                    break
        else:
            return False
        first = min(found.values())
        gone = set(found.values())
        offset = start + sum(len(line) + 1 for line in lines[:first])
        kept = b"".join(line + b"\n" for index, line in enumerate(lines[first:], first) if index not in gone)
        os.ftruncate(self._fd, offset)
        self._size = offset
        self._append(kept)
        return True

    def _rewrite(self, lines: Iterable[str]) -> None:
        """Replace the file with ``lines``, written a megabyte at a time: never all of them in memory at once."""
        self.close()
        lines = iter(lines)
        first = next(lines, None)
        if first is None and not self.path.exists():
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                chunk, size = ([] if first is None else [first]), 0
                for line in lines:
                    chunk.append(line)
                    size += len(line)
                    if size >= REWRITE_CHUNK:
                        _write_all(fd, "".join(chunk).encode("utf-8"))
                        chunk, size = [], 0
                _write_all(fd, "".join(chunk).encode("utf-8"))
                os.fsync(fd)  # the rename must not publish an empty file after a power cut
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a half-written copy would only take more of a full disk
            raise

    def close(self) -> None:
        """Close the file if it was opened."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


REWRITE_CHUNK = 1 << 20
"""About how many characters of lines a rewrite of ``failed.jsonl`` writes at a time."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


CUT_TAIL_MAX = 16 * 1024 * 1024
"""How far from the end of ``failed.jsonl`` the lines of dropped failures are looked for (some 50,000 lines); one
further back has the file rewritten whole from the journal."""


def _ordinal_of(line: bytes) -> int | None:
    """The ordinal a ``failed.jsonl`` line starts with (``{"ordinal": 12, ...``)."""
    if not line.startswith(b'{"ordinal": '):
        return None
    end = line.find(b",", 12)
    try:
        return int(line[12:end])
    except ValueError:
        return None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically: a reader sees the old file or the new one, never half of one.

    A str that UTF-8 cannot carry (a ``-p`` value or a file name with bytes that are not UTF-8, held by Python as
    lone surrogates) is written as its JSON escape (``\\udcff``), which reads back as it was: written as it was,
    it raised, and every session of such a run crashed at its end, the resumes too."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_bytes((json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written copy would only take more of a full disk
        raise
