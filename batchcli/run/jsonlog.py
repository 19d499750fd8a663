"""``--log-format json``: each log record as one JSON object on a line, for log collectors.

Keys: ``time`` (ISO 8601), ``level``, ``event`` (what happened: ``retry``, ``item_failed``, else
``log``), ``run_id``, ``logger``, ``message``; and, where the record is about one item, ``ordinal``,
``item`` (its short repr), ``error_type``, ``attempt`` and ``delay``. Secret values in a message's
arguments are masked, as in every other file batchcli writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from batchcli.executors.signals import stop_signals_blocked
from batchcli.journal.records import iso_parts, json_text
from batchcli.load.secret import masked
from batchcli.outcome import Failure, FailureBatch, Tally, short_repr

if TYPE_CHECKING:
    from rich.console import Console

ITEM_KEYS = ("ordinal", "item", "error_type", "attempt", "delay")
"""Attributes a record may carry (``extra=``) about the item it is about."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a ``FailureBatch`` is one object per failure, each on its own line."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record, FailureBatch):  # the file's handler and stderr's format it alike: once, then kept
            made = record.__dict__.get("json_lines")
            if made is None or made[0] != self.run_id:
                made = record.__dict__["json_lines"] = (self.run_id, "\n".join([self.failure(f) for f in record.failures]))
            return made[1]
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
        if record.exc_info:  # the text a filter left (``SecretMask``), else formatted now
            data["traceback"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)

    def failure(self, failure: Failure) -> str:
        """The line of one final failure, as ``json.dumps`` writes its object (keys: see the module), assembled
        directly: a flood writes one per failure, twice when headless, and ``dumps`` took three times as long."""
        text = json_text
        return (
            f'{{"time": "{_iso(failure.failed_at)}", "level": "ERROR", "event": "item_failed", "run_id": {text(self.run_id)}, '
            f'"logger": "batchcli.failures", "message": {text(failure.error_message)}, "ordinal": {int(failure.ordinal)}, '
            f'"item": {text(short_repr(failure.item))}, "error_type": {text(failure.error_type)}, '
            f'"attempt": {int(failure.attempts)}, "traceback": {text(failure.traceback)}}}'
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
    """``datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="milliseconds")``, made once a second."""
    stamp, micros, offset = iso_parts(epoch)
    return f"{stamp}.{micros // 1000:03d}{offset}"


def event_line(event: str, run_id: str, message: str, level: str = "INFO", **fields: Any) -> str:
    """One JSON line that is not a log record (progress, the closing line), keyed as the records are."""
    data: dict[str, Any] = {
        "time": _iso(time.time()),
        "level": level,
        "event": event,
        "run_id": run_id,
        "logger": "batchcli",
        "message": message,
    }
    data.update(fields)
    return json.dumps(data, ensure_ascii=False, default=str)


class JsonProgress:
    """``--log-format json`` without a terminal: the plain progress line as a ``progress`` event every
    ``interval_s`` seconds (and once at the end), so stderr carries JSON lines only. The failures are
    ``item_failed`` records of the log already, so nothing prints them a second time."""

    def __init__(self, tally: Tally, console: Console, interval_s: float, run_id: str) -> None:
        from batchcli.run.display import Rate

        self._tally = tally
        tally.unshown = deque(maxlen=0)  # nothing groups the failures for the console here: keep none for it
        tally.taken_back = deque(maxlen=0)
        self._file = console.file
        self._interval_s = interval_s
        self._run_id = run_id
        self._rate = Rate(tally)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="batchcli-progress", daemon=True)

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self.print_line()

    def print_line(self) -> None:
        """Write the current state as one ``progress`` event."""
        from batchcli.run.display import run_counts, status_line

        tally = self._tally
        rate = self._rate.sample()
        settled, succeeded, failed = run_counts(tally)
        line = event_line(
            "progress", self._run_id, status_line(tally, rate),
            settled=settled, succeeded=succeeded, failed=failed, total=tally.total, retrying=tally.retrying,
            in_flight=tally.in_flight, items_per_s=round(rate, 2), elapsed_s=round(tally.elapsed(), 1),
        )
        with contextlib.suppress(OSError, ValueError):  # a closed or full stderr never stops the run
            self._file.write(line + "\n")
            self._file.flush()

    def start(self) -> None:
        """Begin writing."""
        with stop_signals_blocked():
            self._thread.start()

    def stop(self) -> None:
        """Stop writing, and write the final state."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self.print_line()
