"""Cast ``-p name=value`` strings to the types a Source or Service declares, with messages that say the fix."""

from __future__ import annotations

import inspect
import re
import types
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple, Union, get_args, get_origin

from batchcli.errors import CastError, UsageError
from batchcli.load.secret import Secret

_NONE_WORDS = frozenset({"none", "null"})
_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False, "1": True, "0": False}
_COLLECTIONS = (list, set, frozenset, tuple, dict)

_NUMBER = r"\d+(?:\.\d+)?"
_UNIT_PART = re.compile(rf"({_NUMBER})\s*(ms|[wdhms])", re.IGNORECASE)
_UNITS = re.compile(rf"(?:{_NUMBER}\s*(?:ms|[wdhms])\s*)+", re.IGNORECASE)
_UNIT_KEYWORDS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds", "ms": "milliseconds"}
_ISO_DURATION = re.compile(
    rf"P(?:({_NUMBER})W)?(?:({_NUMBER})D)?(?:T(?:({_NUMBER})H)?(?:({_NUMBER})M)?(?:({_NUMBER})S)?)?", re.IGNORECASE
)


class _Scalar(NamedTuple):
    """How to read one value: its human name, a converter raising ValueError, and the hint shown on failure."""

    name: str
    convert: Callable[[str], object]
    hint: str


def _to_bool(text: str) -> bool:
    """Read a yes/no word, case-insensitively."""
    try:
        return _BOOL_WORDS[text.strip().lower()]
    except KeyError:
        raise ValueError(text) from None


def _to_path(text: str) -> Path:
    """Read a non-empty path, expanding a leading ``~`` (the shell does not after ``name=``)."""
    if not text.strip():
        raise ValueError("empty path")
    return Path(text).expanduser()


def _to_datetime(text: str) -> datetime:
    """Read an ISO 8601 date-time; a trailing ``Z`` means UTC."""
    text = text.strip()
    return datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)


def _to_date(text: str) -> date:
    """Read an ISO 8601 date, ignoring a trailing ``Z``."""
    text = text.strip()
    return date.fromisoformat(text[:-1] if text[-1:] in ("Z", "z") else text)


def _to_duration(text: str) -> timedelta:
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


_SCALARS: dict[object, _Scalar] = {
    str: _Scalar("str", str, ""),
    Any: _Scalar("str", str, ""),
    Secret: _Scalar("secret", Secret, ""),
    int: _Scalar("int", int, "Use a whole number, e.g. 42."),
    float: _Scalar("float", float, "Use a number, e.g. 3.5."),
    Decimal: _Scalar("decimal", Decimal, "Use a decimal number, e.g. 19.99."),
    bool: _Scalar("bool", _to_bool, "Use one of: true, false, yes, no, on, off, 1, 0."),
    Path: _Scalar("path", _to_path, "Give a non-empty file or directory path."),
    datetime: _Scalar("datetime (ISO 8601)", _to_datetime, "Use ISO 8601, e.g. 2024-01-31T12:00:00 (or ...Z for UTC)."),
    date: _Scalar("date (ISO 8601)", _to_date, "Use ISO 8601, e.g. 2024-01-31."),
    timedelta: _Scalar("duration", _to_duration, "Use e.g. 90s, 5m, 1h30m, 2d, 500ms, PT1H30M, or seconds like 90."),
}


def _same(text: str, value: object) -> bool:
    """Whether ``text`` read as ``value``'s own type equals it (so ``'1'`` matches ``1`` and ``'yes'`` ``True``)."""
    if value is None:
        return text.strip().lower() in _NONE_WORDS
    scalar = _SCALARS.get(type(value))
    if scalar is None:
        return text == str(value)
    try:
        got = scalar.convert(text)
    except (ValueError, ArithmeticError):
        return False
    return type(got) is type(value) and got == value


