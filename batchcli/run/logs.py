"""Logging for one run: every warning and error to the run's log file, the console above the display."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.logging import RichHandler

from batchcli.outcome import FAILURES, FailureBatch, failure_text

_CONSOLE_LEVELS = {0: logging.WARNING, 1: logging.INFO}
_FILE_LEVELS = {0: logging.INFO}
FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
"""The log file's plain format."""


class RunFileHandler(logging.FileHandler):
    """The run's log file. A write that fails (a full disk) is reported once, as one console line, not
    as a "--- Logging error ---" block per record: the journal, not the log, is what must not be lost.

    A ``FailureBatch`` is written as one record per failure, each with the time it failed, in one write:
    the same text as logging each failure alone, at a fraction of the cost.
    """

    def __init__(self, path: Path, console: Console) -> None:
        super().__init__(path, encoding="utf-8")
        self._console = console
        self.failed = False
        """True once a write failed; later failures are silent."""
        self.setFormatter(logging.Formatter(FORMAT))
        self._second = -1
        self._stamp = ""
        self._writing = False
        self._deferred: list[logging.LogRecord] = []
        """Records logged by a signal handler that interrupted a write to this file, written after it."""

    def emit(self, record: logging.LogRecord) -> None:
        # A signal handler that logs while this thread is writing the file would write into the middle
        # of that write, which buffered IO refuses ("reentrant call"): such a record waits for the write.
        # Other threads wait for the handler's lock instead, so only a signal handler gets here.
        if self._writing:
            self._deferred.append(record)
            return
        self._writing = True
        try:
            while self._deferred:
                self._write(self._deferred.pop(0))
            self._write(record)
            while self._deferred:
                self._write(self._deferred.pop(0))
        finally:
            self._writing = False

    def _write(self, record: logging.LogRecord) -> None:
        if not isinstance(record, FailureBatch) or self.stream is None:
            super().emit(record)
            return
        try:
            formatter = self.formatter
            if formatter is not None and hasattr(formatter, "failure"):  # --log-format json: a line per failure
                self.stream.write(formatter.format(record) + "\n")
            else:
                prefix = f" {logging.getLevelName(record.levelno):<8} {record.name}: "
                self.stream.write("".join([f"{self._time(f.failed_at)}{prefix}{failure_text(f)}\n" for f in record.failures]))
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _time(self, created: float) -> str:
        """``Formatter.formatTime`` (``2026-12-01 23:34:02,123``), the date and time made once a second."""
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((created - second) * 1000):03d}"

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        self.failed = True
        error = sys.exc_info()[1]
        self._console.print(
            f"Cannot write the log file {self.baseFilename!r} ({error}); it may miss records from here on.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    def close(self) -> None:
        try:
            while self._deferred:
                self._write(self._deferred.pop(0))
            super().close()
        except OSError:  # the last buffered records did not fit; already reported
            pass


def start_logging(
    log_file: Path, console: Console, verbosity: int, log_format: str = "text", run_id: str = ""
) -> Callable[[], None]:
    """Attach the run's handlers to the root logger; returns the function that detaches them.

    With ``log_format="json"`` the log file gets one JSON object per line, and so does stderr when the
    console is not a terminal (a terminal keeps its readable lines).
    """
    console_level = _CONSOLE_LEVELS.get(verbosity, logging.DEBUG)
    file_level = _FILE_LEVELS.get(verbosity, logging.DEBUG)
    file_handler = RunFileHandler(log_file, console)
    file_handler.setLevel(file_level)
    console_handler: logging.Handler
    if log_format == "json":
        from batchcli.run.jsonlog import JsonFormatter

        file_handler.setFormatter(JsonFormatter(run_id))
    if log_format == "json" and not console.is_terminal:
        console_handler = logging.StreamHandler(console.file)
        console_handler.setFormatter(JsonFormatter(run_id))
    else:
        console_handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
        # Each final failure is one line and one traceback in the file; the console shows them grouped and
        # sampled (run/failures.py): one rich line per failure was 2 ms each, and a flood scrolled away.
        console_handler.addFilter(lambda record: record.name != FAILURES)
    console_handler.setLevel(console_level)
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(min(console_level, file_level))
    root.addHandler(file_handler)
    root.addHandler(console_handler)

    def stop() -> None:
        root.removeHandler(console_handler)
        root.removeHandler(file_handler)
        file_handler.close()
        root.setLevel(previous_level)

    return stop
