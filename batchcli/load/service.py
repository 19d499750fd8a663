"""``Service[T]``: what is done to each item."""

from __future__ import annotations

import inspect
from typing import Any, Generic, TypeVar

from batchcli.errors import ProjectError

T = TypeVar("T")

async def maybe_await(value: Any) -> Any:
    """``await value`` when it is awaitable: ``setup()``, ``finish()`` and other hooks may be sync or async."""
    if inspect.isawaitable(value):
        return await value
    return value


DEFAULT_RETRY_FOR: frozenset[type[BaseException]] = frozenset({TimeoutError, ConnectionError})


def retry_classes(value: Any, owner: str) -> tuple[type[BaseException], ...]:
    """``exceptions_to_retry_for`` as a tuple of exception classes; one class alone stands for itself. Anything
    else is the project's error: ``ConnectionError`` alone, or None, ended the run in "TypeError: 'type' object is
    not iterable", after its directory was made, without naming the attribute."""
    if isinstance(value, type) and issubclass(value, BaseException):
        return (value,)
    try:
        if isinstance(value, (str, bytes)):  # a class's name: refused as a whole, not letter by letter
            raise TypeError
        types = tuple(value)
    except TypeError:
        types = ()
        bad: Any = value
    else:
        bad = next((t for t in types if not (isinstance(t, type) and issubclass(t, BaseException))), None)
        if bad is None:
            return types
    raise ProjectError(
        f"{owner}.exceptions_to_retry_for is {bad!r}, which is not an exception class: give a tuple of exception "
        "classes, such as (ConnectionError, TimeoutError), one class, or () to retry nothing."
    )


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