def _choice(options: list[tuple[object, object, str]], shown: str) -> _Scalar:
    """Fixed options as (result, value, name): match by value, then name, then either case-insensitively."""

    def convert(text: str) -> object:
        folded = text.casefold()
        stages: list[tuple[bool, Callable[[object, str], bool]]] = [
            (True, lambda value, name: _same(text, value)),
            (True, lambda value, name: name == text),
            (False, lambda value, name: isinstance(value, str) and value.casefold() == folded),
            (False, lambda value, name: name.casefold() == folded),
        ]
        for exact, matches in stages:
            found = [result for result, value, name in options if matches(value, name)]
            if len(found) == 1 or (found and exact):
                return found[0]
        raise ValueError(text)

    return _Scalar(f"one of {shown}", convert, f"Allowed: {shown}.")


def _type_name(annotation: object) -> str:
    """``int`` for a class, the repr for anything else (``list[list[int]]``)."""
    return annotation.__qualname__ if isinstance(annotation, type) else repr(annotation)


def _optional_inner(annotation: object) -> object | None:
    """``T`` for ``T | None`` / ``Optional[T]``, None for a non-union; other unions are a TypeError."""
    if get_origin(annotation) not in (Union, types.UnionType):
        return None
    inner: list[object] = [arg for arg in get_args(annotation) if arg is not type(None)]
    if len(inner) != 1 or len(get_args(annotation)) != 2:
        raise TypeError(f"batchcli cannot cast params of type {_type_name(annotation)}: only `T | None` unions work.")
    return inner[0]


def _is_collection(annotation: object) -> bool:
    """Whether ``annotation`` is list/set/frozenset/tuple/dict, bare or parametrised."""
    return annotation in _COLLECTIONS or get_origin(annotation) in _COLLECTIONS


def _scalar(annotation: object) -> _Scalar:
    """The reader for one non-collection value of ``annotation``; TypeError if batchcli cannot cast it."""
    if annotation is inspect.Parameter.empty:
        annotation = Any
    if isinstance(annotation, str):
        raise TypeError(f"batchcli got the string annotation {annotation!r}: resolve it with typing.get_type_hints().")
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    inner = _optional_inner(annotation)
    if inner is not None:
        base = _scalar(inner)

        def convert(text: str) -> object:
            return None if text.strip().lower() in _NONE_WORDS else base.convert(text)

        return _Scalar(f"{base.name} or none", convert, f"{base.hint} Or none for no value.".lstrip())
    if get_origin(annotation) is Literal:
        values = list(get_args(annotation))
        if not all(v is None or type(v) in (str, int, bool) for v in values):
            raise TypeError(f"batchcli cannot cast {_type_name(annotation)}: Literal values must be str, int or bool.")
        return _choice([(v, v, str(v)) for v in values], ", ".join(map(repr, values)))
    if isinstance(annotation, type) and issubclass(annotation, Enum):  # shown by value if plain, else by name
        plain = all(isinstance(m.value, (str, int, float)) for m in annotation)
        shown = ", ".join(repr(m.value) if plain else repr(m.name) for m in annotation)
        return _choice([(m, m.value, m.name) for m in annotation], shown)
    nested = " (collections cannot be nested)" if _is_collection(annotation) else ""
    raise TypeError(
        f"batchcli cannot cast params of type {_type_name(annotation)}{nested}; use str, int, float, bool, Path,"
        " datetime, date, Decimal, timedelta, Secret, an Enum, a Literal, T | None,"
        " or a list/set/frozenset/tuple/dict of those."
    )


def _parts(annotation: object) -> tuple[type, list[_Scalar]]:
    """The container type and element readers of a collection: one for list/set/tuple[T, ...], each for fixed."""
    origin = get_origin(annotation) or annotation
    args = [arg for arg in get_args(annotation) if arg is not Ellipsis]
    assert isinstance(origin, type)
    return origin, [_scalar(arg) for arg in args or ([str, str] if origin is dict else [str])]


def _is_fixed_tuple(annotation: object) -> bool:
    """Whether ``annotation`` is ``tuple[A, B, ...]`` with a fixed length (not ``tuple[T, ...]`` nor bare)."""
    args = get_args(annotation)
    return get_origin(annotation) is tuple and bool(args) and args[-1] is not Ellipsis


