"""Logging for one run: every warning and error to the run's log file, the console above the display."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.logging import RichHandler

from batchcli.outcome import FAILURES

_CONSOLE_LEVELS = {0: logging.WARNING, 1: logging.INFO}
_FILE_LEVELS = {0: logging.INFO}
FLUSH_AFTER_S = 0.2
"""Most seconds a final failure's record waits in the log file's buffer (other records are flushed at once)."""


class RunFileHandler(logging.FileHandler):
    """The run's log file. A write that fails (a full disk) is reported once, as one console line, not
    as a "--- Logging error ---" block per record: the journal, not the log, is what must not be lost.

    The record of a final failure is flushed within ``FLUSH_AFTER_S`` rather than at once: a flood of
    failures writes one buffer at a time instead of one system call per item (the journal has them all).
    """

    def __init__(self, path: Path, console: Console) -> None:
        super().__init__(path, encoding="utf-8")
        self._console = console
        self.failed = False
        """True once a write failed; later failures are silent."""
        self._flush_timer: threading.Timer | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != FAILURES or self.stream is None:
            super().emit(record)
            return
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        if self._flush_timer is None:  # emit runs under the handler's lock
            timer = self._flush_timer = threading.Timer(FLUSH_AFTER_S, self._flush_later)
            timer.daemon = True
            timer.start()

    def _flush_later(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created in Handler.__init__
            self._flush_timer = None
            try:
                self.flush()
            except Exception:
                self.handleError(None)  # type: ignore[arg-type]  # ours reads no record

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
        with self.lock:  # type: ignore[union-attr]
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
        try:
            super().close()
        except OSError:  # the last buffered records did not fit; already reported
            pass


def start_logging(log_file: Path, console: Console, verbosity: int) -> Callable[[], None]:
    """Attach the run's handlers to the root logger; returns the function that detaches them."""
    console_level = _CONSOLE_LEVELS.get(verbosity, logging.DEBUG)
    file_level = _FILE_LEVELS.get(verbosity, logging.DEBUG)
    file_handler = RunFileHandler(log_file, console)
    file_handler.setLevel(file_level)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(name)s: %(message)s"))
    console_handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
    console_handler.setLevel(console_level)
    # Each final failure is one line and one traceback in the file; the console shows them grouped and
    # sampled (run/failures.py): one rich line per failure was 2 ms each, and a flood scrolled away.
    console_handler.addFilter(lambda record: record.name != FAILURES)
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
