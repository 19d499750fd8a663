"""The run directory's plain files: ``failed.jsonl`` and ``summary.json``."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from datetime import date, datetime, time as dtime
from decimal import Decimal
from pathlib import Path, PurePath
from typing import IO, Any

from batchcli.outcome import Failure


def json_form(value: Any) -> Any:
    """A JSON-able form of an input: JSON values as they are, dataclasses and named tuples as
    objects, datetimes as ISO strings, anything else as its ``repr``."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and infinities are not JSON; every line of failed.jsonl must parse
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_form(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: json_form(v) for k, v in value._asdict().items()}
    if isinstance(value, enum.Enum):
        return json_form(value.value)
    if isinstance(value, (Decimal, PurePath)):
        return str(value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: json_form(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_form(v) for v in value]
    return safe_repr(value)


def safe_repr(value: Any) -> str:
    """``repr(value)``, or a placeholder when the user's ``__repr__`` itself raises: a failure record
    must never be lost to a broken ``__repr__``."""
    try:
        return repr(value)
    except Exception as error:
        return f"<{type(value).__name__} object; repr() raised {type(error).__name__}>"


def failure_record(failure: Failure) -> dict[str, Any]:
    """One line of ``failed.jsonl``."""
    return {
        "ordinal": failure.ordinal,
        "input": json_form(failure.item),
        "error_type": failure.error_type,
        "error_message": failure.error_message,
        "attempts": failure.attempts,
        "first_failed_at": datetime.fromtimestamp(failure.first_failed_at).astimezone().isoformat(),
        "failed_at": datetime.fromtimestamp(failure.failed_at).astimezone().isoformat(),
        "traceback": failure.traceback,
    }


class FailedFile:
    """``failed.jsonl``, appended as failures happen so a crash keeps what was written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def write(self, failures: list[Failure]) -> None:
        """Append records and flush them to the OS."""
        if not failures:
            return
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        for failure in failures:
            self._file.write(json.dumps(failure_record(failure), ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file if it was opened."""
        if self._file is not None:
            self._file.close()
            self._file = None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
