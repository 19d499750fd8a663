"""``--log-format json``: each log record as one JSON object on a line, for log collectors.

Keys: ``time`` (ISO 8601), ``level``, ``event`` (what happened: ``retry``, ``item_failed``, else
``log``), ``run_id``, ``logger``, ``message``; and, where the record is about one item, ``ordinal``,
``item`` (its short repr), ``error_type``, ``attempt`` and ``delay``. Secret values in a message's
arguments are masked, as in every other file batchcli writes.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from batchcli.load.secret import masked
from batchcli.outcome import Failure, FailureBatch, _short_repr

ITEM_KEYS = ("ordinal", "item", "error_type", "attempt", "delay")
"""Attributes a record may carry (``extra=``) about the item it is about."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a ``FailureBatch`` is one object per failure, each on its own line."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record, FailureBatch):
            return "\n".join(self.failure(f) for f in record.failures)
        data: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "event": getattr(record, "event", "log"),
            "run_id": self.run_id,
            "logger": record.name,
            "message": _message(record),
        }
        for key in ITEM_KEYS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)

    def failure(self, failure: Failure) -> str:
        """The line of one final failure."""
        return json.dumps(
            {
                "time": _iso(failure.failed_at),
                "level": "ERROR",
                "event": "item_failed",
                "run_id": self.run_id,
                "logger": "batchcli.failures",
                "message": failure.error_message,
                "ordinal": failure.ordinal,
                "item": _short_repr(failure.item),
                "error_type": failure.error_type,
                "attempt": failure.attempts,
                "traceback": failure.traceback,
            },
            ensure_ascii=False,
        )


def _message(record: logging.LogRecord) -> str:
    args = record.args
    if isinstance(args, tuple) and args:
        try:
            return str(record.msg) % tuple(masked(a) for a in args)
        except (TypeError, ValueError):
            pass
    return record.getMessage()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="milliseconds")
