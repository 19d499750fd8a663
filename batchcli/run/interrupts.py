"""SIGINT and SIGTERM: during start-up (``EarlySignals``) and while the run runs (``RunSignals``).

Python's defaults would kill the process mid-way (-15), possibly halfway through making a run
directory. Instead, a signal during start-up is remembered; while the user's code is being loaded
(imports, constructors, which may block on a network) it also abandons that at once, since nothing
is on disk yet. Once the run directory is being made, it is only remembered, and the run picks it
up as a stop request as soon as its own handlers are in place: it starts nothing and ends
"stopped", resumable. From then on ``RunSignals`` decides: the first SIGINT on a terminal pauses
(the pause shell), otherwise the first signal stops gracefully and a second stops at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Iterator, Protocol

log = logging.getLogger("batchcli")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a run (``executors.signals`` keeps them, and SIGHUP, from reaching workers). Defined
here, not imported from there: every command takes them, and ``runs`` or ``show`` must load no executor."""


SERVE_JOIN_S = 5.0
"""How long putting the run's handlers back waits for the signals already received to be acted on."""

ALARM_S = 0.25
"""How long a stop raised during start-up may take to unwind before it is raised again (see ``EarlySignals``)."""


@contextmanager
def held_interrupt() -> Iterator[None]:
    """A KeyboardInterrupt that Python's own SIGINT handler would raise inside the block is raised at its end.

    For code that must not be cut halfway (starting a run's threads): the interrupt then reaches the handler
    that stops the run, instead of leaving the threads working. Any other SIGINT handler is left alone.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP during a command that starts no run (see ``ends_at_stop_signals``). A ``KeyboardInterrupt``,
    as Ctrl-C's is, so that no ``except Exception`` on the way takes it for an error of its own."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


_ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""What ends a command that starts no run; SIGHUP (its terminal closed) too, or it died with its draft left behind."""


@contextmanager
def ends_at_stop_signals(command: str, left: str = "") -> Iterator[None]:
    """For a command that starts no run (``runs``, ``show``, ``results``, ``ctl``...): Ctrl-C, SIGTERM or SIGHUP
    ends it at once, as ``CommandStopped`` (exit 130, 143 or 129), also a stop signal that arrived while it started;
    ``left`` says what the command leaves behind then.

    ``EarlySignals``, which takes SIGINT and SIGTERM at start-up so that a run is never killed halfway, would only
    remember them until the command ended on its own: an export of millions of results, or one blocked on a full
    pipe, would not stop at all; and SIGHUP's default kills the process before it can tidy what it leaves
    unfinished (an export's draft file, which is its own to remove).
    """
    from batchcli.errors import CommandStopped

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in _ENDING}
    try:
        signal.signal(signal.SIGTERM, _terminated)
        if previous[signal.SIGHUP] is not signal.SIG_IGN:  # nohup asked for a command that outlives its terminal
            signal.signal(signal.SIGHUP, _terminated)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        early = getattr(previous[signal.SIGINT], "__self__", None)
        if isinstance(early, EarlySignals) and early.received is not None:  # while the command started
            raise KeyboardInterrupt if early.received == signal.SIGINT else Terminated(early.received)
        yield
    except Terminated as stop:
        raise CommandStopped(signal.Signals(stop.signum).name, stop.signum, command, left) from None
    except KeyboardInterrupt:
        raise CommandStopped("SIGINT", signal.SIGINT, command, left) from None
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: set outside Python, and Python cannot set it back
                signal.signal(signum, handler)


