"""An ipykernel inside the run process, on the calling (main) thread, for ``batchcli attach`` (run/attach.py).

What ipykernel's ``IPKernelApp`` does to the whole process is undone when the kernel closes: the std
streams, ``sys.excepthook`` and ``displayhook``, SIGINT (ipykernel ignores it; a headless run stops on it),
the ``pdb`` and ``faulthandler`` functions it patches, its singletons and ``atexit`` hooks, and its event
loop (a fresh one per kernel), so the next attach starts a fresh kernel on the same namespace. ipykernel
and tornado are imported only when a kernel starts.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchcli.run.attach import SOCKETS_PREFIX
from batchcli.run.shell import LoopRunner

if TYPE_CHECKING:
    from batchcli.run.handle import RunHandle

log = logging.getLogger("batchcli")


class Kernel:
    """An ipykernel on the calling (main) thread, its connection file at ``connection_file``."""

    def __init__(self, run: RunHandle, namespace: dict[str, Any], connection_file: Path) -> None:
        from ipykernel.kernelapp import IPKernelApp
        from tornado import ioloop

        self._saved = _Saved()
        # A fresh event loop per kernel: a stop queued for the last one (the console's shutdown request and
        # ours) would end the next session at once.
        self._asyncio_loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._asyncio_loop)
        self._sockets = Path(tempfile.mkdtemp(prefix=SOCKETS_PREFIX))  # 0700; IPC paths must be short
        self.connection_file = connection_file
        with contextlib.suppress(FileNotFoundError):
            connection_file.unlink()  # left by a run that died attached
        try:
            self.app = IPKernelApp.instance(
                connection_file=str(connection_file),
                transport="ipc",
                ip=str(self._sockets / "kernel"),
                user_ns=namespace,
                quiet=True,  # the run's own stdout and stderr stay the run's
                capture_fd_output=False,
                log_level=logging.CRITICAL,
            )
            self.app.initialize([])
        except BaseException:
            self.close()
            raise
        finally:
            self._saved.restore_handlers()  # our SIGINT (a stop, headless) and excepthook, not the kernel's
        shell: Any = self.app.shell
        shell.loop_runner = LoopRunner(run)  # a cell that awaits runs on the run's loop, as in the pause shell
        shell.autoawait = True
        # A client's interrupt request would SIGINT the run's process group: that is a stop, for a headless run.
        self.app.kernel._send_interrupt_children = _ignore_interrupt
        self.io_loop = ioloop.IOLoop.current()
        # ipykernel's own hooks make SIGINT raise KeyboardInterrupt while a request (a cell) runs; ours replace them
        # with one handler for the whole session, which interrupts a cell, drops between cells the SIGINTs
        # interrupt() sent, and hands any other to the run's handler.
        self._handling = False
        self._sent = 0
        self._run_sigint = signal.getsignal(signal.SIGINT)
        self.app.kernel.pre_handler_hook = self._pre_handler
        self.app.kernel.post_handler_hook = self._post_handler
        signal.signal(signal.SIGINT, self._on_sigint)

    def serve(self) -> None:
        """Answer the console until the loop is stopped (``KernelSession.leave``) or the kernel shuts down."""
        self.app.start()

    def interrupt(self) -> None:
        """Interrupt the cell running now, if any (any thread), as a console's Ctrl-C would: a stop must not wait
        for a cell that sleeps or loops, since the session (and so the run) ends only once it returns."""
        if self._handling:
            self._sent += 1
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def _pre_handler(self) -> None:
        self._handling = True

    def _post_handler(self) -> None:
        self._handling = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        ours = self._sent > 0
        if ours:
            self._sent -= 1
        if self._handling:  # a cell runs: interrupt it, as a kernel does
            raise KeyboardInterrupt
        if not ours and callable(self._run_sigint):  # between cells: the run's own handler (a stop, headless)
            self._run_sigint(signum, frame)

    def close(self) -> None:
        """Shut the kernel down and leave the process as it was, so a later attach starts a fresh one."""
        app = self.app if hasattr(self, "app") else None
        try:
            if app is not None:
                from ipykernel.kernelapp import IPKernelApp

                kernel, shell = getattr(app, "kernel", None), getattr(app, "shell", None)
                loops = [getattr(self, "io_loop", None)] + [
                    getattr(getattr(app, name, None), "io_loop", None)
                    for name in ("iopub_thread", "control_thread", "shell_channel_thread")
                ]
                for io_loop in loops:  # their threads end with tasks pending: nothing to report about those
                    _quiet(getattr(io_loop, "asyncio_loop", None))
                _stop_channel_threads(app)
                with contextlib.suppress(Exception):
                    app.close()
                for io_loop in loops:  # else "Task was destroyed but it is pending!" on stderr at exit
                    _drain(getattr(io_loop, "asyncio_loop", None))
                if app.context is not None:
                    with contextlib.suppress(Exception):
                        app.context.destroy(linger=0)
                app.cleanup_connection_file()
                for hook in (app.close, app.cleanup_connection_file):
                    atexit.unregister(hook)
                iopub = getattr(app, "iopub_thread", None)
                if iopub is not None:
                    atexit.unregister(iopub.stop)
                for instance in (shell, kernel):
                    if instance is not None:
                        type(instance).clear_instance()
                IPKernelApp.clear_instance()
        finally:
            self._saved.restore()
            _drain(self._asyncio_loop)
            io_loop = getattr(self, "io_loop", None)
            with contextlib.suppress(Exception):
                if io_loop is not None:
                    io_loop.close()  # and its asyncio loop
            self._asyncio_loop.close()
            asyncio.set_event_loop(None)
            with contextlib.suppress(FileNotFoundError):
                self.connection_file.unlink()
            shutil.rmtree(self._sockets, ignore_errors=True)


class _Saved:
    """What starting a kernel changes for the whole process: the std streams, the hooks, SIGINT, and the
    module functions it patches (``pdb``'s debugger and ``faulthandler``'s defaults)."""

    def __init__(self) -> None:
        import faulthandler
        import pdb

        from IPython.core import debugger

        self.stdout, self.stderr = sys.stdout, sys.stderr
        self.displayhook, self.excepthook = sys.displayhook, sys.excepthook
        self.sigint = signal.getsignal(signal.SIGINT)
        self.patched = [
            (module, name, getattr(module, name))
            for module, names in ((pdb, ("Pdb", "set_trace")), (debugger, ("Pdb",)), (faulthandler, ("enable", "register")))
            for name in names
            if hasattr(module, name)
        ]

    def restore_handlers(self) -> None:
        sys.excepthook = self.excepthook
        if self.sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self.sigint)

    def restore(self) -> None:
        sys.stdout, sys.stderr = self.stdout, self.stderr
        sys.displayhook = self.displayhook
        for module, name, value in self.patched:  # a breakpoint() after the session is the plain pdb again
            setattr(module, name, value)
        self.restore_handlers()


def _stop_channel_threads(app: Any) -> None:
    """End the control and shell channel threads before ``app.close()`` stops the IOPub thread.

    The console's shutdown request is answered on the control thread, which then publishes the kernel's
    status through IOPub: with IOPub stopped first (``app.close()``'s order), that send blocks for good, and
    ``app.close()`` then joins the control thread for good, so the run never resumed. Each thread gets
    ``CHANNEL_JOIN_S``; one still alive after it is left behind (it is a daemon) instead of joined forever.
    """
    for name in ("control_thread", "shell_channel_thread"):
        thread = getattr(app, name, None)
        if thread is None:
            continue
        with contextlib.suppress(Exception):
            if thread.is_alive():
                thread.stop()
                thread.join(timeout=CHANNEL_JOIN_S)
            if thread.is_alive():
                log.warning("attach: the kernel's %s did not end in %g s; leaving it behind.", thread.name, CHANNEL_JOIN_S)
        setattr(app, name, None)  # app.close() would join it again, without a timeout


CHANNEL_JOIN_S = 5.0
"""How long closing a kernel waits for each of its channel threads."""


def _drain(loop: Any) -> None:
    """Cancel the tasks the kernel left on a stopped asyncio loop, and let them end."""
    if loop is None or loop.is_running() or loop.is_closed():
        return
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _ignore_interrupt() -> None:
    log.warning("attach: a client asked to interrupt the kernel; ignored (it would stop the run).")


def _quiet(loop: Any) -> None:
    """Drop "Task was destroyed but it is pending!" for ``loop``, whose thread the kernel's shutdown ends."""
    if loop is None:
        return

    def handle(loop: Any, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith("Task was destroyed but it is pending"):
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
