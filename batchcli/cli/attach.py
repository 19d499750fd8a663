"""``batchcli attach RUN``: the pause shell of a headless run, in this terminal (jupyter-console on a kernel in the run).

The control connection that asks for the kernel stays open for the whole session: the run shuts the kernel
down and resumes when it closes, so a client that dies (``kill -9``, an ssh drop) never leaves the run paused.
jupyter_console is imported only here.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console

from batchcli.cli.ctl import accepted, answering, live_connection, owned_run
from batchcli.errors import RunNotLive, UsageError
from batchcli.journal.rundir import read_run
from batchcli.run.control import read_reply

START_TIMEOUT_S = 90.0
"""The run pauses and starts a kernel (about a second); past this, something is wrong."""
LEAVE_TIMEOUT_S = 30.0
"""How long to wait, after leaving, for the run to say it resumed (it resumes anyway)."""
EXIT_SETTLE_S = 5.0
"""How long a run whose connection closed without a word may still read as running: its process is exiting, and
the kernel closes its files one by one, the control connection often a moment before the run's lock."""
MISSING = (
    "batchcli attach needs jupyter-console and ipykernel, which are not installed. Install them with: "
    "pip install 'batchcli[attach]'"
)


def attach(run_dir: Path, console: Console) -> None:
    """Pause the live run in ``run_dir`` and open an IPython console on it; leaving resumes the run."""
    try:
        from jupyter_console.app import ZMQTerminalIPythonApp
        from traitlets.config import Config
    except ImportError:
        raise UsageError(MISSING) from None
    owned_run(run_dir, "attach to")
    conn = live_connection(run_dir, START_TIMEOUT_S)
    with conn:
        with answering(run_dir):
            conn.sendall(json.dumps({"command": "attach"}).encode() + b"\n")
            reply = read_reply(conn)
        accepted(reply, "the run refused to attach")
        console.print(str(reply.get("message", "")), markup=False, highlight=False, soft_wrap=True)
        config = Config()
        config.ZMQTerminalIPythonApp.confirm_exit = False  # leaving only resumes the run
        config.ZMQTerminalInteractiveShell.banner = "IPython on the run (Jupyter console {version})\n"
        app = ZMQTerminalIPythonApp.instance(config=config)
        try:
            app.initialize(["--existing", str(reply["connection_file"])])
        except RuntimeError as error:  # "Kernel didn't respond to kernel_info_request": the run ended meanwhile
            raise RunNotLive(
                f"Run {str(run_dir)!r} accepted the attach but its console did not answer ({error}); the run may have "
                f"ended meanwhile. See it with: batchcli show {run_dir}"
            ) from None
        last_word: list[str] = []
        prompts = _prompts(app)
        left = threading.Event()
        conn.settimeout(None)
        watcher = threading.Thread(
            target=_await_last_word, args=(conn, app, prompts, last_word, left), name="batchcli-attach", daemon=True
        )
        watcher.start()
        try:
            app.start()
        finally:
            # Done: the run shuts the kernel down and resumes; its last word says which.
            left.set()
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            watcher.join(LEAVE_TIMEOUT_S)
        if last_word and last_word[0]:
            console.print(last_word[0], markup=False, highlight=False, soft_wrap=True)
        else:
            _without_a_word(run_dir, console, closed=not watcher.is_alive())


def _without_a_word(run_dir: Path, console: Console, closed: bool) -> None:
    """The connection ended without the run's last word (``closed``: the run closed it; else the word is late):
    say what became of the run. A run killed under the console (``kill -9``, out of memory) left it with Jupyter's
    "keeping kernel alive" alone, and exit 0."""
    status = read_run(run_dir).status
    settle = time.monotonic() + (EXIT_SETTLE_S if closed else 0.0)
    while status == "running" and time.monotonic() < settle:  # its process is exiting: its lock goes last
        time.sleep(0.05)
        status = read_run(run_dir).status
    if status == "running":  # its word is late (LEAVE_TIMEOUT_S): it resumes all the same
        console.print(f"The run did not say whether it resumed; follow it with: batchcli watch {run_dir}", markup=False)
        return
    if status == "crashed":
        raise RunNotLive(
            f"Run {str(run_dir)!r} died while you were attached: its process is gone (killed, or out of memory). Its items "
            f"in flight, and those it settled in its last half second, are done again by resume. See it with: batchcli "
            f"show {run_dir}; continue it with: batchcli resume {run_dir}"
        )
    carry_on = "" if status == "finished" else f"; continue it with: batchcli resume {run_dir}"
    console.print(f"The run has ended ({status}). See it with: batchcli show {run_dir}{carry_on}", markup=False, soft_wrap=True)


def _prompts(app: Any) -> list[Any]:
    """The prompt_toolkit applications the console's prompt runs now, for ``_await_last_word`` to end.

    The prompt session's own ``app``; and on a dumb terminal (``TERM=dumb``: Emacs, some CI terminals) prompt_toolkit
    runs each prompt in an Application of its own, made by the session's private ``_dumb_prompt``, which nothing
    else reaches: ending the session's ``app`` found nothing running, and the console waited at its prompt for good
    after the run had ended. That method is wrapped to hold its Application while it runs; a prompt_toolkit without
    it leaves the list as it is (the console then leaves at the next Enter, as before).
    """
    session: Any = getattr(getattr(app, "shell", None), "pt_cli", None)
    running: list[Any] = [getattr(session, "app", None)]
    dumb_prompt = getattr(session, "_dumb_prompt", None)
    if dumb_prompt is None:
        return running

    @contextlib.contextmanager
    def held(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with dumb_prompt(*args, **kwargs) as application:
            running.append(application)
            try:
                yield application
            finally:
                running.remove(application)

    session._dumb_prompt = held
    return running


def _await_last_word(
    conn: socket.socket, app: Any, prompts: list[Any], last_word: list[str], left: threading.Event
) -> None:
    """Wait for the run's last word on ``conn``: after the client leaves (``left``), or when the run ends the session
    itself (a stop signal) or dies: then leave the console too, which otherwise waited at its prompt on a kernel that
    was gone."""
    with contextlib.suppress(OSError, ValueError):
        last_word.append(str(read_reply(conn).get("message", "")))
    shell = getattr(app, "shell", None)
    if shell is None or not getattr(shell, "keep_running", False):
        return  # the user left first
    from batchcli.run.shell import end_prompt

    shell.ask_exit()
    # Until the console has left: a dumb terminal's prompt writes itself before its Application runs, and a prompt
    # ended in that moment is not ended (the console then waited at it for good).
    while True:
        for prompt in list(prompts):
            end_prompt(prompt)
        if left.wait(0.2):
            return
