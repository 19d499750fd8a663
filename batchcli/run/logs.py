"""Logging for one run: every warning and error to the run's log file, the console above the display."""

from __future__ import annotations

import logging
import os
import site
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from batchcli.journal.rundir import message_shape
from batchcli.load.secret import SecretMask
from batchcli.outcome import FAILURES, Failure, FailureBatch, clip, short_repr, shown

_CONSOLE_LEVELS = {0: logging.WARNING, 1: logging.INFO}
_FILE_LEVELS = {0: logging.INFO, 1: logging.INFO}
"""The log file has INFO lines always (a library's with -v: ``OwnInfo``); debug lines with -vv, as the console (-v
wrote debug to the file)."""
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
                self.stream.write(self._failure_lines(record.failures, prefix))
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _failure_lines(self, failures: list[Failure], prefix: str) -> str:
        """Each failure as the plain format writes a record of its own: ``Formatter.formatTime``
        (``2026-12-01 23:34:02,123``, the date and time made once a second), ``prefix`` (level and logger), then
        ``failure_text``. Written out in one loop rather than through those functions: a flood writes a line per
        item, and the three calls a failure cost a third of the file's time (1.8 µs a failure, now 1.2). A test
        keeps the two the same text."""
        second, stamp = self._second, self._stamp
        lines = []
        for ordinal, item, error_type, message, traceback, attempts, _, failed_at in failures:
            whole = int(failed_at)
            if whole != second:
                second, stamp = whole, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole))
            error = f"{error_type}: {message}" if message else error_type
            lines.append(
                f"{stamp},{int((failed_at - whole) * 1000):03d}{prefix}Item #{ordinal} ({short_repr(item)}) failed "
                f"after {attempts} attempt{'' if attempts == 1 else 's'}: {error}\n{traceback}\n"
            )
        self._second, self._stamp = second, stamp
        return "".join(lines)

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


class ConsoleStream:
    """The console's stream for a run, which must not end the run when it cannot be written.

    stderr on a full disk, a pipe whose reader left, a terminal that is gone: rich's write raised, the display's
    thread died with it, and the run's end (the display's last lines) raised again, so a run that had settled
    every item ended without its summary or its session's end (read back as crashed), with no word of why. The
    first write that fails is reported once in the log file; that write and every later one are dropped.
    Everything else (``isatty``, ``fileno``, ``encoding``) is the stream's own.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.broken = False
        """True once a write failed: the console shows nothing from then on."""

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return int(self.stream.write(text))
            except (OSError, ValueError) as error:  # ValueError: the stream was closed
                self._broke(error)
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError) as error:
                self._broke(error)

    def _broke(self, error: BaseException) -> None:
        self.broken = True  # first: the log line below also reaches the console's handler, which now drops it
        # Logged from a thread of its own: this write may hold the console's lock, and a thread in the console's
        # log handler holds that handler's lock while it waits for the console's.
        threading.Thread(target=_report_broken, args=(error,), name="batchcli-console", daemon=True).start()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _report_broken(error: BaseException) -> None:
    logging.getLogger("batchcli").warning(
        "The console cannot be written (%s); the run goes on, and its lines are in its log file from here on.", error
    )


def guard_console(console: Console) -> None:
    """Make ``console`` write through a ``ConsoleStream`` (once; its stream stays the one it has now)."""
    if not isinstance(console.file, ConsoleStream):
        console.file = ConsoleStream(console.file)  # type: ignore[assignment]


CONSOLE_LINES_PER_SECOND = 10
"""Log lines the console prints at most per second (batchcli's own warnings and errors always print)."""
CONSOLE_MORE_EVERY_S = 10.0
"""Seconds between two rounds of "... and N more like this" lines for the log records held back."""
CONSOLE_MAX_KINDS = 20
"""Kinds of held-back records counted apart; further ones join their logger's "(other messages)"."""


class ConsoleHandler(RichHandler):
    """The console's log lines, with the control characters of a message written out (``\\x1b``) but its line
    breaks kept: a library that logs a response body holding a terminal's escape sequences cleared the screen."""

    def render_message(self, record: logging.LogRecord, message: str) -> Any:
        return super().render_message(record, message.translate(_CONTROLS_BUT_LINES))


_CONTROLS_BUT_LINES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if code != 0x0A} | {0x09: " "}


