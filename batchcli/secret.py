"""``Secret``: a str for passwords and tokens that batchcli never writes out in the clear."""

from __future__ import annotations

from typing import ClassVar


class Secret(str):
    """A password or token: the plain string to your code, masked everywhere batchcli writes.

    Declare a param as ``Secret`` and batchcli casts ``-p token=abc`` to ``Secret("abc")``.
    In your code it *is* the string: ``str(s)``, ``s == "abc"`` and ``f"{s}"`` all give the
    value, so it can be sent to an API as is. Only ``repr(s)`` is masked, as
    ``Secret('********')``, so it does not leak through debug output or tracebacks' locals.

    batchcli never writes a Secret to logs, the journal or the run summary: it checks
    ``isinstance(value, Secret)`` (or the declared type) and writes ``Secret.mask`` instead.
    """

    __slots__ = ()

    mask: ClassVar[str] = "********"

    def __repr__(self) -> str:
        """Show the mask, never the value."""
        return f"Secret({self.mask!r})"


def masked(value: object) -> object:
    """Return ``Secret.mask`` for a Secret and ``value`` unchanged otherwise, for writing to logs."""
    return Secret.mask if isinstance(value, Secret) else value