class StartInterrupted(KeyboardInterrupt):
    """A stop signal arrived while the user's code was being loaded: nothing ran, nothing was written.

    A ``KeyboardInterrupt``, so the user's ``except Exception`` cannot swallow it, and importing
    lets it through as it does Ctrl-C.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        """The signal that arrived."""

    @property
    def name(self) -> str:
        """``SIGINT`` or ``SIGTERM``."""
        return signal.Signals(self.signum).name


class EarlySignals:
    """The stop signals' handler during start-up; remembers the first, raises it only inside ``aborting()``."""

    def __init__(self) -> None:
        self.received: int | None = None
        """The first stop signal that arrived, if any."""
        self._abort = False
        self._unseen = False
        """A ``StartInterrupted`` was raised and has not yet reached the end of ``aborting()``."""
        self._previous: dict[int, Any] = {}

    @classmethod
    def install(cls) -> EarlySignals:
        """Handle the stop signals from now on (on the main thread only; elsewhere this does nothing).

        A signal an earlier ``EarlySignals`` (the one ``python -m batchcli`` installs first) remembered
        is carried over.
        """
        early = cls()
        if threading.current_thread() is not threading.main_thread():
            return early
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, early._handle)
            early._previous[signum] = previous
            owner = getattr(previous, "__self__", None)
            if isinstance(owner, EarlySignals) and owner.received is not None and early.received is None:
                early.received = owner.received
        return early

    def uninstall(self) -> None:
        """Put back the handlers ``install`` replaced."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @contextmanager
    def aborting(self) -> Iterator[None]:
        """While the user's code loads: a stop signal (also one already remembered) raises ``StartInterrupted``."""
        if self.received is not None:
            raise StartInterrupted(self.received)
        main = threading.current_thread() is threading.main_thread()
        previous_alarm = signal.signal(signal.SIGALRM, self._again) if main else None
        self._abort = True
        try:
            yield
        except StartInterrupted:
            self._unseen = False
            raise
        finally:
            self._abort = self._unseen = False
            if main:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous_alarm)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._abort:
            self._abort = False  # once: a second signal must not interrupt the unwinding
            self._raise(signum)

    def _raise(self, signum: int) -> None:
        # A handler that runs while the interpreter is in a finaliser or a callback (a ``__del__``, a weakref
        # callback, garbage collection) has its exception printed and dropped, and the loading would go on
        # (a ``time.sleep(60)`` in a constructor, say). Until ``aborting()`` sees the exception arrive, an
        # alarm raises it again.
        self._unseen = True
        signal.setitimer(signal.ITIMER_REAL, ALARM_S)
        raise StartInterrupted(signum)

    def _again(self, signum: int, frame: FrameType | None) -> None:
        if self._unseen and self.received is not None:
            self._raise(self.received)


def ignore_stop_signals() -> None:
    """From now on SIGINT and SIGTERM do nothing (on the main thread only; elsewhere this does nothing)."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


class Stoppable(Protocol):
    """What the run's signal handler needs of the run."""

    stop_requested: threading.Event

    def shell_can_open(self) -> bool:
        """True when a SIGINT should pause into the pause shell rather than stop."""

    def request_pause(self) -> None:
        """Ask the main thread to open the pause shell."""

    pause_pending: bool
    """True from a pause request until its shell is left."""

    signalled: int | None
    """The first stop signal it got (set here): a stop before the run started names it."""

    def stop(self) -> None:
        """Stop gracefully: nothing new starts, in-flight items finish."""

    def cancel(self) -> None:
        """Stop at once (thread-safe): in-flight items stay unprocessed."""

    def stop_report(self) -> str:
        """What a graceful stop waits for now, and for how long at most, for the log line."""

    def hang_up(self) -> None:
        """The terminal is gone: go on without it (no pause shell from now on), and say so in the log."""


