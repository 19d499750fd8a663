"""One run of a job in its run directory: the loop and recorder threads, the pause shell, the hooks' order."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import inspect
import itertools
import logging
import shutil
import signal
import sqlite3
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator

from batchcli.errors import JournalError, RunDirStartError
from batchcli.executors.base import Executor, make_executor
from batchcli.executors.calls import USER_ERRORS, ours
from batchcli.executors.signals import stop_signals_blocked
from batchcli.journal.records import FailedFile
from batchcli.journal.inputs import PAGE, ErrorsNoted, InputRow, SavedInputs, unpickle
from batchcli.journal.resumption import Continuation, defines_item_key
from batchcli.journal.rundir import JOURNAL_NAME, journal_path
from batchcli.journal.selection import Selection
from batchcli.journal.shards import position_in_source
from batchcli.journal.writer import Journal
from batchcli.load.project import format_user_traceback
from batchcli.load.secret import mask_texts, secret_texts
from batchcli.load.service import maybe_await
from batchcli.load.source import NotIterable, defines_persist_failed, is_async_source, iterate, source_length
from batchcli.load.wiring import Job, Wiring
from batchcli.outcome import FAILURES_KEPT, Tally
from batchcli.run.breaker import Breaker
from batchcli.run.control import ControlChannel, live_state
from batchcli.run.display import make_display
from batchcli.run.hardstop import HardStop
from batchcli.run.interrupts import EarlySignals, RunSignals, StartInterrupted, held_interrupt
from batchcli.run.logs import guard_console, start_logging
from batchcli.run.loopwatch import HELD_S, LoopWatch
from batchcli.run.notify import Notifier, notifier_of
from batchcli.run.preparing import Preparation
from batchcli.journal.rundir import free_space, out_of_inodes
from batchcli.run.recording import Recording, describe, write_stopped
from batchcli.run.report import RunResult, result_of, write_summary

if TYPE_CHECKING:
    from batchcli.run.session import RunOptions

log = logging.getLogger("batchcli")

SIGNAL_CHECK_S = 0.1
"""How often the waiting main thread looks for a signal that the kernel delivered to another thread."""

GC_THRESHOLD = 10_000
"""The garbage collector's first threshold while the loop runs (Python's is 700): a result waits for its batch
(``AsyncExecutor._seal``), and a thousand waiting dicts set off a collection each 700, though none is garbage
(a million results: 940 collections, about 25 ms). A job's own ``gc.set_threshold`` is left as it is."""

