"""``notify_url``: a POST with a JSON summary when a run finishes, stops, crashes or trips its circuit breaker.

Sent from a background thread with the standard library (``urllib``), a few tries each: a notification
never blocks the run or changes how it ends. One that cannot be delivered is a log line, which never
holds the URL's path, query or credentials (webhook URLs carry tokens). At the end of the run the process
waits for the last one at most ``END_WAIT_S``. A redirect is not followed (urllib would turn the POST into
a GET without its body and call that delivered): it is reported, with where to point ``notify_url``.
Credentials in the URL (``https://user:token@host/...``) are sent as HTTP basic authentication.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import IO, Any, Callable, NoReturn
from urllib.parse import unquote, urlsplit, urlunsplit

from batchcli import __version__
from batchcli.load.secret import mask_texts
from batchcli.outcome import error_text

log = logging.getLogger("batchcli")

ATTEMPTS = 3
RETRY_DELAYS_S = (0.5, 1.0)
"""Waits between the tries of one notification."""
TIMEOUT_S = 5.0
"""How long one try waits for the endpoint."""
END_WAIT_S = 10.0
"""How long a finished run waits for its last notifications before the process exits."""


class Notifier:
    """Posts the run's events to one URL; ``send`` returns at once."""

    def __init__(
        self,
        url: str,
        run_dir: Path,
        job: str,
        *,
        secrets: tuple[str, ...] = (),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url, self._headers, self._secrets = _split_credentials(url)
        self._job_secrets = secrets
        """The job's secret values (``secret_texts``), masked in what a notification says (a crash's message)."""
        self._base = {"job": job, "run_id": run_dir.name, "run_dir": str(run_dir), "host": socket.gethostname()}
        self._sleep = sleep
        self._threads: list[tuple[threading.Thread, str]] = []

    @property
    def where(self) -> str:
        """The endpoint for messages, without its path, query or credentials (the URL may hold a token)."""
        try:
            parts = urlsplit(self._url)
            return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
        except ValueError:  # checked when the configuration was built; this is for a Notifier made by hand
            return "the notify_url"

    def send(self, event: str, **fields: Any) -> None:
        """Post ``event`` with ``fields`` in the background. ``id`` is the same in every try of one notification,
        so an endpoint that answered too late (and got it twice) can tell."""
        fields = {name: mask_texts(value, self._job_secrets) if isinstance(value, str) else value for name, value in fields.items()}
        body = {
            "event": event, "id": uuid.uuid4().hex, **self._base, "time": time.time(), **fields,
            "batchcli_version": __version__,
        }  # fmt: skip
        thread = threading.Thread(target=self._post, args=(event, body), name="batchcli-notify", daemon=True)
        self._threads.append((thread, event))
        thread.start()

    def ended(self, result: Any) -> None:
        """The run's last event: finished, stopped or crashed, with its counts."""
        fatal = result.fatal
        self.send(
            result.status,
            status=result.status,
            exit_code=result.exit_code,
            succeeded=result.succeeded,
            failed=result.failed,
            unprocessed=result.unprocessed,
            total=result.total,
            fatal=None if fatal is None else f"{type(fatal).__qualname__}: {error_text(fatal)}",
            reason=result.stop_reason,
        )

    def close(self, wait_s: float | None = None) -> None:
        """Wait for notifications still being sent, at most ``wait_s`` (``END_WAIT_S``) in all."""
        wait_s = END_WAIT_S if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        for thread, event in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():  # an endpoint that accepts and never answers: the exit ends the try unlogged
                log.warning(
                    "Could not send the %r notification to %s (no answer within %gs of the run's end); the run is "
                    "not affected.", event, self.where, wait_s,
                )  # fmt: skip

    def _post(self, event: str, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        error = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                self._sleep(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S)) - 1])
            try:
                request = urllib.request.Request(
                    self._url, data=data, method="POST", headers={"Content-Type": "application/json", **self._headers}
                )
                with _OPENER.open(request, timeout=TIMEOUT_S) as response:
                    response.read()
                log.info("Notification %r sent to %s.", event, self.where)
                return
            except _Redirected as redirected:
                error = f"it answered {redirected.code} with a redirect to {redirected.where}: point notify_url there"
                break
            except urllib.error.HTTPError as failed:
                error = self._scrubbed(failed)
                if 400 <= failed.code < 500 and failed.code != 429:
                    break  # the endpoint refuses this request: trying again will not help
            except Exception as failed:  # refused, unreachable, timed out, not HTTP, cut short: any of them, never the thread
                error = self._scrubbed(failed)
                if isinstance(failed, ValueError) and not isinstance(failed, OSError):
                    break  # a URL the client refuses: the next try would be refused too
        log.warning("Could not send the %r notification to %s (%s); the run is not affected.", event, self.where, error)

    def _scrubbed(self, error: BaseException) -> str:
        """``error`` as ``Type: message``, with any part of the URL that may hold a token masked."""
        return mask_texts(f"{type(error).__name__}: {error}", self._secrets)


class _Redirected(Exception):
    def __init__(self, code: int, where: str) -> None:
        super().__init__(code, where)
        self.code, self.where = code, where


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Report a redirect instead of following it: urllib turns a redirected POST into a GET without its body."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any, newurl: str
    ) -> NoReturn:
        try:
            parts = urlsplit(newurl)
            where = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{'/...' if parts.path.strip('/') else ''}"
        except ValueError:
            where = "another address"
        raise _Redirected(code, where)


_OPENER = urllib.request.build_opener(_RefuseRedirects)


def _split_credentials(url: str) -> tuple[str, dict[str, str], tuple[str, ...]]:
    """``url`` without ``user:password@`` (urllib would look that up as a host name), the basic authentication
    header they make, and the parts of the URL to mask in messages (path, query, credentials), longest first."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return url, {}, (url,)
    headers: dict[str, str] = {}
    if username is not None or password is not None:
        pair = f"{unquote(username or '')}:{unquote(password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        host = parts.netloc.rpartition("@")[2]
        url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
        parts = urlsplit(url)
    secrets = [part for part in (parts.path, parts.query, parts.fragment, username, password) if part and len(part) > 1]
    return url, headers, tuple(sorted(secrets, key=len, reverse=True))


def notifier_of(config: Any, run_dir: Path, job: str, secrets: tuple[str, ...] = ()) -> Notifier | None:
    """The run's notifier, or None without ``notify_url``; ``secrets`` are masked in what it sends."""
    url = getattr(config, "notify_url", None)
    return None if not url else Notifier(str(url), run_dir, job, secrets=secrets)
