"""``Source[T]``: where work items come from."""

from __future__ import annotations

import logging
import operator
import reprlib
import sys
from collections.abc import Iterable
from typing import Any, Generic, Iterator, TypeVar

T = TypeVar("T")


class Source(Generic[T]):
    """Yields the work items of a job.

    Implement one of: ``__iter__`` (a generator is simplest), Batchframe's ``next()`` raising
    ``StopIteration`` at the end, or ``__aiter__`` for sources that must await (paginated APIs).
    ``__len__`` is optional; with it the display shows a bar to 100% and an ETA.
    """

    def __iter__(self) -> Iterator[T]:
        # Batchframe's contract: call next() until it raises StopIteration.
        next_item = self.next
        while True:
            try:
                yield next_item()
            except StopIteration:
                return

    def next(self) -> T:
        """Return the next item, or raise ``StopIteration`` when there are no more."""
        raise NotImplementedError(
            f"{type(self).__qualname__} yields no items: define __iter__ (a generator), "
            "__aiter__ (an async generator) or next() on it."
        )

    def persist_failed(self, failed: list[T]) -> None:
        """Called once at the end with every input that finally failed; the default does nothing.

        batchcli already saves failed inputs in the run directory, so this is only for sending them
        somewhere of your own.
        """

    def item_key(self, item: T) -> Any:
        """Identify an item for ``resume`` (a str or an int, unique per item).

        Without it, ``resume`` identifies items by their position in the source, which must then
        yield the same items in the same order. Define it for a source whose order may change
        between runs; the journal then keeps one key per settled item.
        """
        raise NotImplementedError


class NotIterable(TypeError):
    """A Source's ``__iter__`` returned something that holds no items (an int, None): the job's error, named."""


def iterate(source: object) -> Iterator[Any]:
    """The items of a sync Source, as ``iter()`` gives them, except that an ``__iter__`` returning a list (or another
    iterable that is not an iterator) gives that list's items: what it plainly means, which ``iter()`` refuses."""
    returned = type(source).__iter__(source)  # type: ignore[attr-defined]
    if isinstance(returned, Iterator):
        return returned
    if isinstance(returned, Iterable):
        return iter(returned)
    name = type(source).__qualname__
    raise NotIterable(
        f"{name}.__iter__ returned {reprlib.repr(returned)} ({type(returned).__name__}), which holds no items. Make it "
        "a generator (yield each item), or return the items (return iter(items), or a list)."
    )


def is_async_source(source: object) -> bool:
    """True when the source is iterated with ``async for``."""
    return hasattr(type(source), "__aiter__")


def source_length(source: object) -> int | None:
    """``len(source)`` when the source defines it, else None; a ``__len__`` that returns no count (negative, not an
    int, too large for ``len()``) is ignored with a warning: the length only sizes the display and the ETA, and
    ``len()`` raising on it ended the run as crashed, with a traceback that named nothing of the user's."""
    length = getattr(type(source), "__len__", None)
    if length is None:
        return None
    value = length(source)  # not len(): its own checks raise without saying whose __len__ it was
    try:
        count = operator.index(value)  # what len() takes: an int, or a numpy integer
    except TypeError:
        count = -1
    if 0 <= count <= sys.maxsize:
        return count
    logging.getLogger("batchcli").warning(
        "%s.__len__() returned %s, which is not a count of items (a whole number, 0 or more): ignored. The run "
        "goes on without a total until the source runs out.",
        type(source).__qualname__, reprlib.repr(value),
    )
    return None


def defines_persist_failed(source: object) -> bool:
    """True when ``source`` has a ``persist_failed`` of its own (the default does nothing)."""
    method = getattr(type(source), "persist_failed", None)
    return method is not None and method is not Source.persist_failed
