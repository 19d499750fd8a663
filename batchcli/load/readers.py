"""Reading one ``-p`` text as a scalar value, and writing a value back as text that reads the same."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

NONE_WORDS = frozenset({"none", "null"})
"""What ``T | None`` reads as None, case-insensitively."""
_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False, "1": True, "0": False}

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"  # not \d, which takes any script's digits
_UNIT_PART = re.compile(rf"({_NUMBER})\s*(ms|[wdhms])", re.IGNORECASE)
_UNITS = re.compile(rf"(?:{_NUMBER}\s*(?:ms|[wdhms])\s*)+", re.IGNORECASE)
_UNIT_KEYWORDS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds", "ms": "milliseconds"}
_ISO_DURATION = re.compile(
    rf"P(?:({_NUMBER})W)?(?:({_NUMBER})D)?(?:T(?:({_NUMBER})H)?(?:({_NUMBER})M)?(?:({_NUMBER})S)?)?", re.IGNORECASE
)


def is_none(text: str) -> bool:
    """Whether ``text`` is one of the words that mean no value."""
    return text.strip().lower() in NONE_WORDS


def to_int(text: str) -> int:
    """Read a whole number; ``1_000`` is grouped as Python writes it."""
    return int(_ascii(text))


def to_float(text: str) -> float:
    """Read a number: ``3.5``, ``1e-3``, ``inf``."""
    return float(_ascii(text))


def to_decimal(text: str) -> Decimal:
    """Read a decimal number: ``19.99``."""
    return Decimal(_ascii(text))


def ungrouped(text: str) -> bool:
    """Whether ``text`` may be a number as HTTP and people at a prompt write them: ASCII, without Python's ``_``
    grouping. int() and float() also read "1_0" as 10 and an Arabic-Indic "٣" as 3 (``-p`` keeps ``1_000``, as
    Python writes it: ``to_int``)."""
    return text.isascii() and "_" not in text


def _ascii(text: str) -> str:
    """``text``, unless it holds a character past ASCII: int(), float() and Decimal() also read an Arabic-Indic "٣"
    or a fullwidth "７" as that digit, which a shell user sees as another character than the value the job gets."""
    if not text.isascii():
        raise ValueError(text)
    return text


def to_bool(text: str) -> bool:
    """Read a yes/no word, case-insensitively."""
    try:
        return _BOOL_WORDS[text.strip().lower()]
    except KeyError:
        raise ValueError(text) from None


def to_path(text: str) -> Path:
    """Read a non-empty path, expanding a leading ``~`` (the shell does not after ``name=``)."""
    if not text.strip():
        raise ValueError("empty path")
    return Path(text).expanduser()


def to_datetime(text: str) -> datetime:
    """Read an ISO 8601 date-time; a trailing ``Z`` means UTC."""
    text = text.strip()
    return datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)


def to_date(text: str) -> date:
    """Read an ISO 8601 date, ignoring a trailing ``Z``."""
    text = text.strip()
    return date.fromisoformat(text[:-1] if text[-1:] in ("Z", "z") else text)


def to_duration(text: str) -> timedelta:
    """Read plain seconds (``90``, ``1.5``), units (``1h 30m``, ``500ms``) or ISO 8601 (``PT1H30M``)."""
    text = text.strip()
    if re.fullmatch(_NUMBER, text):
        return timedelta(seconds=float(text))
    iso = _ISO_DURATION.fullmatch(text)
    if iso and any(iso.groups()) and not text.upper().endswith("T"):
        keywords = ("weeks", "days", "hours", "minutes", "seconds")
        return timedelta(**{key: float(number) for key, number in zip(keywords, iso.groups()) if number})
    if _UNITS.fullmatch(text):
        parts = (timedelta(**{_UNIT_KEYWORDS[unit.lower()]: float(n)}) for n, unit in _UNIT_PART.findall(text))
        return sum(parts, timedelta())
    raise ValueError(text)


def bool_text(value: object) -> str:
    """``true``/``false``: the words ``--help`` and completion show, rather than Python's ``True``."""
    return "true" if value else "false"


def duration_text(value: timedelta) -> str:
    """A duration as whole or fractional seconds with the unit: ``90s``, ``1.5s``."""
    seconds = value.total_seconds()
    return f"{int(seconds) if seconds.is_integer() else seconds!r}s"


def iso_text(value: date) -> str:
    """A date or date-time in ISO 8601, as ``to_date``/``to_datetime`` read it."""
    return value.isoformat()