class Run:
    """Drives one job in its run directory: the loop and recorder threads, the pause shell, the flushes.

    The event loop runs on a thread of its own, so the main thread stays free for signals (and, on a
    terminal, the pause shell). The ``Session`` makes the run directory first and reports the result;
    the executor owns setting the job up and finishing it (``Executor.start``/``finish``). ``Run`` is
    the ``RunHandle`` the pause shell and its controller steer.
    """

    def __init__(
        self,
        job: Job,
        wiring: Wiring,
        options: RunOptions,
        run_dir: Path,
        started_at: datetime,
        continuation: Continuation | None = None,
    ) -> None:
        self.job = job
        self.wiring = wiring
        """The wiring as workers, resume and retry rebuild the job (the environment's values included)."""
        self.options = options
        self.console = options.console
        self.run_dir = run_dir
        self.started_at = started_at
        self.continuation = continuation or Continuation()
        """What this run carries on from: nothing, a run to resume, or a run whose failures it retries."""
        self.preparing: Preparation | None = None
        """Says how a retry's copy of many inputs goes; closed once the journal is made, before the display starts."""
        # The breaker takes back the failures of its window: they must still be among those held.
        window = 2 * job.config.breaker_window  # the failures the breaker may take back stay, however large
        self.tally = Tally(failures_kept=max(FAILURES_KEPT, window), failures_floor=window)
        self.tally.secrets = secret_texts(job.params, job.config)
        if defines_persist_failed(job.source):
            self.tally.failed_items = {}  # every failed input, for the hook (failures holds the recent ones)
        self._earlier_failed: list[Any] = []
        """Failed inputs of earlier sessions that never reached ``persist_failed``: it gets them with this one's."""
        self.executor: Executor | None = None
        """The executor once started (the controller and the shell use it)."""
        self._starting: Executor | None = None
        """The executor from the moment it is made, so a hard stop reaches a ``start()`` that hangs."""
        self._counted_settled = False
        """True when a keyed trial's earlier sessions counted towards its limit (``_items``)."""
        self._fatal: BaseException | None = None
        self._recorder_error: BaseException | None = None
        """What stopped the recorder thread, when something other than a write error did (a bug)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        # Cross-thread state, as events: set by a signal handler or the shell (main thread), read on the loop.
        self.stop_requested = threading.Event()
        self.paused = threading.Event()
        self._pause_requested = threading.Event()
        self._shell_idle = threading.Event()
        """Set while no pause shell is open or asked for; the loop waits for it before cleaning up."""
        self._shell_idle.set()
        self._wake = threading.Event()
        """Wakes the main thread: a pause was asked for, or the loop thread ended."""
        self._on_main: collections.deque[Callable[[], None]] = collections.deque()
        """Sessions waiting for the main thread: ``batchcli attach``'s kernel (run/attach.py)."""
        self._loop_ready = threading.Event()
        self._finished = threading.Event()
        resumed = self.continuation.journal is not None
        # A resumed run rewrites failed.jsonl from its journal first: an earlier session may have died
        # between a commit and the append, or in the middle of a line.
        failed_file = FailedFile(self.run_dir / "failed.jsonl", stale=resumed)
        self.recording = Recording(
            run_dir,
            self.tally,
            failed_file,
            lambda: self.call_in_loop(self._pause_in_loop),
            self.stop,
            retry_s=job.config.write_retry_s,
        )
        """The flushes to the run directory, and whether it can be written."""
        self.journal: Journal | None = None
        self._held_before: dict[int, tuple[str, str]] = {}
        """The items the breaker held when the run's last session stopped, and how they failed (``held_errors``)."""
        self.on_pause: Callable[[Run], None] = lambda run: run.stop()
        """What a pause request does: the pause shell on a terminal, a graceful stop elsewhere."""
        self.interactive = False
        """True when Ctrl-C opens the pause shell (and a fatal error the emergency shell)."""
        self.display: Any = None
        self._closing = False
        self._hard_stopped = False
        self._hard_stop = HardStop()
        """When the main thread stops waiting for a loop thread that a hard stop did not end."""
        self._left_loop = False
        self._hooks_cut = False
        """The run left its loop before the job's last hooks (``finish()``, ``persist_failed``) had returned."""
        self._source_items: Any = None
        """What the run iterates (``_iterable``), made once when the loop starts."""
        self._source_iterator: Any = None
        """The Source's own iterator (``_items``), closed at the end of the run (``_close_source``)."""
        self._shell_leavers: list[Callable[[], None]] = []
        """How to close each shell open now (``shell_open``)."""
        self.pause_pending = False
        """True from a pause request until its shell is left: a second Ctrl-C meanwhile is the same request."""
        self.signalled: int | None = None
        """The first stop signal the run got (``RunSignals``), for a stop before it started."""
        self._pausing = threading.Lock()
        """Makes ``pause()`` and ``resume()`` (any thread) stop and restart the run's clock once each."""
        self._loop_watch: LoopWatch | None = None
        """Tells when the job's code holds the event loop (``_watch_loop``)."""
        self._stop_sent = False  # the executor was told to stop
        self._stop_deadline: float | None = None
        """When a graceful stop becomes a hard one (monotonic): ``stop_timeout_s`` after it was asked for. The
        main thread watches it, so it holds while ``setup()`` hangs or the user's code holds the loop."""
        self.breaker: Breaker | None = None
        """The circuit breaker, once the executor runs (None when ``breaker_window=0``)."""
        self.breaker_reason = ""
        """Why the breaker opened the pause shell, for its banner; "" otherwise."""
        self.breaker_message = ""
        """Why the breaker stopped the run, for the closing lines; "" otherwise."""
        self.notifier: Notifier | None = None
        """Posts the run's events to ``notify_url``; None without one."""
        self.retrying_failed = threading.Lock()
        """Held while failures are retried live (``ctl retry-failed``, the pause shell, ``attach``): two requests at
        once each retried every failure, so an item's side effects ran three times; the second now waits, then
        retries what is still failed."""
        self.retries_closed = False
        """Set once the run is ending: a live retry then is refused (one running finishes first)."""
        self.retries_running: set[asyncio.Future[Any]] = set()
        """Retried calls a Ctrl-C gave up that run on in a thread or a worker (``RunController``), until they end."""

    @property
    def fatal(self) -> BaseException | None:
        """The error that ended the run early, if any."""
        return self._fatal

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The run's event loop, once the loop thread runs it."""
        return self._loop

    # The driver, on the main thread.

    def execute(self, early: EarlySignals | None = None) -> RunResult:
        """Run the job to the end (or a stop), write the summary, and return how it ended.

        ``early`` holds a stop signal that arrived during start-up, before the run's own handlers.
        """
        # Handlers first: a signal from here on is a stop request, never a kill halfway through
        # making the journal. One that came before is taken over: the run then starts nothing.
        restore_signals = RunSignals(self).install() if self.options.handle_signals else (lambda: None)
        early_signal = None if early is None else early.received
        if early_signal is not None:
            self.signalled = early_signal
            self.stop_requested.set()
        try:
            try:
                self.journal = self._start_journal()
                # Read here, on this thread, before the recorder uses the connection (the breaker is made on the loop's).
                self._held_before = self.journal.held_errors()
                # Resumed while the API's Retry-After still runs: no item starts before it ends (Cooldown.start),
                # at most throttle_max_wait_s from now, which this session's -p may shorten.
                if (cooling := self.journal.cooldown_left_s()) > 0:
                    self.tally.cooldown_until = time.monotonic() + min(cooling, self.job.config.throttle_max_wait_s)
            finally:
                if self.preparing is not None:
                    self.preparing.close()
        except (sqlite3.Error, OSError) as error:  # no room for the journal (a full disk, no inode left)
            restore_signals()
            raise self._not_started(self._unwritable(error)) from error
        except BaseException:
            restore_signals()
            raise
        self.recording.recorder = self.journal
        self.recording.watch_place(self.run_dir / JOURNAL_NAME)
        self.recording.failure_lines = self.journal.failure_lines
        self.journal.live = lambda: live_state(self)  # for `batchcli watch`, each flush
        guard_console(self.console)  # an unwritable stderr must not end the run (nor the closing line after it)
        try:
            stop_logging = start_logging(
                self.run_dir / "batchcli.log", self.console, self.options.verbosity, self.options.log_format,
                self.run_dir.name, self.tally.secrets, self.job.project.root,
            )  # fmt: skip
        except OSError as error:  # the journal fitted and its log file did not: the session ends before it began
            why = self._unwritable(error)  # before the journal lets its files go
            with contextlib.suppress(sqlite3.Error):
                self.journal.finish("stopped", None)
            self.journal.close()
            restore_signals()
            raise self._not_started(why) from error
        self.notifier = notifier_of(self.job.config, self.run_dir, self.job.project.name, self.tally.secrets)
        log.info("Run %s of %s (configuration %s)", self.run_dir.name, self.wiring.target, type(self.job.config).__name__)
        if early_signal is not None:
            log.warning("%s during start-up: stopping before any item starts.", signal.Signals(early_signal).name)
        self.interactive = self._wants_shell()  # before the live display starts: it redirects stdout
        if self.interactive:
            from batchcli.run.shell import PauseShell  # imports IPython only when it opens

            self.on_pause = PauseShell()
        title = self.job.project.name
        if self._selection is not None:  # a trial says so on the display, as in summary.json, runs and show
            title += f" ({self._selection.describe()})"
        display = make_display(
            self.tally, self.console, title, self.options.progress_interval_s, self.options.log_format, self.run_dir.name
        )
        self.display = display
        loop_thread = threading.Thread(target=self._loop_main, name="batchcli-loop", daemon=True)
        recorder = threading.Thread(target=self._record_loop, name="batchcli-recorder", daemon=True)
        control = ControlChannel.open(self)  # `batchcli ctl`: we hold the run directory's lock now
        interrupted: KeyboardInterrupt | None = None
        try:
            try:
                with held_interrupt():  # raised out of a half-started run, it left the loop thread working
                    with stop_signals_blocked():  # batchcli's own threads leave them to the main thread and the job's
                        recorder.start()
                    display.start()
                    # Last, and not blocking the stop signals (the job's threads start from it): no item runs while
                    # the main thread blocks them to start a thread. One that stopped the run from an early item
                    # (os.kill) went to another thread meanwhile, and its handler ran once the main thread let go.
                    loop_thread.start()
                # The main thread only waits, so signal handlers (and the pause shell) run promptly. With a
                # timeout: Python runs a signal's handler on the main thread, but the kernel may deliver the
                # signal to any thread, and then nothing interrupts a wait without one (a group SIGTERM went
                # unanswered until the run ended that way).
                self._wait(loop_thread)
            except KeyboardInterrupt as error:
                # No handler of ours took the SIGINT (run_job, a program that embeds the run): it stops at once,
                # resumably, and the interrupt goes on once the run is recorded so. It left the run's threads
                # working, its session "running", and resume refused for as long as the process lived.
                interrupted = error
                log.warning("KeyboardInterrupt: stopping at once; in-flight items stay unprocessed.")
                self.stop()
                self.cancel()
                self._wait(loop_thread)  # a second one ends the wait, as the first used to
            if not self._left_loop:
                loop_thread.join()
            recorder.join()
            if self._recorder_error is None:  # else what was not recorded stays so, for resume to redo
                try:
                    self.recording.last_flush()
                except Exception as error:  # as in _record_loop: a crash for resume to redo, not our traceback
                    self._recorder_failed(error)
        finally:
            if control is not None:
                control.close()
            display.stop()
            restore_signals()
            self.recording.close()
        result = self._close(self.journal)
        log.info("Run ended: %s, exit code %d", result.status, result.exit_code)
        if self.notifier is not None:
            self.notifier.ended(result)
            self.notifier.close()  # a bounded wait: the endpoint never decides how the run ends
        stop_logging()
        if interrupted is not None:
            raise interrupted
        return result

    def _wait(self, loop_thread: threading.Thread) -> None:
        """The main thread's part until the run is finished: open shells, watch the loop, time the stop."""
        while not self._finished.is_set():
            self._wake.wait(SIGNAL_CHECK_S)
            self._wake.clear()
            if self._pause_requested.is_set():
                self._open_pause()
            while self._on_main:
                self._open_on_main(self._on_main.popleft())
            self._nudge()  # a turn for the loop's timers, even while items never await
            self._watch_loop(loop_thread)
            deadline = self._stop_deadline
            if deadline is not None and time.monotonic() >= deadline and not self._hard_stop.begun:
                self._stop_timed_out()
            if self._hard_stop.overdue():
                self._leave_loop()

    def _close(self, journal: Journal) -> RunResult:
        """The result; then, unless the run directory cannot be written, the summary and the journal's end."""
        try:
            result = self._result(journal)
            if result.write_error is None:
                try:
                    # The summary first: if closing the session then fails, the run reads as crashed and
                    # a resume (which settles nothing new) writes both again.
                    write_summary(
                        result, self.job, self.wiring, journal, self.started_at, self._selection, self.options.unrecorded
                    )
                    fatal = result.fatal
                    finished = result.status == "finished"  # nothing held is left to a next session
                    held = None if self.breaker is None else {} if finished else self.breaker.held_errors()
                    journal.finish(result.status, fatal, "" if fatal is None else self._fatal_traceback(fatal), held)
                except (OSError, sqlite3.Error) as error:
                    self.recording.failed(error)
                    result = self._result(journal)
            # Else the session is left "running" (read back as crashed): counting what is only in memory
            # as settled would make the journal claim items a resume must redo.
        finally:
            journal.close()
        return result

    def _fatal_traceback(self, error: BaseException) -> str:
        """The user's traceback of the error that ended the run, the job's secrets masked (for the journal)."""
        return mask_texts(format_user_traceback(error), self.tally.secrets)

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
        self._pause_requested.clear()
        try:
            self.on_pause(self)
        finally:
            if not self._pause_requested.is_set():  # else the next turn of the main loop opens it again
                self.pause_pending = False
                self._shell_idle.set()

    @contextlib.contextmanager
    def shell_open(self, leave: Callable[[], None]) -> Iterator[None]:
        """While a shell (the pause shell, an attached console) is open on the main thread, which then watches no
        stop timeout: a stop closes it with ``leave`` (any thread) when ``stop_timeout_s`` has passed, and a second
        stop at once. A SIGTERM from a supervisor went unanswered for as long as someone stayed in the shell."""
        self._shell_leavers.append(leave)
        try:
            if self.stop_requested.is_set():
                self._leave_shells_later()
            yield
        finally:
            self._shell_leavers.remove(leave)
            self.pause_pending = False  # left: a Ctrl-C from now on asks for a new pause

    def leave_shells(self) -> None:
        """Close every open shell (any thread); the main thread then goes on with the stop."""
        for leave in list(self._shell_leavers):
            leave()

    def _leave_shells_later(self) -> None:
        deadline = self._stop_deadline
        delay = 0.0 if deadline is None else max(0.0, deadline - time.monotonic())
        log.warning(
            "A shell is open on this run: it closes when the stop times out (in %.0fs), or at once at a second stop.",
            delay,
        )
        timer = threading.Timer(delay, self.leave_shells)
        timer.daemon = True
        timer.start()

    @property
    def shell_is_open(self) -> bool:
        """True while the pause shell or an attached console holds the run paused."""
        return not self._shell_idle.is_set()

    def open_on_main(self, session: Callable[[], None]) -> None:
        """Run ``session`` (an attached shell) on the main thread soon; the loop waits for it before cleaning up."""
        self._shell_idle.clear()
        self._on_main.append(session)
        self._wake.set()

    def _open_on_main(self, session: Callable[[], None]) -> None:
        try:
            session()
        finally:
            if not self._pause_requested.is_set() and not self._on_main:
                self._shell_idle.set()

    # The handle's signal side (RunSignals calls these on the main thread).

    def shell_can_open(self) -> bool:
        """Ctrl-C pauses into the shell on a terminal, until the run starts cleaning up."""
        return self.interactive and not self._closing

    def request_pause(self) -> None:
        """Ask the main thread to open the pause shell (thread-safe)."""
        self.pause_pending = True
        self._shell_idle.clear()  # before the request, so the loop never sees neither
        self._pause_requested.set()
        self._wake.set()

    def cancel(self) -> None:
        """Stop at once (thread-safe): in-flight items stay unprocessed, and an open shell closes."""
        self._hard_stop.begin()
        self.call_in_loop(self._cancel)
        self.leave_shells()

    def _leave_loop(self) -> None:
        # The journal, the summary and the exit go ahead without the loop thread (a daemon).
        self._left_loop = True
        self._hooks_cut = not self._hard_stop.hooks_ran  # now: the loop thread may still get to them, too late
        if self._hooks_cut:
            log.warning(
                "The job's code still runs past the stop timeout (setup() or finish(), here or in its worker "
                "processes, or code that holds the event loop); leaving it without finish() and persist_failed."
            )
        executor = self.executor or self._starting
        if executor is not None:
            executor.abandon()  # worker processes: the exit that follows skips atexit, which would have ended them
        self._finished.set()  # the recorder's cue to stop; the main thread then flushes once more
        self.tally.flush_wanted.set()

    def stop_report(self) -> str:
        """What the stop waits for, and for how long at most, for the signal handler's log line."""
        timeout = self.job.config.stop_timeout_s
        if self.journal is None:  # a retry copying its inputs: the copy ends, and no item starts
            return "The run has not started: it ends before any item starts"
        if self.executor is None and self._starting is not None:  # no item has started: setup() has not returned
            return f"The job is still starting (setup()): waiting for it at most {timeout:g}s"
        return f"Waiting for {self.tally.in_flight} in-flight item(s) (at most {timeout:g}s)"

    def hang_up(self) -> None:
        """The terminal hung up (RunSignals pointed its streams at /dev/null): go on headless."""
        self.interactive = False  # a trip probes now, and no Ctrl-C can come
        log.warning(
            "The terminal hung up (SIGHUP): the run goes on without it. Follow it with: batchcli watch %s; "
            "steer it with batchcli ctl or batchcli attach; stop it with: batchcli ctl %s stop",
            self.run_dir, self.run_dir,
        )  # fmt: skip
        shell: Any = self.on_pause  # a PauseShell on a terminal
        if getattr(shell, "is_open", False):
            # Nobody can leave a shell on a terminal that is gone: the run stayed paused for good (a breaker's trip
            # never probed, breaker_max_wait_s never stopped it), and `ctl resume` is refused while a shell is open.
            # A cell running then (a long self.retry_failed(), a sleep) held the run paused until it returned: it is
            # interrupted, only if one runs (PauseShell.hung_up says why a SIGINT must not reach the prompt).
            if shell.hung_up():
                log.warning(
                    "The pause shell was open on that terminal, running a cell: the cell is interrupted as Ctrl-C "
                    "would, the shell is left as Ctrl-D leaves it, and the run resumes (a cell that catches "
                    "KeyboardInterrupt, or one that awaits and then blocks the run's loop, which Ctrl-C does not reach "
                    "either, holds it until it returns; batchcli ctl %s stop ends the run meanwhile).",
                    self.run_dir,
                )  # fmt: skip
            else:
                log.warning("The pause shell was open on that terminal: it is left as Ctrl-D leaves it, and the run resumes.")

    def _unwritable(self, error: BaseException) -> tuple[str, str]:
        """Why the run directory could not be written, and its file system's free space, for ``_not_started``."""
        cause = describe(error) + ("; no inode is left for a new file" if out_of_inodes(self.run_dir) else "")
        return cause, free_space(self.run_dir)

    def _not_started(self, why: tuple[str, str]) -> RunDirStartError:
        """The error for a run directory that could not be written at the start. A new run's directory goes (it
        holds nothing of use, and `runs` would list it); a resumed one stays as it was, to be resumed."""
        resuming = self.continuation.journal is not None
        if not resuming:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return RunDirStartError(self.run_dir, *why, resuming)

    def _start_journal(self) -> Journal:
        carry = self.continuation
        if carry.journal is not None:
            journal = carry.journal
            try:
                journal.rewired(self.job, self.wiring.without(self.options.unrecorded))
            except sqlite3.Error as error:  # resuming on a disk that is still full
                journal.close()
                raise write_stopped(self.run_dir, error) from error
        else:
            keyed = defines_item_key(self.job.source)  # a retry run too: its results carry the keys
            recorded = self.wiring.without(self.options.unrecorded)
            noted = ErrorsNoted()
            try:
                journal = Journal.create(
                    self.run_dir, self.job, recorded, keyed=keyed, parent=carry.parent,
                    inputs=None if carry.inputs is None else noted.note(self._unless_stopped(carry.inputs.rows_told(self.preparing))),
                    shard=carry.shard,
                    selection=carry.selection,
                    skipped=carry.done_elsewhere if carry.selection is not None and carry.selection.skip_done_in else None,
                )
            except (sqlite3.Error, OSError):
                raise  # no room to start: _not_started says why (the disk's free space), then removes the directory
            except BaseException:  # a retry whose parent went as its inputs were copied, a journal that cannot be made
                if carry.run_dir is None:  # this run's own new directory (a shard's may be taken over by another)
                    shutil.rmtree(self.run_dir, ignore_errors=True)  # it holds nothing, and `runs` would not list it
                raise
            if carry.inputs is not None:  # a retry: its inputs are in its journal now, and are read from there
                self.continuation = dataclasses.replace(carry, items=SavedInputs(self.run_dir), earlier_errors=noted.errors)
        try:
            journal.begin(self.tally)
            if carry.journal is not None and journal.earlier_states():
                # The last session's summary no longer says how the run stands: its status and counts were read as
                # the run's while the resume ran, and after it crashed. The session writes a new one as it ends (a
                # journal older than the live states keeps it: its totals are read back from it then).
                with contextlib.suppress(OSError):
                    (self.run_dir / "summary.json").unlink(missing_ok=True)
            if self.tally.failed_items is not None:
                self._earlier_failed = self._unhanded(journal)
        except sqlite3.Error as error:  # resuming on a disk that is still full
            journal.close()
            raise write_stopped(self.run_dir, error) from error
        return journal

    def _unless_stopped(self, rows: Iterator[InputRow]) -> Iterator[InputRow]:
        """A retry's inputs as its journal copies them. A stop (or a pause) asked for meanwhile ends the copy, a page
        at a time, and the run does not start: it went on to the end of a million inputs, then left a run directory
        holding them all, unprocessed, and a second Ctrl-C's "stopping at once" was not."""
        for n, row in enumerate(rows):
            if not n % PAGE and (self.stop_requested.is_set() or self.pause_pending):
                raise StartInterrupted(self.signalled or signal.SIGINT)
            yield row

    def _unhanded(self, journal: Journal) -> list[Any]:
        """The failed inputs of earlier sessions that never reached ``persist_failed`` (a session killed, or stopped
        while its hooks ran): this session's call hands them over with its own. Its own were all it got, so a
        dead-letter store fed by the hook silently missed a crashed session's failures."""
        blobs = journal.unhanded_failures()
        path = journal_path(self.run_dir)  # checked as ours by Journal.open, as unpickle requires
        items = []
        for blob in blobs:
            if blob is None:
                continue
            try:
                items.append(unpickle(path, blob))
            except JournalError as error:  # the class moved or changed since: the others still go
                log.warning("persist_failed does not get a failed input of an earlier session: %s It is still in "
                            "failed.jsonl and `batchcli show RUN --failures`.", error)
        if blobs:
            log.info("persist_failed gets %d failed input(s) of earlier sessions that never reached it.", len(items))
        return items

    def _record_loop(self) -> None:
        wanted = self.tally.flush_wanted  # set when results back up, and when the run finishes
        while not self._finished.is_set():
            wanted.wait(self.recording.interval_s)
            wanted.clear()
            if not self._finished.is_set():
                try:
                    self.recording.flush()
                except Exception as error:  # not a full disk (Recording waits those out): a bug, or text it refused
                    # Running on unrecorded would lose what settles from now on, and a flood would wait for a
                    # recorder that is gone: stop, as a crash, so that resume redoes what was not recorded.
                    self._recorder_failed(error)
                    self.stop()
                    return

    def _recorder_failed(self, error: Exception) -> None:
        self._recorder_error = error
        if self._fatal is None:
            self._fatal = error
        log.critical("Recording the run failed; the run stops, and resume redoes what was not recorded.", exc_info=error)

    def stop(self) -> None:
        """Ask the run to stop gracefully (thread-safe): nothing new starts, in-flight items finish, within
        ``stop_timeout_s`` (then it stops at once)."""
        first = not self.stop_requested.is_set()
        self._stop_deadline_from_now()
        self.stop_requested.set()
        with self._pausing:  # stopping is not paused: the clock runs while the items in flight finish
            if self.paused.is_set():
                self.paused.clear()
                self.tally.resume_clock()
        self.call_in_loop(self._stop_in_loop)
        if first and self._shell_leavers:
            self._leave_shells_later()
        elif self._shell_leavers:  # a second stop closes them at once, as the first one's log line says
            self.leave_shells()

    def _stop_deadline_from_now(self) -> None:
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.job.config.stop_timeout_s

    def pause(self) -> None:
        """Start no new item until ``resume()`` (thread-safe); in-flight items finish. The run's clock stops too
        (``ctl pause`` counted as run time: the rate and ETA drifted down while nothing ran)."""
        with self._pausing:
            if not self.paused.is_set():
                self.paused.set()
                self.tally.pause_clock()
        self.call_in_loop(self._pause_in_loop)

    def resume(self) -> None:
        """Undo ``pause()`` (thread-safe); an open circuit breaker closes: the user dealt with its cause."""
        with self._pausing:
            if self.paused.is_set():
                self.paused.clear()
                self.tally.resume_clock()
        self.breaker_reason = ""
        self.call_in_loop(self._resume_in_loop)

    def _resume_in_loop(self) -> None:
        if self.breaker is not None and not self.stop_requested.is_set():
            self.breaker.close_by_user()
        self._pause_in_loop()

    # The breaker's host side, on the loop thread.

    def breaker_changed(self) -> None:
        """The circuit breaker opened or closed."""
        self._pause_in_loop()

    def breaker_tripped(self, reason: str) -> bool:
        """On a terminal, open the pause shell with the reason; True then (the user decides, no probing)."""
        if self.notifier is not None:
            self.notifier.send("breaker", reason=reason, succeeded=self.tally.succeeded, failed=self.tally.failed)
        if not self.shell_can_open() or self.stop_requested.is_set():
            return False
        self.breaker_reason = reason
        self.request_pause()
        return True

    def breaker_gave_up(self, message: str) -> None:
        """The breaker stayed open past ``breaker_max_wait_s``: stop as a Ctrl-C stop does."""
        self.breaker_message = message
        self._stop_deadline_from_now()
        self.stop_requested.set()
        self._stop_in_loop()

    def call_in_loop(self, callback: Any) -> None:
        """Run ``callback`` on the executor's loop thread; before the loop runs, nothing.

        Not waiting for the loop: a signal handler calls this on the main thread, which may not have
        started the loop thread yet. The events set before the call (``stop_requested``, ``paused``)
        are what ``_main`` reads when it starts, so nothing is lost.
        """
        if not self._loop_ready.is_set():
            return
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(callback)
            except RuntimeError:  # the loop closed in between
                pass
            self._nudge()

    def _watch_loop(self, loop_thread: threading.Thread) -> None:
        """Say so when the job's code holds the event loop (a blocking call in async code): main thread."""
        loop, ident = self._loop, loop_thread.ident
        if loop is None or ident is None or self._left_loop or loop.is_closed():
            return
        watch = self._loop_watch
        if watch is None:
            timeout = self.job.config.item_timeout_s
            watch = self._loop_watch = LoopWatch(loop, ident, min(HELD_S, timeout or HELD_S))
        watch.check()

    def _nudge(self) -> None:
        """Have the executor give the loop a turn soon, however long its items go without awaiting."""
        executor = self.executor or self._starting
        if executor is not None:
            executor.nudge()

    # The executor side, on the loop thread.

    def _loop_main(self) -> None:
        collecting = gc.get_threshold()
        if 0 < collecting[0] < GC_THRESHOLD:
            gc.set_threshold(GC_THRESHOLD, *collecting[1:])
        try:
            asyncio.run(self._main())
        finally:
            if gc.get_threshold()[0] == GC_THRESHOLD:  # as it was, unless the job's own code set another
                gc.set_threshold(*collecting)
            self._loop_ready.set()
            self._finished.set()
            self.tally.flush_wanted.set()
            self._wake.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_ready.set()
        source = self.job.source
        executor: Executor | None = None
        try:
            self._source_items = self._iterable()
            length = source_length(self._source_items)
            if self._selection is not None:
                length = self._selection.total(length, position_in_source(self._source_items))
            if length is not None:  # else keep what an earlier session counted, if any
                self.tally.total = length
            if self.stop_requested.is_set():
                return  # a signal during start-up: set nothing up, start no worker; the run ends stopped
            executor = self._starting = make_executor(self.job, self.wiring, self.tally, length)
            await executor.start()
            if self._hard_stopped:
                return  # stopped at once during start(); finish() still runs
            self.executor = executor
            if self.stop_requested.is_set():
                self._stop_in_loop()  # asked while starting: the stop timeout applies from now
            elif self.paused.is_set() or self.recording.stalled:
                executor.pause()
            if self.job.config.breaker_window > 0:
                self.breaker = Breaker(
                    self.job.config, self.tally, self, self._loop, self.run_dir,
                    earlier_errors=self.continuation.earlier_errors or (),
                    held_before=self._held_before,
                )  # fmt: skip
                self.tally.watch = self.breaker.watch
            try:
                items, seen = self._items()
            except NotIterable as error:  # no frame is theirs to show: the message names their __iter__ and the fix
                self._fatal = error
                log.critical("The Source gave no items: %s", error)
                return
            await executor.run(items)
            if executor.fatal is not None:
                self._set_fatal(executor.fatal, "The Source raised")
            elif self.tally.exhausted:
                tally = self.tally
                # The items seen, plus those an earlier session settled that the source no longer holds (a keyed
                # file that shrank, a smaller -p count): else the run would end with fewer items than it settled.
                earlier = tally.earlier_succeeded + tally.earlier_failed
                # Settled before the trial's limit counted (``_items``): none of those is among the items seen.
                gone = earlier if self._counted_settled else max(0, earlier - tally.skipped)
                tally.total = next(seen) - 1 + gone
        except USER_ERRORS as error:
            if ours(error):
                raise
            self._set_fatal(error, "The job could not start" if self.executor is None else "batchcli failed")
        finally:
            self.tally.ended = True
            if self.breaker is not None:
                self.tally.watch = None
                self.breaker.end()
            await self._settle_shell()
            await self._settle_retry()
            await self._close_source()
            if executor is not None:
                await self._call_hook("finish", executor.finish)
            if self.tally.failed_items is not None:
                failed = self._earlier_failed + list(self.tally.failed_items.values())
                handed = not failed or await self._call_hook("persist_failed", lambda: source.persist_failed(failed))
                if handed and self.journal is not None and not self._left_loop:
                    self.journal.handed_over = True
            self._hard_stop.wound_up()

    def _items(self) -> tuple[Iterator[tuple[int, Any]] | AsyncIterator[tuple[int, Any]], Iterator[int]]:
        # zip() with a counter numbers the items in C; after exhaustion the counter tells how many came.
        seen: Iterator[int] = itertools.count()
        source = self._source_items
        self._source_iterator = source.__aiter__() if is_async_source(source) else iterate(source)
        items: Any = _numbered(self._source_iterator, seen) if is_async_source(source) else zip(seen, self._source_iterator)
        selection = self._selection
        key_of = getattr(self.job.source, "item_key", None)
        assert self.journal is not None
        settled = self.tally.earlier_succeeded + self.tally.earlier_failed
        position = position_in_source(source)  # a shard's items by their place in the whole source (--sample)
        if selection is not None and selection.limit is not None and self.journal.keyed and settled:
            # A keyed source may come in another order on resume, and its first N items are then not the
            # trial's: what earlier sessions settled is skipped first and counts towards the limit, so a trial
            # of N items takes N in all, whatever the order.
            items = self.journal.skip_settled(items, self.tally, key_of)
            self._counted_settled = True
            return selection.apply(items, self.continuation.done_elsewhere, key_of, taken_before=settled, position=position)
        if selection is not None:  # only a trial or incremental run pays for the filter
            items, seen = selection.apply(items, self.continuation.done_elsewhere, key_of, position=position)
        # A resumed run skips what its earlier sessions settled; a keyed source's keys are noted here.
        return self.journal.skip_settled(items, self.tally, key_of), seen

    @property
    def _selection(self) -> Selection | None:
        """Which items of the Source the run takes, when not all of them (a retry takes its inputs)."""
        selection = self.continuation.selection
        if selection is None or selection.takes_all or self.continuation.items is not None or self.continuation.inputs is not None:
            return None
        return selection

    async def _close_source(self) -> None:
        """Close the Source's generator, when the run ended before it did (a limit, a stop, a fatal error): its
        ``finally`` runs now, in the run, where what it raises is logged with the user's traceback. It ran whenever
        the collector got to it, and an error there was "Exception ignored in" on stderr, outside the log file."""
        iterator, self._source_iterator = self._source_iterator, None
        try:
            if inspect.isasyncgen(iterator):
                await iterator.aclose()
            elif inspect.isgenerator(iterator):
                iterator.close()
        except USER_ERRORS as error:
            if ours(error):
                raise
            log.error("The Source raised while it was closed:\n%s", self._fatal_traceback(error))

    def _iterable(self) -> Any:
        """What the run iterates: the Source, or a retry's saved inputs."""
        items, shard = self.continuation.items, self.continuation.shard
        if items is None and shard is not None:  # only this shard's share; every executor gets it
            source = self.job.source
            return shard.share(source, source.item_key if defines_item_key(source) else None)
        return self.job.source if items is None else items

    async def _settle_shell(self) -> None:
        """Before cleaning up: on a terminal, a fatal error opens the emergency shell; wait for any shell."""
        self._closing = True
        if self.interactive and self._fatal is not None:
            self.request_pause()
        # The shell awaits on this loop, so keep it (and the service) alive until the shell closes.
        if not self._shell_idle.is_set():
            await asyncio.to_thread(self._shell_idle.wait)

    async def _settle_retry(self) -> None:
        """Before cleaning up: take no new live retry, and let one running (``ctl retry-failed``) finish when the run
        ends by itself. The end of the loop cut it short, and the items it had sent to a thread or a worker, which
        nothing cancels, succeeded there but stayed failed (``batchcli retry`` then did them twice). The calls of a
        retry that a Ctrl-C gave up (``retries_running``) are waited for the same way. A stop still cuts them short,
        as documented, and ``ctl`` says so: their items may take longer than anyone wants to wait."""
        self.retries_closed = True
        if self.retrying_failed.locked() and not self.stop_requested.is_set():
            await asyncio.to_thread(self._wait_retry)
        while self.retries_running and not self.stop_requested.is_set():
            await asyncio.wait(list(self.retries_running), timeout=SIGNAL_CHECK_S)
        for outcome in list(self.retries_running):  # cut short: none may count after persist_failed has its failures
            outcome.cancel()

    def _wait_retry(self) -> None:
        """Until the live retry is over, or a stop comes meanwhile (which cuts it short, as above)."""
        while not self.retrying_failed.acquire(timeout=0.1):
            if self.stop_requested.is_set():
                return
        self.retrying_failed.release()

    def _pause_in_loop(self) -> None:
        # Paused by the user (the pause shell), a run directory that cannot be written, or the open breaker.
        if self.executor is not None and not self.stop_requested.is_set():
            if self.paused.is_set() or self.recording.stalled or (self.breaker is not None and self.breaker.blocking):
                self.executor.pause()
            else:
                self.executor.resume()

    def _stop_in_loop(self) -> None:
        # Once: a signal while the executor starts reaches here both as a callback and through the event.
        if self.breaker is not None:
            self.breaker.end()
        if self.executor is None or self._stop_sent:
            return
        self._stop_sent = True
        self.executor.stop()

    def _stop_timed_out(self) -> None:
        """``stop_timeout_s`` passed since the stop was asked for (main thread): stop at once."""
        timeout = self.job.config.stop_timeout_s
        if self.executor is None and self._starting is not None:
            log.warning("Stop timeout (%gs): setup() has not returned; abandoning it.", timeout)
        elif self.tally.in_flight:
            log.warning(
                "Stop timeout (%gs): cancelling %d in-flight item(s); they stay unprocessed.", timeout, self.tally.in_flight
            )
        self.cancel()

    def _cancel(self) -> None:
        self._hard_stopped = True
        self._hard_stop.begin()
        executor = self.executor or self._starting
        if executor is not None:
            executor.cancel()

    async def _call_hook(self, name: str, hook: Any) -> bool:
        """Call a hook of the job; False when it raised (the run's fatal error then)."""
        try:
            await maybe_await(hook())
        except USER_ERRORS as error:
            if ours(error):
                raise
            self._set_fatal(error, f"{name}() raised")
            return False
        return True

    def _set_fatal(self, error: BaseException, what: str) -> None:
        if self._left_loop:  # the run has ended without the loop (a stop timed out): what it does now counts for nothing
            return
        if self._fatal is None:
            self._fatal = error
        log.critical("%s:\n%s", what, format_user_traceback(error))

    # The outcome.

    def _result(self, journal: Journal) -> RunResult:
        return result_of(
            self.run_dir,
            self.tally,
            journal,
            fatal=self._fatal,
            stop_requested=self.stop_requested.is_set(),
            write_error=self.recording.write_error(),
            threads_left=int(self._left_loop) + (_item_threads_alive() if self._hard_stop.begun else 0),
            breaker=None if self.breaker is None else dataclasses.asdict(self.breaker.counts),
            stop_reason=self.breaker_message,
            hooks_cut=self._hooks_cut,
        )


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
