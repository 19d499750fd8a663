"""Logging for one run: every warning and error to the run's log file, the console above the display."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.logging import RichHandler

TRACEBACKS = "batchcli.traceback"
"""Logger for full tracebacks of failed items: the log file gets them, the console does not."""

_CONSOLE_LEVELS = {0: logging.WARNING, 1: logging.INFO}
_FILE_LEVELS = {0: logging.INFO}


class RunFileHandler(logging.FileHandler):
    """The run's log file. A write that fails (a full disk) is reported once, as one console line, not
    as a "--- Logging error ---" block per record: the journal, not the log, is what must not be lost."""

    def __init__(self, path: Path, console: Console) -> None:
        super().__init__(path, encoding="utf-8")
        self._console = console
        self.failed = False
        """True once a write failed; later failures are silent."""

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
    console_handler.addFilter(lambda record: not record.name.startswith(TRACEBACKS))
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
