"""``Service[T]``: what is done to each item."""

from __future__ import annotations

import inspect
from typing import Any, Generic, TypeVar

T = TypeVar("T")

async def maybe_await(value: Any) -> Any:
    """``await value`` when it is awaitable: ``setup()``, ``finish()`` and other hooks may be sync or async."""
    if inspect.isawaitable(value):
        return await value
    return value


DEFAULT_RETRY_FOR: frozenset[type[BaseException]] = frozenset({TimeoutError, ConnectionError})


class Service(Generic[T]):
    """Processes one item at a time; batchcli calls it with ``concurrency`` items in flight.

    ``process`` may be ``async def`` (runs on the event loop) or a plain ``def`` (runs in worker
    threads, at most ``concurrency`` at once). ``setup`` and ``finish`` are optional and may be
    either too. An exception that is an instance of one of ``exceptions_to_retry_for`` is retried
    with backoff; any other fails the item at once.
    """

    exceptions_to_retry_for: Any = DEFAULT_RETRY_FOR
    """Exception types worth retrying (subclasses included). A property works too."""

    def process(self, item: T) -> Any:
        """Do the work for one item. Raise to fail (or retry) it."""
        raise NotImplementedError(f"{type(self).__qualname__} must define process(self, item).")

    def setup(self) -> Any:
        """Called once before the first item; may be ``async def``."""

    def finish(self) -> Any:
        """Called once at the end, whatever happened; may be ``async def``."""