class ConsoleSample(logging.Filter):
    """Lets at most ``lines_per_second`` log records a second through to the console; counts the others by
    logger, level and message shape, and prints "... and N more like this (see batchcli.log)" for them every
    ``more_every_s`` seconds and when the run ends (``announce``). The log file gets every record.

    A ``process`` that logs a warning per item (a skipped field, a retry of its own) printed a rich line per
    item, 2 ms each: 5,000 items took 10.7 s instead of 0.3, and the terminal scrolled. batchcli's own
    warnings and errors are about the run (the breaker, the disk) and always pass.
    """

    def __init__(
        self,
        console: Console,
        lines_per_second: int = CONSOLE_LINES_PER_SECOND,
        more_every_s: float = CONSOLE_MORE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._console = console
        self._lines_per_second = lines_per_second
        self._more_every_s = more_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = self._announced_at = clock()
        self._window_lines = 0
        self._held: dict[tuple[str, str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and (record.name == "batchcli" or record.name.startswith("batchcli.")):
            return True
        with self._lock:
            now = self._clock()
            if now - self._window_start >= 1.0:
                self._window_start, self._window_lines = now, 0
            passed = self._window_lines < self._lines_per_second
            if passed:
                self._window_lines += 1
            else:
                held = self._held
                key = (record.name, record.levelname, _shape(record))
                if key not in held and len(held) >= CONSOLE_MAX_KINDS:
                    key = (record.name, record.levelname, "(other messages)")
                held[key] = held.get(key, 0) + 1
            due = bool(self._held) and now - self._announced_at >= self._more_every_s
        if due:
            self.announce()
        return passed

    def announce(self) -> None:
        """Print a "... and N more like this" line for each kind of record held back since the last time."""
        with self._lock:
            held, self._held = self._held, {}
            self._announced_at = self._clock()
        for (name, level, shape), count in held.items():
            self._console.print(
                Text.assemble(
                    (f"{level} ", "log.level"),
                    f"{name}: {shape}",
                    (f" ... and {count:,} more like this (see batchcli.log)", "dim"),
                ),
                soft_wrap=True,
                highlight=False,
            )


def _shape(record: logging.LogRecord) -> str:
    """The first line of a record's message with its numbers as ``N``, clipped (as failures are grouped)."""
    try:
        message = record.getMessage()
    except Exception:  # bad arguments: logging reports it when the file's handler formats the record
        message = str(record.msg)
    return clip(shown(message_shape(message.partition("\n")[0])), 300)


class OwnInfo(logging.Filter):
    """Without -v, the log file keeps the info lines of batchcli and of the job's own code, and only the warnings and
    errors of the libraries installed beside them: httpx writes an info line per request ("HTTP Request: GET ...
    200 OK"), some 120 bytes an item, 1.2 GB of log for ten million items."""

    def __init__(self, project: Path | None) -> None:
        super().__init__()
        paths = sysconfig.get_paths()
        installed = {paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if paths.get(name)}
        installed.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
        self._installed = tuple(sorted(installed))
        self._markers = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")
        """Any other virtualenv's libraries (one inside the project, ``.venv``: its httpx went to the file)."""
        own = None if project is None else str(project)
        self._own = own if own is not None and self._library(own) else None
        """The job's project when it is installed itself (a file or a directory): its records are the job's. A
        project that is not is never a library's, but a virtualenv inside it (``.venv``) is."""

    def _library(self, path: str) -> bool:
        return path.startswith(self._installed) or any(marker in path for marker in self._markers)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or record.name == "batchcli" or record.name.startswith("batchcli."):
            return True
        path = record.pathname
        if not self._library(path):
            return True
        return self._own is not None and path.startswith(self._own)


def start_logging(
    log_file: Path,
    console: Console,
    verbosity: int,
    log_format: str = "text",
    run_id: str = "",
    secrets: tuple[str, ...] = (),
    project: Path | None = None,
) -> Callable[[], None]:
    """Attach the run's handlers to the root logger; returns the function that detaches them.

    ``secrets`` (``secret_texts``) are masked in every record the handlers write. ``project`` is the job's own code
    (``OwnInfo``).

    With ``log_format="json"`` the log file gets one JSON object per line, and so does stderr when the
    console is not a terminal (a terminal keeps its readable lines).
    """
    console_level = _CONSOLE_LEVELS.get(verbosity, logging.DEBUG)
    file_level = _FILE_LEVELS.get(verbosity, logging.DEBUG)
    file_handler = RunFileHandler(log_file, console)
    file_handler.setLevel(file_level)
    if verbosity == 0:
        file_handler.addFilter(OwnInfo(project))
    masking = SecretMask(secrets)
    file_handler.addFilter(masking)
    console_handler: logging.Handler
    sample: ConsoleSample | None = None  # JSON lines on stderr are for a collector: every record, as in the file
    if log_format == "json":
        from batchcli.run.jsonlog import JsonFormatter

        file_handler.setFormatter(JsonFormatter(run_id))
    if log_format == "json" and not console.is_terminal:
        console_handler = logging.StreamHandler(console.file)
        console_handler.setFormatter(JsonFormatter(run_id))
    else:
        console_handler = ConsoleHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
        # Each final failure is one line and one traceback in the file; the console shows them grouped and
        # sampled (run/failures.py): one rich line per failure was 2 ms each, and a flood scrolled away.
        console_handler.addFilter(lambda record: record.name != FAILURES)
        sample = ConsoleSample(console)
        console_handler.addFilter(sample)
    console_handler.setLevel(console_level)
    console_handler.addFilter(masking)
    root = logging.getLogger()
    previous_level = root.level
    # Handlers already on the root logger (the job's, or the one a logging.info() at import installs by itself)
    # keep showing what they showed: lowering the root level for the run's own handlers made such a handler print
    # every INFO line of the job, and batchcli's, without -v.
    kept_levels = [(h, h.level) for h in root.handlers if h.level == logging.NOTSET]
    for handler, _ in kept_levels:
        handler.setLevel(previous_level)
    root.setLevel(min(console_level, file_level))
    root.addHandler(file_handler)
    root.addHandler(console_handler)
    # The final failures go to the run's own handlers only: a handler the job set up (logging.basicConfig, at
    # import) printed every failure with its traceback, 25,009 lines for 5,000 failures, past the grouped console.
    failures = logging.getLogger(FAILURES)
    propagated = failures.propagate
    failures.propagate = False
    failures.addHandler(file_handler)
    failures.addHandler(console_handler)  # JSON lines on stderr carry them; the rich console drops them (filter)
    # Python's warnings (the job's, a library's deprecations) as records: they went to stderr as two plain lines
    # each, past the JSON lines of --log-format json and never into the log file.
    logging.captureWarnings(True)

    def stop() -> None:
        logging.captureWarnings(False)
        if sample is not None:
            sample.announce()
        failures.removeHandler(console_handler)
        failures.removeHandler(file_handler)
        failures.propagate = propagated
        root.removeHandler(console_handler)
        root.removeHandler(file_handler)
        file_handler.close()
        root.setLevel(previous_level)
        for handler, level in kept_levels:
            handler.setLevel(level)

    return stop
