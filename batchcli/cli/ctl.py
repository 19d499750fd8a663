"""``batchcli ctl RUN ...``: send one command to a live run through its control socket and print the reply."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console

from batchcli.errors import RunNotLive, RunNotReady, UsageError
from batchcli.journal.rundir import journal_path, read_run
from batchcli.run.control import SOCKET_NAME, Request, send

SOCKET_WAIT_S = 10.0
"""A run that has just started (or is loading its project on resume) opens its socket within this."""


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
    path = live_socket(run_dir)
    with answering(run_dir):
        reply = send(path, request)
    accepted(reply, "the run refused the command")
    console.print(str(reply.get("message", "")), markup=False, highlight=False, soft_wrap=True)
    for name, value in (reply.get("stats") or {}).items():
        console.print(f"  {name}: {value}", markup=False, highlight=False)


@contextmanager
def answering(run_dir: Path) -> Iterator[None]:
    """Talking to the run in ``run_dir``: no socket, a refused connection or no answer is RunNotLive, with why."""
    try:
        yield
    except (FileNotFoundError, ConnectionRefusedError):
        raise RunNotLive(no_socket(run_dir)) from None
    except (OSError, ValueError) as error:
        raise RunNotLive(f"Run {str(run_dir)!r} did not answer ({error}); it may be ending.") from None


def accepted(reply: dict[str, Any], refused: str) -> None:
    """A reply that refused (with the run's reason, else ``refused``) raises: RunNotReady if only not now."""
    if not reply.get("ok"):
        refusal = str(reply.get("error", refused))
        raise RunNotReady(refusal) if reply.get("not_now") else UsageError(refusal)


def live_socket(run_dir: Path) -> Path:
    """The control socket of the live run in ``run_dir`` (waiting a moment for a run that starts); RunNotLive if none runs."""
    path = run_dir / SOCKET_NAME
    deadline = time.monotonic() + SOCKET_WAIT_S
    while True:
        info = read_run(run_dir)
        if info.status != "running":
            raise RunNotLive(_not_live(run_dir, info.status))
        if path.exists() or time.monotonic() > deadline:
            return path
        time.sleep(0.1)


def no_socket(run_dir: Path) -> str:
    """Why nothing answers on the socket of ``run_dir``: the run has ended meanwhile, or it has no socket."""
    info = read_run(run_dir)
    if info.status != "running":
        return _not_live(run_dir, info.status)
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
