"""``Secret``: a str for passwords and tokens that batchcli never writes out in the clear."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar, TypeVar

from batchcli.outcome import FailureBatch, ShownItem, masked_repr

V = TypeVar("V")


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


def is_secret_type(annotation: object) -> bool:
    """True when ``annotation`` is ``Secret`` or holds one: ``Secret | None``, ``list[Secret]``, ``dict[str, Secret]``."""
    import typing

    if annotation is Secret:
        return True
    return any(is_secret_type(arg) for arg in typing.get_args(annotation))


def _holds_secret(value: object) -> bool:
    if isinstance(value, Secret):
        return True
    if isinstance(value, dict):
        return any(_holds_secret(k) or _holds_secret(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_secret(v) for v in value)
    return False


def secret_texts(*roots: object) -> tuple[str, ...]:
    """The values of every ``Secret`` in ``roots`` (params, a configuration: dicts, lists, dataclasses, walked
    through), longest first, for masking them in text batchcli did not write itself: an exception's message
    (``401 for url ...?api_key=...``). Values under 4 characters are left out: masking them would garble text."""
    import dataclasses

    found: set[str] = set()
    seen: set[int] = set()

    def walk(value: object) -> None:
        if isinstance(value, Secret):
            if len(value) >= 4:
                found.add(str(value))
            return
        if id(value) in seen or isinstance(value, (str, bytes, int, float)):
            return
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                walk(item)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for field in dataclasses.fields(value):
                walk(getattr(value, field.name, None))

    for root in roots:
        walk(root)
    return tuple(sorted(found, key=len, reverse=True))


def mask_texts(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with each of ``secrets`` (``secret_texts``) replaced by ``Secret.mask``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, Secret.mask)
    return text


def masked_values(values: Mapping[str, V], annotations: Mapping[str, object]) -> dict[str, V | str]:
    """``values`` with each secret replaced by ``Secret.mask``: the form to write to logs, journals and banners.

    A value is secret when its name is declared with a Secret type in ``annotations`` (so raw
    ``-p`` strings are masked too) or when it is, or holds, a ``Secret``. Works on cast values
    (``Job.params``) and on raw ones (``Wiring.values``).
    """
    return {
        name: Secret.mask if not unset(value) and (is_secret_type(annotations.get(name)) or _holds_secret(value))
        else value
        for name, value in values.items()
    }


def unset(value: object) -> bool:
    """True for a secret param with no value (None, an empty list): shown as it is, not as a mask that says it is set."""
    return value is None or (isinstance(value, (list, tuple, set, frozenset, dict)) and not value)


def mask_secrets(record: logging.LogRecord) -> bool:
    """A ``Secret`` among a record's arguments is written as its mask (a filter on the run's handlers, and on a
    worker process's, which formats records before they travel): the job's
    ``log.info("token %s", self.token)`` put the token in the log file and on the console, where the JSON format
    masked it. Changes the record, so a handler the job added after batchcli's writes the mask too."""
    args = record.args
    if isinstance(args, tuple):
        if any(isinstance(arg, Secret) for arg in args):
            record.args = tuple(masked(arg) for arg in args)
    elif isinstance(args, dict) and any(isinstance(value, Secret) for value in args.values()):
        record.args = {name: masked(value) for name, value in args.items()}
    return True


class SecretMask(logging.Filter):
    """``mask_secrets``, and the value of every ``Secret`` of the job (``secret_texts``) masked wherever it shows in
    a record's message or traceback: ``log.warning(f"login with {self.token}")`` and a ``setup()`` that raised
    ``PermissionError(f"token {self.token} rejected")`` wrote the token in the log file and on the console (a
    ``Secret`` is its plain string in an f-string, so masking its arguments does not reach them)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        mask_secrets(record)
        secrets = self.secrets
        if not secrets:
            return True
        if isinstance(record, FailureBatch):  # messages and tracebacks came masked; each item's repr now
            record.failures = [f._replace(item=ShownItem(masked_repr(f.item, secrets, 60))) for f in record.failures]
            return True
        try:
            message = record.getMessage()
        except Exception:  # the job's own malformed call: its handler reports it, as logging does
            return True
        masked = mask_texts(message, secrets)
        if masked is not message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = mask_texts(text, secrets)
        return True
