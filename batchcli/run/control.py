"""``batchcli ctl``: a live run's control channel, a Unix socket in its run directory that only its owner may use.

The run serves one JSON request per connection, one line each way, on a small thread of its own
(``batchcli-control``): ``{"command": "set", "field": "concurrency", "value": "4"}`` ->
``{"ok": true, "message": "..."}``. Every command goes through the run's ``RunHandle`` and the pause
shell's ``RunController``, so a ``ctl`` does exactly what the same step in the shell does, with the
same checks. The socket is ``0600`` in a ``0700`` directory, and each peer's uid is checked
(``SO_PEERCRED``); it exists only while the run does. A socket left by a ``kill -9`` is stale: the next
session of the run holds the run directory's lock, so it may remove it and bind a fresh one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from batchcli.errors import UsageError
from batchcli.executors.limiter import MAX_CONCURRENCY, MIN_RATE_LIMIT, checked_concurrency, checked_rate_limit
from batchcli.executors.signals import stop_signals_blocked
from batchcli.load.readers import ungrouped
from batchcli.run.controller import paused_in_flight, retried_text
from batchcli.run.hardstop import GRACE_S

if TYPE_CHECKING:
    from batchcli.run.attach import Attachment
    from batchcli.run.driver import Run

log = logging.getLogger("batchcli")

ACCEPT_RETRY_S = 0.2
"""How long the control channel waits before it tries again to take a connection it could not take."""
ANSWERS_JOIN_S = 2.0
"""How long closing the channel waits for the replies still being sent (``ControlChannel.close``)."""

SOCKET_NAME = "control.sock"
COMMANDS = ("pause", "resume", "stop", "set", "stats", "retry-failed")
SETTINGS = ("concurrency", "rate_limit")
MAX_REQUEST = 4096
"""A request is a few dozen bytes; anything longer is not a ctl client."""


@dataclass(frozen=True)
class Request:
    """One ``ctl`` command, checked: what the client sends and the run carries out."""

    command: str
    """One of ``COMMANDS``."""
    field: str = ""
    """For ``set``: ``concurrency`` or ``rate_limit``."""
    value: str = ""
    """For ``set``: the value as typed (``4``, ``2.5``, ``none``)."""

    @classmethod
    def parse(cls, words: list[str]) -> Request:
        """``["set", "concurrency=4"]`` -> a Request; a UsageError naming the bad word and the fix."""
        if not words:
            raise UsageError(f"Give ctl a command: one of {', '.join(COMMANDS)}.")
        command, rest = words[0], words[1:]
        if command not in COMMANDS:
            raise UsageError(f"Unknown ctl command {command!r}. Use one of: {', '.join(COMMANDS)}.")
        if command != "set":
            if rest:
                raise UsageError(f"ctl {command} takes nothing after it, got {' '.join(rest)!r}.")
            return cls(command)
        if len(rest) != 1 or "=" not in rest[0]:
            raise UsageError(
                f"ctl set takes one FIELD=VALUE, got {' '.join(rest)!r}: e.g. ctl RUN set concurrency=4 "
                "or ctl RUN set rate_limit=none."
            )
        field, _, value = rest[0].partition("=")
        request = cls("set", field.strip(), value.strip())
        request.setting()  # checked here, before anything is sent
        return request

    def setting(self) -> int | float | None:
        """The value of a ``set``, cast for its field; a UsageError when the field or the value is wrong."""
        if self.field not in SETTINGS:
            raise UsageError(
                f"ctl set cannot change {self.field!r}: only {' and '.join(SETTINGS)} change while a run goes "
                "(e.g. set concurrency=4, set rate_limit=20 or rate_limit=none)."
            )
        try:
            if not ungrouped(self.value):
                raise ValueError(self.value)
            if self.field == "concurrency":
                value: int | float | None = int(self.value)
            else:
                value = None if self.value.lower() == "none" else float(self.value)
        except ValueError:
            example = "a whole number, e.g. concurrency=4" if self.field == "concurrency" else "items per second, e.g. rate_limit=20, or none"
            raise UsageError(f"ctl set {self.field}={self.value!r} is not {example}.") from None
        # The pause shell's bounds, here where ctl can still say no (the run only printed its refusal on its
        # own console, often /dev/null, while ctl said "Concurrency is now 0").
        try:
            return checked_concurrency(value) if self.field == "concurrency" else checked_rate_limit(value)
        except ValueError:
            bounds = (
                f"1 to {MAX_CONCURRENCY:,} items in flight, e.g. concurrency=8"
                if self.field == "concurrency"
                else f"a finite number of items per second, at least {MIN_RATE_LIMIT:.6g} (one item a day), e.g. "
                "rate_limit=20, or none for no limit"
            )
            raise UsageError(f"ctl set {self.field}={self.value!r} is out of range: give {bounds}.") from None

    def encode(self) -> bytes:
        """The request as its line on the socket."""
        return json.dumps(dataclasses.asdict(self)).encode() + b"\n"


class ControlChannel:
    """The run's end of ``ctl``: a listening socket and the thread that answers it."""

    def __init__(self, run: Run, listener: socket.socket, path: Path) -> None:
        from batchcli.run.controller import RunController

        self._run = run
        self._controller = RunController(run)
        self._listener = listener
        self.path = path
        self._closed = threading.Event()
        self._attachment: Attachment | None = None
        self._answering: set[threading.Thread] = set()
        """The client threads answering now: the run waits for their replies as it closes (``close``)."""
        self._thread = threading.Thread(target=self._serve, name="batchcli-control", daemon=True)
        with stop_signals_blocked():  # and so do the threads it starts for each client
            self._thread.start()

    @classmethod
    def open(cls, run: Run) -> ControlChannel | None:
        """Listen on ``RUN_DIR/control.sock`` (the caller holds the run directory's lock); None where it cannot be."""
        if not hasattr(socket, "AF_UNIX") or not hasattr(socket, "SO_PEERCRED"):
            return None  # not Linux: the run goes on without ctl
        from batchcli.run.attach import remove_stale_kernel

        path = run.run_dir / SOCKET_NAME
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a process that died: we hold the lock, so it is nobody's now
        remove_stale_kernel(run.run_dir)  # and a kernel's, had it died attached
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _short_path(path) as address:
                listener.bind(address)
            os.chmod(path, 0o600)  # the run directory is 0700 already; the socket is owner-only as well
            listener.listen(8)
        except OSError as error:
            listener.close()
            log.warning("No control socket for `batchcli ctl` (%s); the run goes on without it.", error)
            return None
        return cls(run, listener, path)

    def close(self) -> None:
        """Stop answering and remove the socket: it must not outlive the run."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        self._listener.close()
        self._thread.join(timeout=2)
        # A reply still on its way: a second `ctl stop` stops at once, and the run could end and its process exit
        # between carrying the stop out and sending the reply, which ctl then read as "the run refused the command".
        deadline = time.monotonic() + ANSWERS_JOIN_S
        for thread in list(self._answering):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _serve(self) -> None:
        failing = False
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError as error:
                if self._closed.is_set():
                    return
                # Out of file descriptors (EMFILE: the job leaks them), or a client gone before it was taken: the
                # channel must outlive it, or ctl and attach stay dead for the rest of the run. The connection
                # waits in the backlog and is taken once a descriptor is free.
                if not failing:
                    log.warning("ctl: cannot take a connection (%s); trying again.", error)
                failing = True
                self._closed.wait(ACCEPT_RETRY_S)
                continue
            failing = False
            # A thread per connection: retry-failed may take a while, and stats must still answer.
            thread = threading.Thread(target=self._answer, args=(conn,), name="batchcli-control-client", daemon=True)
            self._answering.add(thread)
            thread.start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            self._answer_on(conn)
        finally:
            self._answering.discard(threading.current_thread())

    def _answer_on(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                uid = peer_uid(conn)
                line = _read_line(conn)  # read first either way: a refusal the client could not read would be lost
                if uid != os.getuid():
                    reply: dict[str, Any] = {
                        "ok": False,
                        "refused": True,
                        "error": f"Refused: this run belongs to user id {os.getuid()}, and user id {uid} may not "
                        "control it. Only the user who started a run can use batchcli ctl on it.",
                    }
                    log.warning("ctl: refused a connection from user id %s.", uid)
                elif _is_attach(line):
                    self._answering.discard(threading.current_thread())  # a session, ended by the run's end itself
                    self._attach(conn)  # holds the connection for the whole session
                    return
                else:
                    reply = self._carry_out(line)
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except (OSError, ValueError) as error:
                log.debug("ctl: a connection failed: %s", error)

    def _attach(self, conn: socket.socket) -> None:
        from batchcli.run.attach import Attachment  # `batchcli attach`: run/attach.py

        if self._attachment is None:
            self._attachment = Attachment(self._run)
        self._attachment.serve(conn, self._closed)

    def _carry_out(self, line: bytes) -> dict[str, Any]:
        try:
            raw = json.loads(line)
            request = Request(str(raw["command"]), str(raw.get("field", "")), str(raw.get("value", "")))
            if request.command not in COMMANDS:
                raise UsageError(f"Unknown ctl command {request.command!r}. Use one of: {', '.join(COMMANDS)}.")
            log.info("ctl: %s", " ".join(filter(None, (request.command, request.field and f"{request.field}={request.value}"))))
            return {"ok": True, **self._do(request)}
        except UsageError as error:
            return {"ok": False, "error": error.format_message()}
        except ValueError as error:  # the controller's own checks of a value
            return {"ok": False, "error": str(error)}
        except RuntimeError as error:  # not now: the executor is still starting, or the run is ending
            return {"ok": False, "error": str(error), "not_now": True}
        except (KeyError, TypeError) as error:
            return {"ok": False, "error": f"Not a ctl request ({error!r})."}
        except Exception as error:  # every request is answered: a client told nothing reads it as refused
            log.warning("ctl: the command failed", exc_info=True)
            return {"ok": False, "error": f"The command failed ({type(error).__name__}: {error}); see the run's batchcli.log.", "not_now": True}

    def _stop(self) -> str:
        """Stop gracefully; a second time, at once, as a second Ctrl-C or signal does (``RunSignals.handle``)."""
        run = self._run
        again, shell, finishing = run.stop_requested.is_set(), run.shell_is_open, run.tally.all_settled
        resume = f"Continue it with: batchcli resume {run.run_dir}"
        if again:
            # A second ctl stop gave the first one's answer and went on waiting for the items in flight (20 s items:
            # 20 s), so without a shell only kill -INT twice stopped a run at once.
            in_flight = run.tally.in_flight
            run.cancel()
            log.warning("ctl stop again: stopping at once; in-flight items stay unprocessed.")
            closed = "The shell open on this run is closed now. " if shell else ""
            if finishing:
                return (
                    f"Stopping at once, as a second Ctrl-C does: the job's finish() is abandoned if it has not returned "
                    f"within {GRACE_S:g}s, and the run then ends stopped (exit 130), for resume to run setup() and "
                    f"finish() again. {closed}{resume}"
                )
            return (
                f"Stopping at once, as a second Ctrl-C does: {in_flight} item(s) in flight are abandoned; they stay "
                f"unprocessed, and resume does them again. The run ends resumably (exit 130). {closed}{resume}"
            )
        run.stop()
        timeout = run.job.config.stop_timeout_s
        if finishing:
            # It promised exit 130 and a resume, and the run ended finished, exit 0.
            return (
                f"{_finishing(run)} A stop cannot make it resumable now: only a finish() still running "
                f"{timeout:g}s from now (stop_timeout_s) is abandoned, and the run then ends stopped (exit 130). "
                "A second ctl stop abandons it at once."
            )
        left = f"A shell is open on this run: it closes in {timeout:g}s (stop_timeout_s), or at once at a second stop. " if shell else ""
        if run.tally.exhausted and not run.tally.retrying:
            # The source is done: once the items in flight settle, nothing is left for a resume. It promised exit 130
            # and a resume, and the run ended finished, exit 0.
            return (
                f"Stopping: nothing is left to start (the source is done), and the {run.tally.in_flight} item(s) in "
                "flight finish. Then the run ends as finished (exit 0, or 1 if items failed), unless one of them fails "
                f"and would have been retried, or they outlast stop_timeout_s ({timeout:g}s): then it ends resumably "
                f"(exit 130). {left}A second ctl stop stops at once. {resume}"
            )
        return (
            f"Stopping: nothing new starts, {run.tally.in_flight} in flight finish, then the run ends resumably (exit "
            f"130). {left}A second ctl stop stops at once. {resume}"
        )

    def _do(self, request: Request) -> dict[str, Any]:
        run, controller = self._run, self._controller
        command = request.command
        if command in ("pause", "set") and run.tally.all_settled:
            # Every item has settled and finish() runs: "Paused" and "Concurrency is now 3" claimed a change that
            # could no longer reach any item.
            raise RuntimeError(f"{_finishing(run)} There is nothing left to {'pause' if command == 'pause' else 'limit'}.")
        if command == "pause":
            if run.stop_requested.is_set():  # it answered "Paused" while the stop went on as before
                raise RuntimeError(
                    f"The run is stopping, as asked: no new item starts already, and its {run.tally.in_flight} in "
                    f"flight finish. There is nothing to pause. Once it has ended, continue it with: batchcli resume "
                    f"{run.run_dir}"
                )
            run.pause()
            return {"message": f"Paused: no new item starts; {paused_in_flight(run)}. Resume with ctl resume."}
        if command == "resume":
            if run.stop_requested.is_set():  # it answered "Resumed." while the run went on stopping
                raise RuntimeError(
                    "The run is stopping, as asked: it cannot resume now. Once it has ended, continue it with: "
                    f"batchcli resume {run.run_dir}"
                )
            if run.shell_is_open:  # it resumes the run when it is left; items run meanwhile on a stopped clock
                raise RuntimeError(
                    "A shell is open on this run (the pause shell, or batchcli attach): the run stays paused until it "
                    "is left, and resumes then. Leave it (Ctrl-D, or exit()) to resume now."
                )
            if not run.paused.is_set() and (run.breaker is None or run.breaker.state == "closed"):
                return {"message": _not_paused(run), "paused": False}  # it said "Resumed." and changed nothing
            run.resume()
            return {"message": "Resumed."}
        if command == "stop":
            return {"message": self._stop()}
        if command in ("set", "retry-failed") and run.stop_requested.is_set():
            # "Concurrency is now 2." for a run no item would start in again; and a retry-failed started retries whose
            # successes the stop then dropped, so `batchcli retry` did those items twice.
            after = f"retry its failures with: batchcli retry {run.run_dir}" if command == "retry-failed" else (
                f"continue it with: batchcli resume {run.run_dir} (-p sets its limits)"
            )
            raise RuntimeError(f"The run is stopping, as asked: nothing new starts in it. Once it has ended, {after}")
        if command == "set":
            value = request.setting()
            if run.executor is None:  # the controller's own words name the pause shell's self.set_...()
                raise RuntimeError(
                    f"The run is still starting (its setup() runs), so its limits cannot change yet: try "
                    f"batchcli ctl {run.run_dir} set {request.field}={request.value} again in a moment."
                )
            if request.field == "concurrency":
                assert isinstance(value, int)
                return {"message": controller.changed_concurrency(value)}
            return {"message": controller.changed_rate_limit(value)}
        if command == "stats":
            stats = controller.stats()
            fields = {k: v for k, v in dataclasses.asdict(stats).items() if k != "line"}
            return {"message": stats.line, "stats": fields}
        if command == "retry-failed":
            try:
                tried, again = controller.retry_failed_counted()
            except concurrent.futures.CancelledError:  # the loop ended under it: ctl stop, a signal, or the run's end
                why = "is stopping" if run.stop_requested.is_set() else "has finished its items and is ending"
                raise RuntimeError(
                    f"The run {why}, which cut the retry short: the failed items it had not settled stay failed. "
                    f"Reprocess them after the run with: batchcli retry {run.run_dir}"
                ) from None
            return {
                "message": retried_text(tried, again),
                "retried": tried,
                "failed_again": len(again),
            }
        raise UsageError(f"Unknown ctl command {command!r}. Use one of: {', '.join(COMMANDS)}.")


def _finishing(run: Run) -> str:
    """What a run whose items have all settled does now, and how it ends (``Tally.all_settled``)."""
    failed = run.tally.failed + run.tally.earlier_failed
    ends = f"exit 1: {failed} item(s) failed" if failed else "exit 0"
    return f"Every item has settled: the run is finishing (its finish() runs) and ends as finished ({ends})."


def _not_paused(run: Run) -> str:
    """The answer to ``ctl resume`` on a run that is not paused: what holds it instead, if anything."""
    if run.tally.all_settled:
        return f"Not paused: there is nothing to resume. {_finishing(run)}"
    if run.recording.stalled:  # it said "the run is running" while no item could start
        return (
            f"Not paused: the run is held because its run directory cannot be written (a full disk?). It carries on by "
            f"itself once a write succeeds, and stops resumably if none does within {run.job.config.write_retry_s:g}s "
            "(write_retry_s)."
        )
    cooling = run.tally.cooldown_until - time.monotonic()
    if cooling > 0:
        ends = datetime.now() + timedelta(seconds=cooling)
        until = ends.strftime("%H:%M:%S" if cooling < 12 * 3600 else "%Y-%m-%d %H:%M:%S")  # a day's quota: the date
        return (
            f"Not paused, and nothing to resume: the run is cooling down after a throttle, {cooling:.0f}s left (until "
            f"{until}); items start again by themselves then. Stop it with ctl stop if it should not wait."
        )
    return "Not paused: the run is running, and there is nothing to resume."


def live_state(run: Run) -> dict[str, Any]:
    """What the journal's ``live`` row holds each flush for ``watch``: the run's state beyond its counts."""
    tally = run.tally
    limits = tally.limits
    ceiling = tally.ceiling
    executor = run.executor
    if limits is None and executor is not None:
        limits = ceiling = (executor.limits.concurrency, executor.limits.rate_limit)
    breaker = run.breaker
    return {
        "in_flight": tally.in_flight,
        "retrying": tally.retrying,
        "throttles": tally.throttles,
        "cooling_down_s": round(max(0.0, tally.cooldown_until - time.monotonic()), 1),
        "concurrency": None if limits is None else limits[0],
        "rate_limit": None if limits is None else limits[1],
        "configured_concurrency": run.job.config.concurrency if ceiling is None else ceiling[0],
        "configured_rate_limit": run.job.config.rate_limit if ceiling is None else ceiling[1],
        "limits_held": tally.limits_held,
        "paused": run.paused.is_set(),
        "paused_s": round(tally.paused(), 3),  # `show` leaves it out of the duration, as summary.json does
        "stopping": run.stop_requested.is_set(),
        "breaker": None if breaker is None else breaker.state,
        "breaker_reason": "" if breaker is None or breaker.state == "closed" else breaker.reason,
        # This session's, for the run's totals: a session killed before its summary keeps them here.
        "breaker_counts": None if breaker is None else breaker.counts_now(),
    }


def _is_attach(line: bytes) -> bool:
    """Whether a request is ``batchcli attach``'s, which keeps its connection (not a ``ctl`` command)."""
    try:
        return bool(json.loads(line).get("command") == "attach")
    except (ValueError, AttributeError):
        return False


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket, from the kernel (``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def connect(path: Path, timeout: float) -> socket.socket:
    """A connection to the run listening on ``path`` (``attach`` keeps it open for its whole session)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        with _short_path(path) as address:
            conn.connect(address)
    except BaseException:
        conn.close()
        raise
    return conn


def read_reply(conn: socket.socket) -> dict[str, Any]:
    """The run's next reply line on ``conn`` ({} when it closed without one); ValueError if it is not one."""
    reply = json.loads(_read_line(conn) or b"{}")
    if not isinstance(reply, dict):
        raise ValueError(f"not a ctl reply: {reply!r}")
    return reply


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(MAX_REQUEST)
        if not chunk:
            break
        data += chunk
        if len(data) > 1 << 20:
            raise ValueError("a line longer than 1 MiB")
    return data


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    """``path`` as a socket address: Unix socket paths are limited to 107 bytes, run directories are not.

    A longer one is reached through the directory's descriptor (``/proc/self/fd/N/control.sock``, Linux).
    """
    if len(os.fsencode(str(path))) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
