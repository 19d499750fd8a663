"""``Throttled``: what a Service raises when the API it calls asks it to slow down."""

from __future__ import annotations

from datetime import datetime, timedelta


class Throttled(Exception):
    """The API said "too many requests": retry this item later, and slow the whole run down.

    A throttled attempt does not spend one of the item's ``max_retries``. No new item starts
    until ``retry_after`` (seconds, a ``timedelta``, a ``datetime``, or the ``Retry-After`` header's text as
    the API sent it, seconds or an HTTP-date; None, or text in neither form, lets batchcli pick an exponential
    cool-down). batchcli also recognises HTTP 429 errors (and 503s with a Retry-After) of httpx,
    requests, aiohttp and urllib by themselves, so raising this is only needed for other clients.
    """

    def __init__(self, retry_after: float | timedelta | datetime | str | None = None, message: str = "") -> None:
        if retry_after is not None and (
            isinstance(retry_after, bool) or not isinstance(retry_after, (int, float, timedelta, datetime, str))
        ):
            raise TypeError(
                f"Throttled(retry_after=...) takes seconds, a timedelta, a datetime, the Retry-After header's text "
                f"(seconds or an HTTP-date) or None, got {retry_after!r} (a {type(retry_after).__name__})."
            )
        super().__init__(message or "throttled by the API", retry_after)
        self.retry_after = retry_after
        """When to try again: seconds, a ``timedelta``, a ``datetime``, or None for batchcli's cool-down."""

    def __str__(self) -> str:
        return str(self.args[0])
