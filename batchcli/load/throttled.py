"""``Throttled``: what a Service raises when the API it calls asks it to slow down."""

from __future__ import annotations

from datetime import datetime, timedelta


class Throttled(Exception):
    """The API said "too many requests": retry this item later, and slow the whole run down.

    A throttled attempt does not spend one of the item's ``max_retries``. No new item starts
    until ``retry_after`` (seconds, a ``timedelta`` or an aware ``datetime``; None lets batchcli
    pick an exponential cool-down). batchcli also recognises HTTP 429 and 503 errors of httpx,
    requests, aiohttp and urllib by themselves, so raising this is only needed for other clients.
    """

    def __init__(self, retry_after: float | timedelta | datetime | None = None, message: str = "") -> None:
        super().__init__(message or "throttled by the API", retry_after)
        self.retry_after = retry_after
        """When to try again: seconds, a ``timedelta``, a ``datetime``, or None for batchcli's cool-down."""

    def __str__(self) -> str:
        return str(self.args[0])