class RunSignals:
    """The stop signals' handler while a run runs (on the main thread only), and SIGHUP's when it has a terminal.

    Python runs a signal's handler on the main thread between two of its bytecodes, wherever that thread is:
    also inside ``Event.wait`` or ``Event.set`` with the event's lock held. A handler that set an event then
    waited for that lock for good: the main thread hung, the Ctrl-C opened no shell, and the run, its items
    all done, waited for the shell it had been asked for (CI saw it once). So the handler only writes the
    signal's number to a pipe, which takes no lock; a thread of its own (``_serve``) reads it and acts.

    A terminal that hangs up (an ssh connection that drops, a closed window) sends SIGHUP, whose default ends
    the process at once: the run died, marked crashed, until someone resumed it. It now goes on without the
    terminal: the standard streams that were the terminal are pointed at ``/dev/null`` (writing to a hung-up
    terminal fails), the run turns headless (``hang_up``), and ``watch``, ``ctl`` and ``attach`` reach it.
    """

    def __init__(self, run: Stoppable) -> None:
        self._run = run
        self._terminal_fds: list[int] = []
        self._hung_up = False
        self._write = -1
        """The pipe's end the handler writes the signals to; -1 once the handlers are put back."""

    def install(self) -> Callable[[], None]:
        """Handle SIGINT and SIGTERM (and SIGHUP, on a terminal) from now on; returns what puts the previous
        handlers back (and waits for the signals that arrived to be acted on)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # a handler must never wait: a full pipe drops the signal instead
        from batchcli.executors.signals import stop_signals_blocked  # here: runs and show load no executors package

        serving = threading.Thread(target=self._serve, args=(read,), name="batchcli-signals", daemon=True)
        with stop_signals_blocked():
            serving.start()
        previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        for sig in previous:
            signal.signal(sig, self.received)
        self._terminal_fds = [fd for fd in (0, 1, 2) if _isatty(fd)]  # now: a hung-up terminal is no tty any more
        if self._terminal_fds or signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            # Also with every stream redirected: `batchcli exec ... </dev/null >run.log 2>&1 &` from an ssh session
            # gets the shell's SIGHUP when the session closes, and its default ended the run at once, crashed, with
            # no summary. (nohup, which ignores it, is left as it is.)
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self.received)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            write, self._write = self._write, -1  # first: a handler that runs late writes nowhere
            os.close(write)  # _serve reads the end of the pipe and returns
            serving.join(SERVE_JOIN_S)

        return restore

    def received(self, signum: int, frame: Any) -> None:
        """The Python handler (main thread): hand the signal to ``_serve``, taking no lock."""
        if self._write >= 0:
            with contextlib.suppress(OSError):  # full (BlockingIOError): 64 KiB of signals not yet acted on
                os.write(self._write, bytes([signum]))

    def _serve(self, read: int) -> None:
        """Act on each signal the handler passed on, in order, until the handlers are put back."""
        try:
            while signums := os.read(read, 64):
                for signum in signums:
                    try:
                        if signum == signal.SIGHUP:
                            self.hang_up(signum, None)
                        else:
                            self.handle(signum, None)
                    except Exception:  # a bug here must not leave the signals that follow unanswered
                        log.exception("Acting on %s failed", signal.Signals(signum).name)
        finally:
            os.close(read)

    def hang_up(self, signum: int, frame: Any) -> None:
        """The terminal hung up: the streams that were it write to ``/dev/null`` from now on; the run goes on."""
        if self._hung_up:
            return
        self._hung_up = True
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for fd in self._terminal_fds:
                with contextlib.suppress(OSError):
                    os.dup2(devnull, fd)
        finally:
            os.close(devnull)
        self._run.hang_up()

    def handle(self, signum: int, frame: Any) -> None:
        """Pause into the shell, stop gracefully, or (a second time) stop at once (``_serve``'s thread)."""
        run = self._run
        name = signal.Signals(signum).name
        if run.signalled is None:
            run.signalled = signum
        if signum == signal.SIGINT and not run.stop_requested.is_set() and run.shell_can_open():
            # The main thread opens the pause shell; a second Ctrl-C before IPython takes SIGINT over is the same
            # request (queued again, it reopened the shell as soon as it was left).
            if not run.pause_pending:
                run.request_pause()
            return
        if run.stop_requested.is_set():
            run.cancel()
            log.warning("%s again: stopping at once; in-flight items stay unprocessed.", name)
            return
        run.stop()
        log.warning("%s: stopping. %s; send it again to stop at once.", name, run.stop_report())


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
