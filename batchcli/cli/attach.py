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
from typing import Any

from rich.console import Console

from batchcli.cli.ctl import live_socket, no_socket, owned_run
from batchcli.errors import RunNotLive, RunNotReady, UsageError
from batchcli.run.control import _read_line, _short_path

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
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(START_TIMEOUT_S)
        try:
            with _short_path(path) as address:
                conn.connect(address)
            conn.sendall(json.dumps({"command": "attach"}).encode() + b"\n")
            reply = _reply(conn)
        except (FileNotFoundError, ConnectionRefusedError):
            raise RunNotLive(no_socket(run_dir)) from None
        except (OSError, ValueError) as error:
            raise RunNotLive(f"Run {str(run_dir)!r} did not answer ({error}); it may be ending.") from None
        if not reply.get("ok"):
            refusal = str(reply.get("error", "the run refused to attach"))
            raise RunNotReady(refusal) if reply.get("not_now") else UsageError(refusal)
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
                message = str(_reply(conn).get("message", ""))
                if message:
                    console.print(message, markup=False, highlight=False, soft_wrap=True)


def _reply(conn: socket.socket) -> dict[str, Any]:
    reply = json.loads(_read_line(conn) or b"{}")
    if not isinstance(reply, dict):
        raise ValueError(f"not a reply: {reply!r}")
    return reply
