"""``batchcli ctl RUN ...``: send one command to a live run through its control socket and print the reply."""

from __future__ import annotations

import os
import select
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console

from batchcli.errors import RunNotLive, RunNotReady, UsageError
from batchcli.journal.rundir import journal_path, read_run
from batchcli.run.control import SOCKET_NAME, Request, connect, read_reply

SOCKET_WAIT_S = 10.0
"""A run that has just started (or is loading its project on resume) opens its socket within this."""
REPLY_WAIT_S = 600.0
"""How long a command waits for the run's reply, which comes at once; ``retry-failed`` waits while the run lives."""
LOOK_S = 5.0
"""How often a command waiting for its reply looks whether the run still lives."""
RETRIES_GO_ON = "the retries it asked for go on in the run (follow them with: batchcli watch {run_dir})"


def owned_run(run_dir: Path, what: str) -> None:
    """``run_dir`` is a run directory of this user's; a one-paragraph error (exit 2) otherwise."""
    journal_path(run_dir)
    owner = run_dir.stat().st_uid
    if hasattr(os, "getuid") and owner != os.getuid():
        raise UsageError(
            f"Run {str(run_dir)!r} belongs to user id {owner}, not to you (user id {os.getuid()}): only the user "
            f"who started a run can {what} it. Run the command as that user."
        )


def control(run_dir: Path, words: list[str], console: Console) -> None:
    """Carry out ``words`` (``pause``, ``set concurrency=4`` ...) on the live run in ``run_dir``."""
    request = Request.parse(words)  # a bad command is bad input, whatever the run's state
    owned_run(run_dir, "control")
    conn = live_connection(run_dir, REPLY_WAIT_S)
    with conn, answering(run_dir):
        conn.sendall(request.encode())
        _await_reply(conn, run_dir, request.command)
        reply = read_reply(conn)
    accepted(reply, "the run refused the command")
    console.print(str(reply.get("message", "")), markup=False, highlight=False, soft_wrap=True)
    for name, value in (reply.get("stats") or {}).items():
        console.print(f"  {name}: {value}", markup=False, highlight=False)


def _await_reply(conn: socket.socket, run_dir: Path, command: str) -> None:
    """Until the reply to ``command`` is there to read, while the run lives.

    ``retry-failed`` answers once the items it retries settle, which against a slow or refusing API can take longer
    than any fixed wait: it waited REPLY_WAIT_S, then said the run "did not answer (timed out); it may be ending"
    while the run went on retrying. It now waits as long as the run lives, and says so on stderr; any other command
    answers at once, and waits REPLY_WAIT_S at most."""
    since = time.monotonic()
    told = False
    while not select.select([conn], [], [], LOOK_S)[0]:
        info = read_run(run_dir)
        if info.status != "running":
            raise RunNotLive(f"Run {str(run_dir)!r} ended before it answered `{command}`. " + _not_live(run_dir, info.status))
        if command != "retry-failed":
            if time.monotonic() - since >= REPLY_WAIT_S:
                raise RunNotLive(
                    f"Run {str(run_dir)!r} is running (process {info.pid}) but did not answer `{command}` in "
                    f"{REPLY_WAIT_S:.0f} s: its control thread may be blocked. See its log (batchcli.log in the run "
                    f"directory), or follow it with: batchcli watch {run_dir}"
                )
        elif not told:
            told = True
            Console(stderr=True).print(
                "Waiting for the retried items to settle (against a slow or refusing API this takes a while); Ctrl-C "
                f"leaves, and {RETRIES_GO_ON.format(run_dir=run_dir)}.",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip


@contextmanager
def answering(run_dir: Path) -> Iterator[None]:
    """Talking to the run in ``run_dir`` once connected (``live_connection``): no answer is RunNotLive, with why."""
    try:
        yield
    except (OSError, ValueError) as error:
        raise RunNotLive(f"Run {str(run_dir)!r} did not answer ({error}); it may be ending.") from None


def accepted(reply: dict[str, Any], refused: str) -> None:
    """A reply that refused (with the run's reason, else ``refused``) raises: RunNotReady if only not now."""
    if not reply.get("ok"):
        refusal = str(reply.get("error", refused))
        raise RunNotReady(refusal) if reply.get("not_now") else UsageError(refusal)


def live_connection(run_dir: Path, timeout: float) -> socket.socket:
    """A connection to the control socket of the live run in ``run_dir``; RunNotLive if none runs.

    A run that starts, or a resume that loads its project, opens its socket within ``SOCKET_WAIT_S``: until then
    the socket is missing, or is the file a killed session left, which refuses the connection (no request reached
    anyone, so trying again is safe)."""
    path = run_dir / SOCKET_NAME
    deadline = time.monotonic() + SOCKET_WAIT_S
    while True:
        info = read_run(run_dir)
        if info.status != "running":
            raise RunNotLive(_not_live(run_dir, info.status))
        try:
            return connect(path, timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise RunNotLive(no_socket(run_dir)) from None
        except OSError as error:
            raise RunNotLive(f"Run {str(run_dir)!r} did not answer ({error}); it may be ending.") from None
        time.sleep(0.1)


def no_socket(run_dir: Path) -> str:
    """Why nothing answers on the socket of ``run_dir``: the run has ended meanwhile, or it has no socket."""
    info = read_run(run_dir)
    if info.status != "running":
        return _not_live(run_dir, info.status)
    if info.starting:  # a project that takes longer than SOCKET_WAIT_S to import (torch, say)
        return (
            f"Run {str(run_dir)!r} is starting: process {info.pid} is still loading its project, and opens the control "
            "socket once it has. Try again in a moment (batchcli watch shows when it runs)."
        )
    return (
        f"Run {str(run_dir)!r} is running (pid {info.pid}) but has no control socket: it was started by a "
        "batchcli without `ctl`, or cannot make the socket (see its batchcli.log). Stop it with kill -INT "
        f"{info.pid}."
    )


def _not_live(run_dir: Path, status: str) -> str:
    what = {
        "finished": "has finished",
        "stopped": "was stopped",
        "crashed": "crashed (its process is gone)",
    }.get(status, f"is {status}")
    carry_on = "" if status == "finished" else f"; continue it with `batchcli resume {run_dir}`"
    return (
        f"Run {str(run_dir)!r} {what}: no process runs it, so there is nothing to control. See it with "
        f"`batchcli show {run_dir}`{carry_on}."
    )
