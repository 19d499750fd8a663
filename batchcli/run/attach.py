"""``batchcli attach``: the pause shell of a run that has no terminal, as an IPython kernel started on demand.

The client asks over the control socket (``control.sock``, owner-only, ``SO_PEERCRED``) and keeps that
connection open for the whole session. The run then pauses and starts an ipykernel on its *main thread*,
the thread the pause shell uses on a terminal: the main thread only waits while a run goes, signal
handlers can be installed there, and ipykernel wants the thread's own (tornado) event loop, which the
run's loop thread already has for itself. The kernel's connection file is ``RUN_DIR/kernel.json`` (0600,
with its HMAC key); its sockets are IPC sockets in a private 0700 directory. The namespace is the pause
shell's (``self``, ``service``, ``source``, ``config``, ``failures``, ``in_flight``), one per run, and a cell
that awaits runs on the run's loop, through the shell's ``LoopRunner``. When the control connection closes,
whether the console left or the client died, the kernel is shut down and the run resumes (or stops, after
``self.stop()``). ipykernel is imported only when a client attaches (``run/kernel.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchcli.run.controller import RunController
from batchcli.run.shell import banner, shell_names

if TYPE_CHECKING:
    from batchcli.run.driver import Run

log = logging.getLogger("batchcli")

KERNEL_FILE = "kernel.json"
SOCKETS_PREFIX = "batchcli-attach-"
"""The private directory of a kernel's IPC sockets, in the temporary directory: their paths must be short."""
START_WAIT_S = 60.0
"""How long an attach waits for the main thread to start the kernel (a run ending meanwhile refuses it)."""
SESSION_POLL_S = 0.2
"""How often the session's server thread looks whether the run ended the session (a stop)."""
MISSING = (
    "batchcli attach needs ipykernel in the run's environment, which is not installed. Install it with: "
    "pip install 'batchcli[attach]' (then resume the run to attach to it)."
)


