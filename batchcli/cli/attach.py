"""``batchcli attach RUN``: the pause shell of a headless run, in this terminal (jupyter-console on a kernel in the run).

The control connection that asks for the kernel stays open for the whole session: the run shuts the kernel
down and resumes when it closes, so a client that dies (``kill -9``, an ssh drop) never leaves the run paused.
jupyter_console is imported only here.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

from rich.console import Console

from batchcli.cli.ctl import accepted, answering, live_socket, owned_run
from batchcli.errors import UsageError
from batchcli.run.control import connect, read_reply

START_TIMEOUT_S = 90.0
"""The run pauses and starts a kernel (about a second); past this, something is wrong."""
LEAVE_TIMEOUT_S = 30.0
"""How long to wait, after leaving, for the run to say it resumed (it resumes anyway)."""
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
    path = live_socket(run_dir)
    with answering(run_dir):
        conn = connect(path, START_TIMEOUT_S)
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
        app.initialize(["--existing", str(reply["connection_file"])])
        try:
            app.start()
        finally:
            # Done: the run shuts the kernel down and resumes; its last word says which.
            with contextlib.suppress(OSError, ValueError):
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(LEAVE_TIMEOUT_S)
                message = str(read_reply(conn).get("message", ""))
                if message:
                    console.print(message, markup=False, highlight=False, soft_wrap=True)
