"""One run of a job: its directory, logs, display, signals, and the executor on a loop thread."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Protocol

from rich.console import Console

from batchcli import __version__
from batchcli.load.configuration import bind_runtime
from batchcli.load.wiring import Job, Wiring
from batchcli.errors import RunDirWriteError
from batchcli.executors.base import Executor, check_executor, finish_executor, start_executor
from batchcli.run.interrupts import EarlySignals
from batchcli.journal.writer import Journal
from batchcli.journal.rundir import FLUSH_INTERVAL_S
from batchcli.run.logs import start_logging
from batchcli.outcome import Failure, Tally
from batchcli.run.display import make_display
from batchcli.load.project import format_user_traceback
from batchcli.journal.records import FailedFile, failure_record, json_form, write_json
from batchcli.journal.rundir import check_output_dir, unusable_output_dir
from batchcli.journal.resumption import Continuation, defines_item_key
from batchcli.load.service import maybe_await
from batchcli.load.source import is_async_source, source_length

log = logging.getLogger("batchcli")

EXIT_OK, EXIT_FAILED, EXIT_FATAL, EXIT_STOPPED = 0, 1, 3, 130
WRITE_RETRY_S = 5.0
"""How long a run whose directory cannot be written (a full disk) stays paused, retrying every flush,
before it stops resumably: long enough for a log rotation or a cleanup to free space, short enough
that a stuck run says so."""


@dataclass(frozen=True)
class RunOptions:
    """How a run presents itself; none of it changes what is processed."""

    output_dir: Path = Path("batchcli_outputs")
    """Where run directories are created (``-d``)."""
    verbosity: int = 0
    """0 default, 1 for ``-v``, 2 for ``-vv``."""
    console: Console = field(default_factory=lambda: Console(stderr=True))
    """Where progress and log lines go."""
    progress_interval_s: float = float(os.environ.get("BATCHCLI_PROGRESS_INTERVAL", "10"))
    """Seconds between plain progress lines when the console is not a terminal."""
    handle_signals: bool = True
    """Install SIGINT/SIGTERM handlers (only possible on the main thread)."""
    pause_shell: bool = True
    """On a terminal, Ctrl-C pauses the run and opens the pause shell (``--no-shell`` turns it off)."""


@dataclass(frozen=True)
class RunResult:
    """How a run ended."""

    exit_code: int
    """The process exit code (see the README)."""
    status: str
    """finished, stopped or crashed."""
    run_dir: Path
    """The run directory."""
    succeeded: int
    failed: int
    unprocessed: int | None
    """Items neither succeeded nor failed (None when the source's length is unknown)."""
    total: int | None
    failures: list[Failure]
    """Every final failure of this session, input and reason (a resumed run's earlier ones are in its journal)."""
    fatal: BaseException | None = None
    """The error that ended the run early, if any."""
    threads_left: int = 0
    """Threads of a sync ``process`` still running items a hard stop gave up on; the CLI does not wait for them."""
    write_error: RunDirWriteError | None = None
    """Why the run stopped when its run directory could not be written (a full disk); the CLI shows it."""


class Recorder(Protocol):
    """Receives every settled item once, in batches, from the recorder thread."""

    def record(self, done: list[tuple[int, int]], failures: list[Failure]) -> list[str]:
        """Record succeeded ordinals, as sorted merged ``[start, end)`` ranges, and final failures; return
        the ``failed.jsonl`` lines of the failures now durable. Raise ``OSError`` or ``sqlite3.Error``
        when the write failed, keeping the batch for the next call."""

    def forgive(self, ordinals: list[int]) -> None:
        """Recorded failures of this session that later succeeded; their ordinals come in ``done`` too."""


class NullRecorder:
    """Records nothing beyond the run directory's plain files."""

    def record(self, done: list[tuple[int, int]], failures: list[Failure]) -> list[str]:
        """Keep nothing; the failures go straight to ``failed.jsonl``."""
        return [json.dumps(failure_record(f), ensure_ascii=False) + "\n" for f in failures]

    def forgive(self, ordinals: list[int]) -> None:
        """Nothing to undo."""


class Run:
    """Drives one job from start to summary. The event loop runs on a thread of its own, so the
    main thread stays free for signals (and, on a terminal, the pause shell)."""

    def __init__(self, job: Job, wiring: Wiring, options: RunOptions, continuation: Continuation | None = None) -> None:
        self.job = job
        self.continuation = continuation or Continuation()
        """What this run carries on from: nothing, a run to resume, or a run whose failures it retries."""
        # Values read from BATCHCLI_* variables are recorded and shipped like -p values, so resume, retry
        # and workers never depend on the environment they happen to run in.
        self.wiring = wiring.with_environment(job.environment)
        self.options = options
        self.console = options.console
        self.tally = Tally()
        self.executor: Executor | None = None
        self.fatal: BaseException | None = None
        self.stop_requested = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_ready = threading.Event()
        self._finished = threading.Event()
        self.started_at = datetime.now().astimezone()
        check_executor(job.config)  # bad executor settings are bad input: no run directory for them
        resumed = self.continuation.journal
        if resumed is None:
            self.run_dir = _make_run_dir(options.output_dir, job.project.name, self.started_at)
        else:  # a resumed run keeps its directory and the time it first started
            self.run_dir = resumed.run_dir
            self.started_at = datetime.fromtimestamp(resumed.started_at).astimezone()
        bind_runtime(job.config, output_dir=options.output_dir, run_dir=self.run_dir, started_at=self.started_at)
        # A resumed run rewrites failed.jsonl from its journal first: an earlier session may have died
        # between a commit and the append, or in the middle of a line.
        self._failed_file = FailedFile(self.run_dir / "failed.jsonl", stale=resumed is not None)
        self._stalled_since: float | None = None
        """When writing the run directory started failing (monotonic); None while writes work."""
        self._write_cause: BaseException | None = None
        self._write_gave_up = False
        self._flush_lock = threading.Lock()
        self.recorder: Recorder = NullRecorder()
        """Where settled items are recorded durably: the journal, once the run starts."""
        self.journal: Journal | None = None
        self.pause_requested = False
        """Set from a signal handler; the main thread then calls ``on_pause``."""
        self.on_pause: Callable[[Run], None] = lambda run: run.stop()
        """What a pause request does: the pause shell on a terminal, a graceful stop elsewhere."""
        self.interactive = False
        """True when Ctrl-C opens the pause shell (and a fatal error the emergency shell)."""
        self.paused = False
        """True between ``pause()`` and ``resume()``."""
        self.shell_open = False
        """True while ``on_pause`` runs; the loop waits for it before cleaning up."""
        self.display: Any = None
        self._closing = False
        self._hard_stopped = False
        self._setup_task: asyncio.Future[Any] | None = None
        self._stop_timer: asyncio.TimerHandle | None = None

    # The driver, on the main thread.

    def execute(self, early: EarlySignals | None = None) -> RunResult:
        """Run the job to the end (or a stop) and write the summary.

        ``early`` holds a stop signal that arrived during start-up, before the run's own handlers.
        """
        # Handlers first: a signal from here on is a stop request, never a kill halfway through
        # making the journal. One that came before is taken over: the run then starts nothing.
        restore_signals = self._install_signals()
        early_signal = None if early is None else early.received
        if early_signal is not None:
            self.stop_requested = True
        try:
            self.journal = self._start_journal()
        except BaseException:
            restore_signals()
            raise
        self.recorder = self.journal
        stop_logging = start_logging(self.run_dir / "batchcli.log", self.console, self.options.verbosity)
        log.info("Run %s of %s (configuration %s)", self.run_dir.name, self.wiring.target, type(self.job.config).__name__)
        if early_signal is not None:
            log.warning("%s during start-up: stopping before any item starts.", signal.Signals(early_signal).name)
        self.interactive = self._wants_shell()  # before the live display starts: it redirects stdout
        if self.interactive:
            from batchcli.run.shell import PauseShell  # imports IPython only when it opens

            self.on_pause = PauseShell()
        display = make_display(self.tally, self.console, self.job.project.name, self.options.progress_interval_s)
        self.display = display
        loop_thread = threading.Thread(target=self._loop_main, name="batchcli-loop", daemon=True)
        recorder = threading.Thread(target=self._record_loop, name="batchcli-recorder", daemon=True)
        try:
            display.start()
            loop_thread.start()
            recorder.start()
            # The main thread only waits, so signal handlers (and the pause shell) run promptly.
            while not self._finished.wait(0.1):
                if self.pause_requested:
                    self._open_pause()
            loop_thread.join()
            recorder.join()
            self._last_flush()
        finally:
            display.stop()
            restore_signals()
            self._failed_file.close()
        try:
            result = self._result()
            if result.write_error is None:
                try:
                    # The summary first: if closing the session then fails, the run reads as crashed and
                    # a resume (which settles nothing new) writes both again.
                    self._write_summary(result)
                    fatal = result.fatal
                    self.journal.finish(result.status, fatal, "" if fatal is None else format_user_traceback(fatal))
                except (OSError, sqlite3.Error) as error:
                    self._write_failed(error)
                    result = self._result()
            # Else the session is left "running" (read back as crashed): counting what is only in memory
            # as settled would make the journal claim items a resume must redo.
        finally:
            self.journal.close()
        log.info("Run ended: %s, exit code %d", result.status, result.exit_code)
        stop_logging()
        return result

    def _wants_shell(self) -> bool:
        """The pause shell needs a terminal on both ends and our own SIGINT handler."""
        return (
            self.options.pause_shell
            and self.options.handle_signals
            and threading.current_thread() is threading.main_thread()
            and _is_terminal(sys.stdin)
            and _is_terminal(sys.stdout)
        )

    def _open_pause(self) -> None:
        self.shell_open = True  # before clearing the request, so the loop never sees neither
        self.pause_requested = False
        try:
            self.on_pause(self)
        finally:
            self.shell_open = False

    def _start_journal(self) -> Journal:
        carry = self.continuation
        if carry.journal is not None:
            journal = carry.journal
        else:
            keyed = carry.items is None and defines_item_key(self.job.source)
            journal = Journal.create(
                self.run_dir, self.job, self.wiring, keyed=keyed, parent=carry.parent, inputs=carry.items
            )
        try:
            journal.begin(self.tally)
        except sqlite3.Error as error:  # resuming on a disk that is still full
            journal.close()
            raise RunDirWriteError(self.run_dir, _describe(error), _free_space(self.run_dir)) from error
        return journal

    def _record_loop(self) -> None:
        while not self._finished.wait(FLUSH_INTERVAL_S):
            self.flush()

    def flush(self) -> None:
        """Record what the executor reported since the last flush (recorder thread, then once at the end).

        The journal first, then ``failed.jsonl`` with only what the journal committed. A write that
        fails keeps everything in memory for the next flush and pauses the executor until one succeeds.
        """
        with self._flush_lock:
            done = self.tally.take_done()
            new = self.tally.new_failures
            failures = [new.popleft() for _ in range(len(new))]
            recovered = self.tally.recovered
            if recovered:
                self.recorder.forgive([recovered.popleft() for _ in range(len(recovered))])
                self._failed_file.stale = True  # a forgiven failure's line goes: the file is rewritten
            try:
                lines = self.recorder.record(done, failures)
                self._failed_file.sync(lines, self._failure_lines)
            except (OSError, sqlite3.Error) as error:
                self._write_failed(error)
            else:
                self._write_works()

    def _failure_lines(self) -> list[str]:
        return [] if self.journal is None else self.journal.failure_lines()

    def _last_flush(self) -> None:
        """The final flush; while the run directory cannot be written, retry until ``WRITE_RETRY_S`` is up."""
        self.flush()
        while self._stalled_since is not None and time.monotonic() - self._stalled_since < WRITE_RETRY_S:
            time.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def _write_failed(self, error: BaseException) -> None:
        """Writing the run directory failed: pause at once, then stop resumably if it keeps failing."""
        self._write_cause = error
        now = time.monotonic()
        if self._stalled_since is None:
            self._stalled_since = now
            log.error(
                "Cannot write the run directory %s (%s; %s free): no new item starts while batchcli retries "
                "for up to %gs.",
                self.run_dir,
                _describe(error),
                _free_space(self.run_dir),
                WRITE_RETRY_S,
            )
            self.call_in_loop(self._pause_in_loop)
        elif now - self._stalled_since >= WRITE_RETRY_S and not self._write_gave_up:
            self._write_gave_up = True
            self.stop()  # in-flight items finish; what they settle is kept, and redone on resume if never written

    def _write_works(self) -> None:
        if self._stalled_since is not None:
            self._stalled_since = None
            log.warning("The run directory %s can be written again; carrying on.", self.run_dir)
            self.call_in_loop(self._pause_in_loop)

    def _install_signals(self) -> Any:
        if not self.options.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.interactive and not (self.stop_requested or self._closing):
            self.pause_requested = True  # the main loop opens the pause shell
            return
        # Act before logging: a signal that arrives while this handler logs runs a nested handler,
        # which must see this one's stop.
        if self.stop_requested:
            self.call_in_loop(self._cancel)
            log.warning("%s again: stopping at once; in-flight items stay unprocessed.", name)
            return
        self.stop()
        log.warning(
            "%s: stopping. Waiting for %d in-flight item(s) (at most %gs); send it again to stop at once.",
            name,
            self.tally.in_flight,
            self.job.config.stop_timeout_s,
        )

    def stop(self) -> None:
        """Ask the run to stop gracefully (thread-safe): nothing new starts, in-flight items finish."""
        self.stop_requested = True
        self.call_in_loop(self._stop_in_loop)

    def pause(self) -> None:
        """Start no new item until ``resume()`` (thread-safe); in-flight items finish."""
        self.paused = True
        self.call_in_loop(self._pause_in_loop)

    def resume(self) -> None:
        """Undo ``pause()`` (thread-safe)."""
        self.paused = False
        self.call_in_loop(self._pause_in_loop)

    def call_in_loop(self, callback: Any) -> None:
        """Run ``callback`` on the executor's loop thread; before the loop runs, nothing.

        Not waiting for the loop: a signal handler calls this on the main thread, which may not have
        started the loop thread yet. The flags set before the call (``stop_requested``, ``paused``)
        are what ``_main`` reads when it starts, so nothing is lost.
        """
        if not self._loop_ready.is_set():
            return
        if self.loop is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(callback)
            except RuntimeError:  # the loop closed in between
                pass

    # The executor side, on the loop thread.

    def _loop_main(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self._loop_ready.set()
            self._finished.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_ready.set()
        source = self.job.source
        began = False
        try:
            length = source_length(self._iterable())
            if length is not None:  # else keep what an earlier session counted, if any
                self.tally.total = length
            if self.stop_requested:
                return  # a signal during start-up: set nothing up, start no worker; the run ends stopped
            began = True
            # The async executor's Service is set up here, where a hard stop can cancel a hanging
            # setup(); the other executors set up a Service in each worker.
            if self.job.config.executor == "async" and not await self._setup():
                return  # stopped at once during setup(); finish() still runs
            self.executor = await start_executor(self.job, self.wiring, self.tally)
            if self.stop_requested:
                self._stop_in_loop()  # asked while starting: the stop timeout applies from now
            elif self.paused or self._stalled_since is not None:
                self.executor.pause()
            items, seen = self._items()
            await self.executor.run(items)
            if self.executor.fatal is not None:
                self._set_fatal(self.executor.fatal, "The Source raised")
            elif self.tally.exhausted:
                self.tally.total = next(seen) - 1
        except Exception as error:
            self._set_fatal(error, "The job could not start" if self.executor is None else "batchcli failed")
        finally:
            await self._settle_shell()
            if began:
                await self._call_hook("finish", lambda: finish_executor(self.job, self.executor))
            failed = [f.item for f in self.tally.failures]
            if failed:
                await self._call_hook("persist_failed", lambda: source.persist_failed(failed))

    async def _setup(self) -> bool:
        """Run ``setup()``; False when a hard stop cancelled it (an async setup can hang on a network)."""
        self._setup_task = asyncio.ensure_future(maybe_await(self.job.service.setup()))
        try:
            await self._setup_task
        except asyncio.CancelledError:
            if self._hard_stopped:
                return False
            raise
        return True

    def _items(self) -> tuple[Iterator[tuple[int, Any]] | AsyncIterator[tuple[int, Any]], Iterator[int]]:
        # zip() with a counter numbers the items in C; after exhaustion the counter tells how many came.
        seen = itertools.count()
        source = self._iterable()
        items: Any = _numbered(source.__aiter__(), seen) if is_async_source(source) else zip(seen, iter(source))
        assert self.journal is not None
        # A resumed run skips what its earlier sessions settled; a keyed source's keys are noted here.
        key_of = getattr(self.job.source, "item_key", None)
        return self.journal.skip_settled(items, self.tally, key_of), seen

    def _iterable(self) -> Any:
        """What the run iterates: the Source, or a retry's saved inputs."""
        items = self.continuation.items
        return self.job.source if items is None else items

    async def _settle_shell(self) -> None:
        """Before cleaning up: on a terminal, a fatal error opens the emergency shell; wait for any shell."""
        self._closing = True
        if self.fatal is not None and self.interactive:
            self.pause_requested = True
        # The shell awaits on this loop, so keep it (and the service) alive until the shell closes.
        while self.pause_requested or self.shell_open:
            await asyncio.sleep(0.05)

    def _pause_in_loop(self) -> None:
        # Paused by the user (the pause shell) or by a run directory that cannot be written.
        if self.executor is not None and not self.stop_requested:
            if self.paused or self._stalled_since is not None:
                self.executor.pause()
            else:
                self.executor.resume()

    def _stop_in_loop(self) -> None:
        # Once: a signal while the executor starts reaches here both as a callback and through the flag.
        if self.executor is None or self._stop_timer is not None:
            return
        self.executor.stop()
        assert self.loop is not None
        self._stop_timer = self.loop.call_later(self.job.config.stop_timeout_s, self._stop_timed_out)

    def _stop_timed_out(self) -> None:
        if self.tally.in_flight:
            log.warning(
                "Stop timeout (%gs): cancelling %d in-flight item(s); they stay unprocessed.",
                self.job.config.stop_timeout_s,
                self.tally.in_flight,
            )
        self._cancel()

    def _cancel(self) -> None:
        self._hard_stopped = True
        if self.executor is not None:
            self.executor.cancel()
        elif self._setup_task is not None:
            self._setup_task.cancel()

    async def _call_hook(self, name: str, hook: Any) -> None:
        try:
            await maybe_await(hook())
        except Exception as error:
            self._set_fatal(error, f"{name}() raised")

    def _set_fatal(self, error: BaseException, what: str) -> None:
        if self.fatal is None:
            self.fatal = error
        log.critical("%s:\n%s", what, format_user_traceback(error))

    # The outcome.

    def _result(self) -> RunResult:
        tally = self.tally
        # Whole-run counts, earlier sessions included, from the journal.
        assert self.journal is not None
        succeeded, failed = self.journal.succeeded, self.journal.failed
        unprocessed = None if tally.total is None else tally.total - succeeded - failed
        write_error = None
        if self._stalled_since is not None and self._write_cause is not None:
            write_error = RunDirWriteError(self.run_dir, _describe(self._write_cause), _free_space(self.run_dir))
        if self.fatal is not None:
            status, code = "crashed", EXIT_FATAL
        elif write_error is not None:
            status, code = "stopped", EXIT_STOPPED
        elif self.stop_requested and unprocessed != 0:
            status, code = "stopped", EXIT_STOPPED
        else:
            status, code = "finished", EXIT_FAILED if failed else EXIT_OK
        return RunResult(
            exit_code=code,
            status=status,
            run_dir=self.run_dir,
            succeeded=succeeded,
            failed=failed,
            unprocessed=unprocessed,
            total=tally.total,
            failures=list(tally.failures),
            fatal=self.fatal,
            threads_left=_item_threads_alive() if self._hard_stopped else 0,
            write_error=write_error,
        )

    def _write_summary(self, result: RunResult) -> None:
        ended = datetime.now().astimezone()
        assert self.journal is not None
        duration = self.journal.active_s()  # time spent running, over every session
        fatal = self.fatal
        write_json(
            self.run_dir / "summary.json",
            {
                "job": self.job.project.name,
                "target": self.wiring.target,
                "configuration": type(self.job.config).__name__,
                "params": {k: json_form(v) for k, v in self.job.public_params().items()},
                "status": result.status,
                "exit_code": result.exit_code,
                "succeeded": result.succeeded,
                "failed": result.failed,
                "unprocessed": result.unprocessed,
                "total": result.total,
                "started_at": self.started_at.isoformat(),
                "ended_at": ended.isoformat(),
                "duration_s": round(duration, 3),
                "sessions": self.journal.session_count,
                "parent": self.journal.parent,
                "items_per_s": round((result.succeeded + result.failed) / duration, 1) if duration > 0 else None,
                "fatal": None
                if fatal is None
                else {"type": type(fatal).__qualname__, "message": str(fatal), "traceback": format_user_traceback(fatal)},
                "batchcli_version": __version__,
            },
        )


def _describe(error: BaseException) -> str:
    """A write error for a message: SQLite's own words are vague ("disk I/O error"), so add its code."""
    name = getattr(error, "sqlite_errorname", None)
    return f"{error} ({name})" if name else str(error)


def _free_space(path: Path) -> str:
    """The free space of ``path``'s file system, for messages."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "unknown space"
    return f"{free:,} bytes" if free < 1 << 20 else f"{free / (1 << 20):,.1f} MiB"


def _item_threads_alive() -> int:
    # A cancelled sync item keeps running in its thread, and the interpreter joins those threads at exit.
    return sum(1 for t in threading.enumerate() if t.name.startswith("batchcli-item") and t.is_alive())


def _is_terminal(stream: Any) -> bool:
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


async def _numbered(items: AsyncIterator[Any], seen: Iterator[int]) -> AsyncIterator[tuple[int, Any]]:
    async for item in items:
        yield next(seen), item
    next(seen)  # match zip(): one past the last item


def _make_run_dir(output_dir: Path, job_name: str, started: datetime) -> Path:
    """``<output_dir>/<timestamp>_<job>``, owner-only, unique even for runs started in the same second."""
    check_output_dir(output_dir)
    stem = f"{started.strftime('%Y-%m-%dT%H-%M-%S')}_{job_name}"
    for n in itertools.count(1):
        path = output_dir / (stem if n == 1 else f"{stem}_{n}")
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
        except OSError as error:  # not writable, read-only file system, disk full: the same fix
            raise unusable_output_dir(output_dir, error) from error
    raise AssertionError("unreachable")
