"""One run of a job: its directory, logs, display, signals, and the executor on a loop thread."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Protocol

from rich.console import Console

from batchcli import __version__
from batchcli.configuration import bind_runtime
from batchcli.container import Job, Wiring
from batchcli.executors.base import Executor, finish_executor, start_executor
from batchcli.logs import start_logging
from batchcli.outcome import Failure, Tally
from batchcli.progress import make_display
from batchcli.project import format_user_traceback
from batchcli.records import FailedFile, json_form, write_json
from batchcli.secret import Secret
from batchcli.source import is_async_source, source_length

log = logging.getLogger("batchcli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FATAL, EXIT_STOPPED = 0, 1, 2, 3, 130
FLUSH_INTERVAL_S = 0.5


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
    """Every final failure, input and reason."""
    fatal: BaseException | None = None
    """The error that ended the run early, if any."""


class Recorder(Protocol):
    """Receives every settled item once, in batches, from the recorder thread."""

    def record(self, ordinals: list[int], failures: list[Failure]) -> None:
        """Record ordinals that succeeded and final failures."""


class NullRecorder:
    """Records nothing beyond the run directory's plain files."""

    def record(self, ordinals: list[int], failures: list[Failure]) -> None:
        """Drop the batch."""


class Run:
    """Drives one job from start to summary. The event loop runs on a thread of its own, so the
    main thread stays free for signals (and, on a terminal, the pause shell)."""

    def __init__(self, job: Job, wiring: Wiring, options: RunOptions) -> None:
        self.job = job
        self.wiring = wiring
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
        self.run_dir = _make_run_dir(options.output_dir, job.project.name, self.started_at)
        bind_runtime(job.config, output_dir=options.output_dir, run_dir=self.run_dir, started_at=self.started_at)
        self._failed_file = FailedFile(self.run_dir / "failed.jsonl")
        self._flush_lock = threading.Lock()
        self.recorder: Recorder = NullRecorder()
        """Where settled items are recorded durably (the journal)."""
        self.pause_requested = False
        """Set from a signal handler; the main thread then calls ``on_pause``."""
        self.on_pause: Callable[[Run], None] = lambda run: run.stop()
        """What a pause request does: the pause shell on a terminal, a graceful stop elsewhere."""

    # The driver, on the main thread.

    def execute(self) -> RunResult:
        """Run the job to the end (or a stop) and write the summary."""
        stop_logging = start_logging(self.run_dir / "batchcli.log", self.console, self.options.verbosity)
        log.info("Run %s of %s (configuration %s)", self.run_dir.name, self.wiring.target, type(self.job.config).__name__)
        display = make_display(self.tally, self.console, self.job.project.name, self.options.progress_interval_s)
        restore_signals = self._install_signals()
        loop_thread = threading.Thread(target=self._loop_main, name="batchcli-loop", daemon=True)
        recorder = threading.Thread(target=self._record_loop, name="batchcli-recorder", daemon=True)
        try:
            display.start()
            loop_thread.start()
            recorder.start()
            # The main thread only waits, so signal handlers (and the pause shell) run promptly.
            while not self._finished.wait(0.1):
                if self.pause_requested:
                    self.pause_requested = False
                    self.on_pause(self)
            loop_thread.join()
            recorder.join()
            self.flush()
        finally:
            display.stop()
            restore_signals()
            self._failed_file.close()
        result = self._result()
        self._write_summary(result)
        log.info("Run ended: %s, exit code %d", result.status, result.exit_code)
        stop_logging()
        return result

    def _record_loop(self) -> None:
        while not self._finished.wait(FLUSH_INTERVAL_S):
            self.flush()

    def flush(self) -> None:
        """Record what the executor reported since the last flush (recorder thread, then once at the end)."""
        with self._flush_lock:
            done = self.tally.done
            ordinals = [done.popleft() for _ in range(len(done))]
            new = self.tally.new_failures
            failures = [new.popleft() for _ in range(len(new))]
            self._failed_file.write(failures)
            self.recorder.record(ordinals, failures)

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
        if self.stop_requested:
            log.warning("%s again: stopping at once; in-flight items stay unprocessed.", name)
            self.call_in_loop(self._cancel)
            return
        log.warning(
            "%s: stopping. Waiting for %d in-flight item(s) (at most %.0fs); send it again to stop at once.",
            name,
            self.tally.in_flight,
            self.job.config.stop_timeout_s,
        )
        self.stop()

    def stop(self) -> None:
        """Ask the run to stop gracefully (thread-safe): nothing new starts, in-flight items finish."""
        self.stop_requested = True
        self.call_in_loop(self._stop_in_loop)

    def call_in_loop(self, callback: Any) -> None:
        """Run ``callback`` on the executor's loop thread."""
        self._loop_ready.wait()
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
        try:
            self.tally.total = source_length(source)
            # config.executor picks the strategy; it sets the job up where items will run.
            self.executor = await start_executor(self.job, self.wiring, self.tally)
            if self.stop_requested:
                self.executor.stop()
            items, seen = self._items()
            await self.executor.run(items)
            if self.executor.fatal is not None:
                self._set_fatal(self.executor.fatal, "The Source raised")
            elif self.tally.exhausted:
                self.tally.total = next(seen) - 1
        except Exception as error:
            self._set_fatal(error, "The job could not start" if self.executor is None else "batchcli failed")
        finally:
            await self._call_hook("finish", lambda: finish_executor(self.job, self.executor))
            failed = [f.item for f in self.tally.failures]
            if failed:
                await self._call_hook("persist_failed", lambda: source.persist_failed(failed))

    def _items(self) -> tuple[Iterator[tuple[int, Any]] | AsyncIterator[tuple[int, Any]], Iterator[int]]:
        # zip() with a counter numbers the items in C; after exhaustion the counter tells how many came.
        seen = itertools.count()
        source = self.job.source
        if is_async_source(source):
            return _numbered(source.__aiter__(), seen), seen  # type: ignore[attr-defined]
        return zip(seen, iter(source)), seen

    def _stop_in_loop(self) -> None:
        if self.executor is None:
            return
        self.executor.stop()
        assert self.loop is not None
        self.loop.call_later(self.job.config.stop_timeout_s, self._cancel)

    def _cancel(self) -> None:
        if self.executor is not None:
            self.executor.cancel()

    async def _call_hook(self, name: str, hook: Any) -> None:
        try:
            await _maybe_await(hook())
        except Exception as error:
            self._set_fatal(error, f"{name}() raised")

    def _set_fatal(self, error: BaseException, what: str) -> None:
        if self.fatal is None:
            self.fatal = error
        log.critical("%s:\n%s", what, format_user_traceback(error))

    # The outcome.

    def _result(self) -> RunResult:
        tally = self.tally
        unprocessed = None if tally.total is None else tally.total - tally.succeeded - tally.failed - tally.skipped
        if self.fatal is not None:
            status, code = "crashed", EXIT_FATAL
        elif self.stop_requested and unprocessed != 0:
            status, code = "stopped", EXIT_STOPPED
        else:
            status, code = "finished", EXIT_FAILED if tally.failed else EXIT_OK
        return RunResult(
            exit_code=code,
            status=status,
            run_dir=self.run_dir,
            succeeded=tally.succeeded,
            failed=tally.failed,
            unprocessed=unprocessed,
            total=tally.total,
            failures=list(tally.failures),
            fatal=self.fatal,
        )

    def _write_summary(self, result: RunResult) -> None:
        ended = datetime.now().astimezone()
        duration = (ended - self.started_at).total_seconds()
        fatal = self.fatal
        write_json(
            self.run_dir / "summary.json",
            {
                "job": self.job.project.name,
                "target": self.wiring.target,
                "configuration": type(self.job.config).__name__,
                "params": {k: "********" if isinstance(v, Secret) else json_form(v) for k, v in self.job.params.items()},
                "status": result.status,
                "exit_code": result.exit_code,
                "succeeded": result.succeeded,
                "failed": result.failed,
                "unprocessed": result.unprocessed,
                "total": result.total,
                "started_at": self.started_at.isoformat(),
                "ended_at": ended.isoformat(),
                "duration_s": round(duration, 3),
                "items_per_s": round((result.succeeded + result.failed) / duration, 1) if duration > 0 else None,
                "fatal": None
                if fatal is None
                else {"type": type(fatal).__qualname__, "message": str(fatal), "traceback": format_user_traceback(fatal)},
                "batchcli_version": __version__,
            },
        )


async def _numbered(items: AsyncIterator[Any], seen: Iterator[int]) -> AsyncIterator[tuple[int, Any]]:
    async for item in items:
        yield next(seen), item
    next(seen)  # match zip(): one past the last item


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _make_run_dir(output_dir: Path, job_name: str, started: datetime) -> Path:
    """``<output_dir>/<timestamp>_<job>``, owner-only, unique even for runs started in the same second."""
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{started.strftime('%Y-%m-%dT%H-%M-%S')}_{job_name}"
    for n in itertools.count(1):
        path = output_dir / (stem if n == 1 else f"{stem}_{n}")
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")
