"""``notify_url``: a POST with a JSON summary when a run finishes, stops, crashes or trips its circuit breaker.

Sent from a background thread with the standard library (``urllib``), a few tries each: a notification
never blocks the run or changes how it ends. One that cannot be delivered is a log line. At the end
of the run the process waits for the last one at most ``END_WAIT_S``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from batchcli import __version__

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
        self, url: str, run_dir: Path, job: str, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._url = url
        self._base = {"job": job, "run_id": run_dir.name, "run_dir": str(run_dir), "host": socket.gethostname()}
        self._sleep = sleep
        self._threads: list[tuple[threading.Thread, str]] = []

    @property
    def where(self) -> str:
        """The endpoint for messages, without its path or query (the URL may hold a token)."""
        parts = urlsplit(self._url)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"

    def send(self, event: str, **fields: Any) -> None:
        """Post ``event`` with ``fields`` in the background."""
        body = {"event": event, **self._base, "time": time.time(), **fields, "batchcli_version": __version__}
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
            fatal=None if fatal is None else f"{type(fatal).__qualname__}: {fatal}",
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
        error: Exception | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                self._sleep(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S)) - 1])
            request = urllib.request.Request(
                self._url, data=data, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    response.read()
                log.info("Notification %r sent to %s.", event, self.where)
                return
            except urllib.error.HTTPError as failed:
                error = failed
                if 400 <= failed.code < 500 and failed.code != 429:
                    break  # the endpoint refuses this request: trying again will not help
            except (OSError, ValueError) as failed:  # refused, unreachable, timed out; a malformed URL
                error = failed
        log.warning("Could not send the %r notification to %s (%s); the run is not affected.", event, self.where, error)


def notifier_of(config: Any, run_dir: Path, job: str) -> Notifier | None:
    """The run's notifier, or None without ``notify_url``."""
    url = getattr(config, "notify_url", None)
    return None if not url else Notifier(str(url), run_dir, job)
