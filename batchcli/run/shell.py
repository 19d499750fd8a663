"""The pause shell: IPython on the main thread, every top-level ``await`` sent to the run's event loop.

DESIGN decision 5: the executor's loop runs on a thread of its own, so the shell needs no nested
loop. IPython hands a cell that awaits to its ``loop_runner`` as one coroutine; ours runs it on the
run's loop with ``run_coroutine_threadsafe`` and waits, so ``await self.process(item)`` uses the
live service and its open connections. IPython is imported only when the shell first opens.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import reprlib
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Coroutine

from batchcli.executors.signals import stop_signals_blocked
from batchcli.outcome import clip
from batchcli.run.controller import RunController, paused_in_flight

if TYPE_CHECKING:
    from batchcli.run.handle import RunHandle

LAST_ERRORS = 5
"""How many of the latest failures the banner lists."""

COMMANDS = """\
  exit or Ctrl-D               leave the shell and resume the run
  self.stop()                  stop the run when you leave (resumable with `batchcli resume RUN_DIR`)
  self.stats()                 the counts now
  self.set_concurrency(n)      items in flight at once
  self.set_rate_limit(r)       items started per second (None: no limit)
  self.retry(failures[0])      process a failed item again now; self.retry_failed() retries them all
  await self.process(x)        run the live service on one input (a sync or an async process)"""

EMERGENCY_COMMANDS = """\
  exit or Ctrl-D               go on with the shutdown: finish() and persist_failed run, everything is saved
  self.retry(failures[0])      process a failed item again now; self.retry_failed() retries them all
  await self.process(x)        run the live service on one input (a sync or an async process)"""


class PauseShell:
    """The run's ``on_pause`` on a terminal: pause, open IPython on the live run, then resume or stop.

    One IPython shell and one namespace per run, so names defined at one pause are still there at the next.
    """

    def __init__(self) -> None:
        self._ipython: Any = None
        self._namespace: dict[str, Any] = {}
        self._controller: RunController | None = None
        self._leaving = False
        """Set by ``leave()``: the shell closes instead of coming back after a KeyboardInterrupt."""
        self._interacting = False
        """True while ``_interact`` runs, with IPython's SIGINT handler in place."""
        self._in_cell = False
        """True while a cell runs (``_run_cell``): only then may ``hung_up`` interrupt the shell's thread."""
        self._hung_up = False
        """Set by ``hung_up``: a SIGINT outside a cell is then its own, late, and dropped (``_sigint``)."""
        self._cells = threading.Lock()
        """Orders a cell's start and the shell's end against ``hung_up``'s look at ``_in_cell``."""

    def __call__(self, run: RunHandle) -> None:
        """Open the shell (main thread). A run with a fatal error gets the emergency shell."""
        emergency = run.fatal is not None
        if self._controller is None:
            self._controller = RunController(run)
        controller = self._controller
        if not emergency and not run.stop_requested.is_set():
            run.pause()
        run.tally.pause_clock()  # time in the shell is not run time: elapsed, rate and ETA leave it out
        show_display = _hide_display(run.display)
        try:
            self._namespace.update(shell_names(run, controller))
            print(banner(run, controller, emergency), flush=True)
            with run.shell_open(self.leave):
                self._interact(run)
            if emergency:
                _say("Continuing the shutdown.")
            elif controller.stop_on_leave and not run.stop_requested.is_set():
                _say(f"Stopping: waiting for {run.tally.in_flight} in-flight item(s).")
                run.stop()
            elif run.stop_requested.is_set():
                _say("Stopping, as a signal asked while the shell was open.")
            else:
                _say("Resuming the run.")
                run.resume()
        finally:
            run.tally.resume_clock()
            show_display()

    def _interact(self, run: RunHandle) -> None:
        shell = self._shell(run)
        # IPython's own Ctrl-C handling while the shell is open (cancel the input, interrupt a cell);
        # the run's handler again once it closes.
        previous_sigint, previous_hook = signal.getsignal(signal.SIGINT), sys.excepthook
        signal.signal(signal.SIGINT, self._sigint)
        self._leaving, self._hung_up, self._interacting = False, False, True
        # The process's one InteractiveShell (what get_ipython() answers) while the shell is open, and no longer:
        # held for the rest of the run, it kept an attached kernel's shell from starting ("MultipleInstanceError").
        for cls in type(shell)._walk_mro():
            cls._instance = shell
        try:
            with shell.builtin_trap, shell.display_trap:
                while True:
                    try:
                        shell.interact()
                        break
                    except OSError as error:  # EIO: the terminal hung up under the prompt, before its streams
                        if error.errno != errno.EIO:  # went to /dev/null; that ended the run with exit 1, unlogged
                            raise
                        break  # left, as Ctrl-D leaves it
                    except KeyboardInterrupt:  # a Ctrl-C between two prompts, or leave()
                        print("\nKeyboardInterrupt", flush=True)
                        if self._leaving:
                            break
        finally:
            self._in_cell = False  # first: hung_up's SIGINT, if it comes this late, is dropped (_sigint)
            type(shell).clear_instance()
            with self._cells:
                self._interacting = False  # before our handler is back: leave() sends no SIGINT it would take for a stop
            signal.signal(signal.SIGINT, previous_sigint)  # handles a SIGINT still pending first, with _sigint
            sys.excepthook = previous_hook

    @property
    def is_open(self) -> bool:
        """True while the shell is open on the terminal (``_interact`` runs)."""
        return self._interacting

    def leave(self, interrupt: bool = True) -> None:
        """Leave the shell as Ctrl-D does (any thread): a prompt ends; a cell running now is interrupted (unless not
        ``interrupt``: then the shell ends after it, and no SIGINT can land while the shell closes on its own).

        prompt_toolkit's prompt is ended on its own loop (a SIGINT there only clears the line); IPython's simple
        prompt (a terminal it does not drive, such as TERM=dumb) waits in ``input()``, and a cell runs on, until a
        ``KeyboardInterrupt``, which the SIGINT the shell handles as IPython does raises on the main thread.
        """
        shell = self._ipython
        if shell is None:
            return
        self._leaving = True
        shell.ask_exit()  # interact() ends at its next turn
        if not end_prompt(getattr(getattr(shell, "pt_app", None), "app", None)) and self._interacting and interrupt:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def hung_up(self) -> bool:
        """The terminal hung up (any thread): leave as ``leave`` does, and interrupt the cell that runs now, if one
        does, as Ctrl-C would; True when one did. Nobody could interrupt it any more, and the run stayed paused until
        it returned (a long ``self.retry_failed()``, a cell that never returns: for good).

        The SIGINT goes only to a cell: at the prompt, or while the prompt closes on its own (it read the terminal's
        end), one landing in prompt_toolkit's clean-up ended the process with exit 1 and no word in the log. A cell's
        start and the shell's end take ``_cells``, so no cell starts after this look and no SIGINT comes once the
        run's handler is back; one handled after its cell has returned is dropped (``_sigint``)."""
        with self._cells:
            self._hung_up = self._leaving = True
            interrupt = self._interacting and self._in_cell
            if interrupt:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        self.leave(interrupt=False)
        return interrupt

    def _sigint(self, signum: int, frame: Any) -> None:
        """SIGINT while the shell is open, outside prompt_toolkit's prompt (which has its own): a Ctrl-C, or
        ``leave``'s or ``hung_up``'s interrupt. It raises ``KeyboardInterrupt`` as Python's default handler does, but
        for ``hung_up``'s when its cell has returned meanwhile: the shell is being left already."""
        if self._hung_up and not self._in_cell:
            return
        raise KeyboardInterrupt

    def _run_cell(self, run_cell: Callable[..., Any]) -> Callable[..., Any]:
        """IPython's ``run_cell``, marked as running (``_in_cell``) for ``hung_up``, with ``_sigint`` in place again
        (an older prompt_toolkit put Python's default back after each prompt). No cell starts once the shell is being
        left."""

        def run(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is threading.main_thread():  # not a cell's own run_cell on the run's loop
                signal.signal(signal.SIGINT, self._sigint)
            with self._cells:
                if self._leaving:
                    return None
                outer, self._in_cell = self._in_cell, True  # outer: a cell that runs a cell (get_ipython().run_cell)
            try:
                return run_cell(*args, **kwargs)
            finally:
                self._in_cell = outer

        return run

    def _shell(self, run: RunHandle) -> Any:
        if self._ipython is None:
            from IPython.terminal.embed import InteractiveShellEmbed
            from IPython.terminal.ipapp import load_default_config

            config = load_default_config()  # the user's profile: editing mode, colours, ...
            config.InteractiveShellEmbed = config.TerminalInteractiveShell
            config.InteractiveShellEmbed.confirm_exit = False  # leaving only resumes; Ctrl-C pauses again
            hook = sys.excepthook
            with stop_signals_blocked():  # its history-saving thread
                shell = InteractiveShellEmbed(config=config, user_ns=self._namespace, _init_location_id="batchcli")
            sys.excepthook = hook  # embedding replaces it for the whole process
            shell.loop_runner = LoopRunner(run)
            shell.autoawait = True
            shell.run_cell = self._run_cell(shell.run_cell)  # type: ignore[method-assign]  # interact() calls it per cell
            self._ipython = shell
        return self._ipython


class LoopRunner:
    """IPython's ``loop_runner``: runs a cell that awaits on the run's event loop and waits for it.

    Ctrl-C while it waits cancels the cell on the loop (IPython shows the CancelledError); a second
    Ctrl-C stops waiting for it.
    """

    def __init__(self, run: RunHandle) -> None:
        self._run = run

    def __call__(self, coro: Coroutine[Any, Any, Any]) -> Any:
        loop = self._run.loop
        if loop is None or loop.is_closed():
            coro.close()
            raise RuntimeError("The run's event loop has ended; await is not available any more.")
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        tasks: list[asyncio.Task[Any]] = []

        def start() -> None:
            task = loop.create_task(coro)
            tasks.append(task)
            task.add_done_callback(lambda done: _settle(result, done))

        def cancel() -> None:
            # Runs after start() whenever start() was queued at all: the loop keeps callbacks in order.
            if tasks:
                tasks[0].cancel("interrupted by Ctrl-C")
            else:
                coro.close()
                result.cancel()

        # Ctrl-C may land anywhere in here, even before start() is queued; cancel() copes with both.
        try:
            loop.call_soon_threadsafe(start)
            return result.result()
        except KeyboardInterrupt:
            loop.call_soon_threadsafe(cancel)
            try:
                return result.result()
            except concurrent.futures.CancelledError:
                raise KeyboardInterrupt from None
            except KeyboardInterrupt:
                result.cancel()
                raise


def end_prompt(app: Any) -> bool:
    """End a running prompt_toolkit prompt as Ctrl-D does (``EOFError``), from any thread; False when none runs."""
    loop = getattr(app, "loop", None)
    if app is None or loop is None or not app.is_running:
        return False

    def end() -> None:  # on the prompt's own loop
        if app.is_running and not app.future.done():
            app.exit(exception=EOFError())

    with contextlib.suppress(RuntimeError):  # that loop has just closed: the prompt returned
        loop.call_soon_threadsafe(end)
    return True


def banner(run: RunHandle, controller: RunController, emergency: bool) -> str:
    """The run's state and the commands at hand, shown when the shell opens."""
    stats = controller.stats()
    lines: list[str] = []
    if emergency:
        error = run.fatal
        lines += [
            "── batchcli: fatal error; nothing is cleaned up yet ──",
            f"{type(error).__qualname__}: {error}",
            "The run cannot go on. Salvage what you need: `error` is the exception; service, source and",
            "config are the live objects; `await` runs on the run's event loop.",
        ]
    elif run.breaker_reason and run.job.config.executor != "async":
        # The workers build their own Service: `service` here is the driver's copy, and a new token on it reached
        # no worker (the breaker tripped again when the shell was left).
        lines += [
            "── batchcli: circuit breaker open: run paused ──",
            run.breaker_reason,
            f"The {run.job.config.executor} workers have Services of their own: a change to `service` here does not",
            "reach them. Fix the cause outside (the API, a file the job reads), or stop with self.stop() and",
            "continue with `batchcli resume RUN_DIR -p name=value`; leaving the shell resumes the run, and the",
            "items the breaker held back are processed again.",
        ]
    elif run.breaker_reason:
        lines += [
            "── batchcli: circuit breaker open: run paused ──",
            run.breaker_reason,
            "Fix the cause on the live objects (e.g. service.token = ...), try it with `await self.process(x)`,",
            "then leave the shell to resume: the items the breaker held back are processed again.",
        ]
    else:
        lines += [
            "── batchcli: run paused ──",
            f"No new item starts while this shell is open; {paused_in_flight(run)}.",
        ]
    lines.append(stats.line)
    failures = list(run.tally.failures)
    if failures:
        if run.tally.failures_dropped:
            lines.append(
                f"Last errors ({run.tally.failed:,} in all; `failures` holds the latest {len(failures):,}, the others "
                "are in failed.jsonl and `batchcli show RUN --failures`):"
            )
        else:
            lines.append(f"Last errors ({len(failures)} in all, see `failures`, which stays current):")
        for failure in failures[-LAST_ERRORS:]:
            message = failure.error_message.splitlines()[0] if failure.error_message else ""
            lines.append(
                f"  #{failure.ordinal} {reprlib.repr(failure.item)}: {failure.error_type}: {clip(message, 100)}"
            )
    lines.append("Names: self, service, source, config, failures, in_flight, error, run_dir")
    lines.append(EMERGENCY_COMMANDS if emergency else COMMANDS)
    return "\n".join(lines)


def _settle(result: concurrent.futures.Future[Any], task: asyncio.Task[Any]) -> None:
    """Hand a finished task's outcome to the future the main thread waits on."""
    if result.done():  # the shell gave up waiting
        return
    if task.cancelled():
        result.cancel()
    elif task.exception() is not None:
        result.set_exception(task.exception())
    else:
        result.set_result(task.result())


def _say(text: str) -> None:
    """A line for whoever sits at the shell: none when the terminal hung up (writing to it fails with EIO)."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


def _hide_display(display: Any) -> Callable[[], None]:
    """Stop the live display while the shell owns the terminal; returns what brings it back."""
    from batchcli.run.display import LiveDisplay

    if isinstance(display, LiveDisplay):
        display.stop()
        return display.start
    return lambda: None  # plain progress lines go to stderr, not into the prompt


def shell_names(run: RunHandle, controller: RunController) -> dict[str, Any]:
    """The names a shell on ``run`` gets, refreshed each time one opens: the pause shell's and ``attach``'s."""
    return {
        "self": controller,
        "service": run.job.service,
        "source": run.job.source,
        "config": run.job.config,
        "failures": controller.failures,
        "in_flight": _try(lambda: controller.in_flight, {}),
        "error": run.fatal,
        "run_dir": run.run_dir,
    }


def _try(get: Callable[[], Any], default: Any) -> Any:
    try:
        return get()
    except RuntimeError:  # the loop has ended
        return default