class Attachment:
    """The run's side of ``attach``: one namespace per run, one kernel session at a time."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._controller = RunController(run)
        self._namespace: dict[str, Any] = {}
        self._busy = threading.Lock()

    def serve(self, conn: socket.socket, closed: threading.Event) -> None:
        """Answer one attach request on ``conn`` (its peer checked) and hold the session until it closes."""
        if not self._busy.acquire(blocking=False):
            _reply(conn, {"ok": False, "error": "Another `batchcli attach` is open on this run; leave it first.", "not_now": True})
            return
        try:
            if self._run.tally.all_settled:  # it paused a run whose finish() ran, and held its end while attached
                _reply(conn, {
                    "ok": False, "not_now": True,
                    "error": "Every item has settled and the run is finishing (its finish() runs): there is nothing "
                    f"to attach to. See it once it has ended with: batchcli show {self._run.run_dir}",
                })  # fmt: skip
                return
            session = KernelSession(self._run, self._controller, self._namespace)
            self._run.open_on_main(session.run)
            while not session.ready.wait(0.1):
                if closed.is_set() or session.waited() > START_WAIT_S:
                    session.leave()
                    error = (
                        "The run is ending; there is nothing to attach to." if closed.is_set() else
                        f"The run did not open a shell within {START_WAIT_S:g} s: its pause shell may be open in "
                        "its own terminal. Try again once it is closed."
                    )
                    _reply(conn, {"ok": False, "error": error, "not_now": True})
                    return
            if session.error:
                _reply(conn, {"ok": False, "error": session.error, "missing": session.missing})
                return
            _reply(conn, {"ok": True, "connection_file": str(session.connection_file), "message": session.banner})
            # The client sends nothing: recv returns when it leaves or dies. Or the run ends the session (a stop
            # that timed out, a second stop signal): then its last word tells the client to leave too.
            conn.settimeout(SESSION_POLL_S)
            while not session.done.is_set():
                try:
                    if not conn.recv(4096):
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            session.leave()
            session.done.wait()
            with contextlib.suppress(OSError):
                _reply(conn, {"ok": True, "message": session.outcome})
        finally:
            self._busy.release()


def remove_stale_kernel(run_dir: Path) -> None:
    """Remove what a run killed while attached left (its successor holds the run directory's lock): the connection
    file, with its HMAC key, and the private directory of the kernel's sockets that the file names. ``kill -9``
    left that directory in the temporary directory for good, one per death. Only a directory of ours is taken:
    named as ``Kernel`` names them, right in the temporary directory, and owned by this user."""
    path = run_dir / KERNEL_FILE
    try:
        ip = json.loads(path.read_text()).get("ip")
    except FileNotFoundError:
        return
    except (OSError, ValueError, AttributeError):  # unreadable, or not a kernel's: the file goes all the same
        ip = None
    if isinstance(ip, str) and ip:
        sockets = Path(ip).parent
        with contextlib.suppress(OSError):
            mine = sockets.lstat().st_uid == os.getuid() and not sockets.is_symlink()
            if mine and sockets.name.startswith(SOCKETS_PREFIX) and sockets.parent == Path(tempfile.gettempdir()):
                shutil.rmtree(sockets, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class KernelSession:
    """One attach: pause the run, serve a kernel on the main thread until the client leaves, then resume."""

    def __init__(self, run: Run, controller: RunController, namespace: dict[str, Any]) -> None:
        self._run = run
        self._controller = controller
        self._namespace = namespace
        self.connection_file = run.run_dir / KERNEL_FILE
        self.ready = threading.Event()
        """Set once the kernel listens (or could not start: ``error``)."""
        self.done = threading.Event()
        """Set once the kernel is shut down and the run resumed or stopping."""
        self.error = ""
        self.missing = False
        self.banner = ""
        self.outcome = ""
        """What happened to the run when the session ended, for the client's last line."""
        self._left = threading.Event()
        self._io_loop: Any = None
        self._was_paused = False
        self._asked = time.monotonic()

    def waited(self) -> float:
        return time.monotonic() - self._asked

    def leave(self) -> None:
        """End the session (any thread): the kernel's loop stops, the main thread resumes the run."""
        self._left.set()
        io_loop = self._io_loop
        if io_loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                # Not add_callback: called by a signal handler on the loop's own thread, it queues the stop without
                # waking the loop, which then slept on in select() (a second SIGTERM did not end the session).
                io_loop.asyncio_loop.call_soon_threadsafe(io_loop.stop)

    def _end(self, kernel: Any) -> None:
        """A stop ends the session: the console closes, and a cell running now is interrupted (else it held the run
        until it returned, whatever the stop timeout, and only SIGKILL ended a run whose cell slept or looped)."""
        self.leave()
        kernel.interrupt()

    def run(self) -> None:
        """The session, on the main thread."""
        run, controller = self._run, self._controller
        if self._left.is_set():  # the client went before the main thread came to it
            self.done.set()
            return
        self._was_paused = run.paused.is_set()  # by ctl pause: an attach that fails leaves it paused
        if not run.stop_requested.is_set():
            run.pause()
        run.tally.pause_clock()  # time attached is not run time, as in the pause shell
        # The kernel sends sys.stdout and sys.stderr to the console; the run's own lines stay where they went.
        console, pinned = run.console, run.console._file
        console.file = console.file
        try:
            self._namespace.update(shell_names(run, controller))
            try:
                from batchcli.run.kernel import Kernel  # imports ipykernel

                kernel = Kernel(run, self._namespace, self.connection_file)
            except ImportError:
                self.error, self.missing = MISSING, True
            except (Exception, SystemExit) as error:  # a kernel that cannot start (traitlets may exit) must not end the run
                log.warning("attach: the kernel could not start: %s", error)
                self.error = f"The run could not start a kernel to attach to ({type(error).__name__}: {error})."
            else:
                try:
                    self.banner = banner(run, controller, emergency=False)
                    log.info("attach: a client attached; the run is paused.")
                    self._io_loop = kernel.io_loop
                    self.ready.set()
                    if not self._left.is_set():
                        with run.shell_open(lambda: self._end(kernel)):  # a stop that times out (or a second one)
                            kernel.serve()
                finally:
                    kernel.close()
            self.ready.set()
            self.outcome = self._leave_run()
        finally:
            console._file = pinned
            run.tally.resume_clock()
            self.done.set()

    def _leave_run(self) -> str:
        run, controller = self._run, self._controller
        if self.error:
            if not self._was_paused:
                run.resume()
            return ""
        if controller.stop_on_leave and not run.stop_requested.is_set():
            controller.stop_on_leave = False
            log.info("attach: the client left after self.stop(); stopping.")
            run.stop()
            return f"Stopping: waiting for {run.tally.in_flight} in-flight item(s); resume with: batchcli resume {run.run_dir}"
        if run.stop_requested.is_set():
            return "Stopping, as asked while attached."
        log.info("attach: the client left; resuming.")
        run.resume()
        return "Resumed the run."


def _reply(conn: socket.socket, reply: dict[str, Any]) -> None:
    conn.sendall(json.dumps(reply).encode() + b"\n")