def describe(annotation: object) -> str:
    """A short human name for ``annotation``, for messages and ``--help``: ``list of int``, ``int or none``."""
    inner = _optional_inner(annotation)
    if inner is not None and _is_collection(inner):
        return f"{describe(inner)} or none"
    if not _is_collection(annotation):
        return _scalar(annotation).name
    origin, scalars = _parts(annotation)
    names = [scalar.name for scalar in scalars]
    if origin is dict:
        return f"dict of {names[0]} to {names[1]}"
    if _is_fixed_tuple(annotation):
        return f"tuple ({', '.join(names)})"
    return f"{'set' if origin is frozenset else origin.__name__} of {names[0]}"


def _article(kind: str) -> str:
    """``kind`` with an indefinite article: ``an int``, ``a path``, but a bare ``one of ...``."""
    return kind if kind.startswith("one of") else ("an " if kind[0] in "aeiou" else "a ") + kind


def _cast_collection(name: str, raw: list[str], annotation: object, kind: str) -> object:
    """Concatenate the comma-separated ``raw`` values and cast each element (or ``key:value`` pair)."""
    origin, scalars = _parts(annotation)
    secret = "secret" in kind

    def show(text: str) -> str:
        return Secret.mask if secret else text

    def fail(detail: str, hint: str) -> CastError:
        return CastError(name, kind, show(",".join(raw)), hint, detail=detail)

    def element(scalar: _Scalar, text: str, where: str) -> object:
        try:
            return scalar.convert(text)
        except (ValueError, ArithmeticError):
            raise fail(f"{where} ({show(text)!r}) is not {_article(scalar.name)}", scalar.hint) from None

    items = [item.strip() for value in raw if value.strip() for item in value.split(",")]
    if origin is dict:
        result: dict[object, object] = {}
        for position, item in enumerate(items, 1):
            key, colon, value = (part.strip() for part in item.partition(":"))
            if not colon:
                where = f"element {position} ({show(item)!r}) has no ':'"
                raise fail(where, "Use key:value pairs separated by commas, e.g. a:1,b:2.")
            result[element(scalars[0], key, f"key {position}")] = element(scalars[1], value, f"value of {show(key)!r}")
        return result
    if _is_fixed_tuple(annotation):
        if (count := len(items)) != len(scalars):
            hint = f"Give {len(scalars)} comma-separated values: {', '.join(s.name for s in scalars)}."
            raise fail(f"it has {count} element{'' if count == 1 else 's'}, needs {len(scalars)}", hint)
    else:
        scalars = scalars[:1] * len(items)
    return origin(element(s, item, f"element {i}") for i, (s, item) in enumerate(zip(scalars, items), 1))


def cast(name: str, raw: list[str], annotation: object) -> object:
    """Cast every value given for param ``name`` (in order) to ``annotation``; CastError says how to fix it.

    Scalars take exactly one value. Collections concatenate all values, each comma-separated:
    ``-p ids=1,2 -p ids=3`` gives ``[1, 2, 3]``; an empty value adds nothing; elements are stripped;
    a dict pair splits at its first ``:`` and a repeated key keeps the last value. ``T | None``
    reads ``none``/``null`` as None. An annotation batchcli cannot cast raises TypeError.
    """
    inner = _optional_inner(annotation)
    target = annotation if inner is None else inner
    if _is_collection(target):
        kind = describe(annotation)
        if inner is not None and len(raw) == 1 and raw[0].strip().lower() in _NONE_WORDS:
            return None
        return _cast_collection(name, raw, target, kind)
    scalar = _scalar(annotation)
    if not raw:
        raise UsageError(f"Param {name!r} was given no value; pass -p {name}=VALUE.")
    if len(raw) > 1:
        raise UsageError(f"Param {name!r} takes one {scalar.name} but was given {len(raw)} times; keep one.")
    try:
        return scalar.convert(raw[0])
    except (ValueError, ArithmeticError):
        raise CastError(name, scalar.name, raw[0], scalar.hint) from None
