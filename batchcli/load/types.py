"""One object per ``-p`` type: it parses a value, writes one back, and lists the choices to complete.

Like click's ``ParamType`` (``convert``, ``fail``, ``shell_complete``): casting (``casting.cast``),
``exec PATH --help`` (``cli/usage.py``), shell completion (``cli/completion.py``) and
``batchcli.testing`` all ask ``param_type(annotation)``, so a type is read, shown and completed
by one rule. ``as_typed(value)`` writes a value through the type of its own class.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Literal, Union, get_args, get_origin

from batchcli.errors import CastError, UsageError
from batchcli.load import readers
from batchcli.load.secret import Secret

_COLLECTIONS = (list, set, frozenset, tuple, dict)
_CONVERT_ERRORS = (ValueError, ArithmeticError)
"""What a reader raises for text that is not a value of its type."""


class ParamType:
    """How ``-p`` handles one declared type: ``convert`` reads a text, ``render`` writes a value, ``choices`` lists."""

    name: str
    """The type in words, for messages and ``--help``: ``int``, ``list of int``, ``one of 'a', 'b'``."""
    hint: str = ""
    """How to fix a value that does not convert, appended to the error."""
    secret: bool = False
    """Whether values are masked in errors (a ``Secret``, or a collection of them)."""

    def convert(self, text: str) -> object:
        """The value ``text`` stands for; ValueError (or ArithmeticError) when it stands for none."""
        raise NotImplementedError

    def render(self, value: Any) -> str:
        """``value`` as it would be typed after ``-p name=``, so that ``convert`` reads it back."""
        return str(value)

    def choices(self) -> list[str]:
        """Every value there is, as typed, when the type has a fixed set (bool, Enum, Literal); else empty."""
        return []

    def shell_complete(self, incomplete: str) -> list[str]:
        """The choices that start with ``incomplete``."""
        return [choice for choice in self.choices() if choice.startswith(incomplete)]

    def fail(self, name: str, text: str, *, detail: str = "") -> CastError:
        """The error for param ``name`` given ``text``, naming this type and its fix."""
        return CastError(name, self.name, Secret.mask if self.secret else text, self.hint, detail=detail)

    def cast(self, name: str, raw: list[str]) -> object:
        """Every value given for param ``name``, cast: a scalar takes exactly one."""
        if not raw:
            raise UsageError(f"Param {name!r} was given no value; pass -p {name}=VALUE.")
        if len(raw) > 1:
            raise UsageError(f"Param {name!r} takes one {self.name} but was given {len(raw)} times; keep one.")
        try:
            return self.convert(raw[0])
        except _CONVERT_ERRORS:
            raise self.fail(name, raw[0]) from None


@dataclass(frozen=True)
class Scalar(ParamType):
    """A type read by one function: ``int``, ``Path``, ``timedelta``..."""

    name: str
    """The type in words."""
    reader: Callable[[str], object]
    """Text to value; raises ValueError for text that is not one."""
    hint: str = ""
    """How to fix a bad value."""
    writer: Callable[[Any], str] = str
    """Value to text that ``reader`` reads back."""
    fixed: tuple[str, ...] = ()
    """The values to complete, when the type has a fixed set (``bool``)."""
    secret: bool = False
    """Whether values are masked in errors."""

    def convert(self, text: str) -> object:
        return self.reader(text)

    def render(self, value: Any) -> str:
        return self.writer(value)

    def choices(self) -> list[str]:
        return list(self.fixed)


SCALARS: dict[object, Scalar] = {
    str: Scalar("str", str),
    Any: Scalar("str", str),
    Secret: Scalar("secret", Secret, secret=True),
    int: Scalar("int", int, "Use a whole number, e.g. 42."),
    float: Scalar("float", float, "Use a number, e.g. 3.5."),
    Decimal: Scalar("decimal", Decimal, "Use a decimal number, e.g. 19.99."),
    bool: Scalar("bool", readers.to_bool, "Use one of: true, false, yes, no, on, off, 1, 0.", readers.bool_text, ("true", "false")),
    Path: Scalar("path", readers.to_path, "Give a non-empty file or directory path."),
    datetime: Scalar(
        "datetime (ISO 8601)", readers.to_datetime, "Use ISO 8601, e.g. 2024-01-31T12:00:00 (or ...Z for UTC).", readers.iso_text
    ),
    date: Scalar("date (ISO 8601)", readers.to_date, "Use ISO 8601, e.g. 2024-01-31.", readers.iso_text),
    timedelta: Scalar(
        "duration", readers.to_duration, "Use e.g. 90s, 5m, 1h30m, 2d, 500ms, PT1H30M, or seconds like 90.", readers.duration_text
    ),
}
"""The scalar types ``-p`` reads, by class."""


def _same(text: str, value: object) -> bool:
    """Whether ``text`` read as ``value``'s own type equals it (so ``'1'`` matches ``1`` and ``'yes'`` ``True``)."""
    if value is None:
        return readers.is_none(text)
    scalar = SCALARS.get(type(value))
    if scalar is None:
        return text == str(value)
    try:
        got = scalar.convert(text)
    except _CONVERT_ERRORS:
        return False
    return type(got) is type(value) and got == value


@dataclass(frozen=True)
class Option:
    """One value of a Choice."""

    result: object
    """What casting gives: the Enum member, or the Literal value."""
    value: object
    """What the user may type it as: the member's value, or the Literal value."""
    name: str
    """The other spelling the user may type: the member's name, or the Literal value as text."""
    spelling: str
    """How batchcli writes it (in errors, ``--help``, completion and ``testing``)."""


@dataclass(frozen=True)
class Choice(ParamType):
    """An Enum or a Literal: a fixed set of options, each matched by value, then name, then either ignoring case.

    The one spelling rule for an Enum (see ``choice_of_enum``) decides how ``--help``, the error's
    ``Allowed:`` list, completion and ``testing`` write its members.
    """

    options: tuple[Option, ...]
    """The options, in declaration order."""
    shown: str
    """The options as the error and ``--help`` list them: ``'fast', 'slow'``."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"one of {self.shown}"

    @property
    def hint(self) -> str:  # type: ignore[override]
        return f"Allowed: {self.shown}."

    def convert(self, text: str) -> object:
        folded = text.casefold()
        stages: list[tuple[bool, Callable[[Option], bool]]] = [
            (True, lambda option: _same(text, option.value)),
            (True, lambda option: option.name == text),
            (False, lambda option: isinstance(option.value, str) and option.value.casefold() == folded),
            (False, lambda option: option.name.casefold() == folded),
        ]
        for exact, matches in stages:
            found = [option.result for option in self.options if matches(option)]
            if len(found) == 1 or (found and exact):
                return found[0]
        raise ValueError(text)

    def render(self, value: Any) -> str:
        # Identity first: Literal[True, 1] holds two options that compare equal.
        found = [o for o in self.options if o.result is value] or [o for o in self.options if o.result == value]
        return found[0].spelling if found else as_typed(value)

    def choices(self) -> list[str]:
        return [option.spelling for option in self.options]


def choice_of_enum(enum: type[Enum]) -> Choice:
    """The Choice of an Enum: written by value when every value is a str, int or float, else by name.

    One rule per Enum, not per member, so a type's options read alike; and only values that ``-p``
    reads back exactly (plain str, int, float) are written, so everything shown can be typed.
    """
    plain = all(isinstance(member.value, (str, int, float)) for member in enum)
    options = tuple(
        Option(member, member.value, member.name, as_typed(member.value) if plain else member.name) for member in enum
    )
    shown = ", ".join(repr(member.value) if plain else repr(member.name) for member in enum)
    return Choice(options, shown)


def choice_of_literal(annotation: object) -> Choice:
    """The Choice of a ``Literal[...]`` of str, int or bool values (and None)."""
    values = list(get_args(annotation))
    if not all(v is None or type(v) in (str, int, bool) for v in values):
        raise TypeError(f"batchcli cannot cast {type_name(annotation)}: Literal values must be str, int or bool.")
    return Choice(tuple(Option(v, v, str(v), as_typed(v)) for v in values), ", ".join(map(repr, values)))


@dataclass(frozen=True)
class Nullable(ParamType):
    """``T | None``: ``none`` or ``null`` (any case) is None, anything else is a ``T``."""

    inner: ParamType
    """The type of a value that is not None."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.inner.name} or none"

    @property
    def hint(self) -> str:  # type: ignore[override]
        return "" if isinstance(self.inner, Collection) else f"{self.inner.hint} Or none for no value.".lstrip()

    @property
    def secret(self) -> bool:  # type: ignore[override]
        return self.inner.secret

    def convert(self, text: str) -> object:
        return None if readers.is_none(text) else self.inner.convert(text)

    def render(self, value: Any) -> str:
        return "none" if value is None else self.inner.render(value)

    def choices(self) -> list[str]:
        inner = self.inner.choices()
        return [*inner, "none"] if inner else []

    def cast(self, name: str, raw: list[str]) -> object:
        if not isinstance(self.inner, Collection):
            return super().cast(name, raw)
        if len(raw) == 1 and readers.is_none(raw[0]):
            return None
        return self.inner.collect(name, raw, kind=self.name)


@dataclass(frozen=True)
class Collection(ParamType):
    """list/set/frozenset/tuple/dict of scalars: every ``-p`` value comma-separated, a dict's pairs ``key:value``."""

    origin: type
    """The container class."""
    elements: tuple[ParamType, ...]
    """One element type (list, set, ``tuple[T, ...]``), key and value (dict), or one per position (fixed tuple)."""
    fixed: bool
    """Whether it is a fixed-length tuple, one element type per position."""

    @property
    def name(self) -> str:  # type: ignore[override]
        names = [element.name for element in self.elements]
        if self.origin is dict:
            return f"dict of {names[0]} to {names[1]}"
        if self.fixed:
            return f"tuple ({', '.join(names)})"
        return f"{'set' if self.origin is frozenset else self.origin.__name__} of {names[0]}"

    @property
    def secret(self) -> bool:  # type: ignore[override]
        return any(element.secret for element in self.elements)

    def convert(self, text: str) -> object:
        return self.collect("value", [text])

    def render(self, value: Any) -> str:
        return as_typed(value)

    def cast(self, name: str, raw: list[str]) -> object:
        return self.collect(name, raw)

    def collect(self, name: str, raw: list[str], kind: str | None = None) -> object:
        """Concatenate the comma-separated ``raw`` values and cast each element (or ``key:value`` pair).

        ``kind`` names the type in errors when it is not this one's name (``list of int or none``).
        """
        secret = self.secret

        def show(text: str) -> str:
            return Secret.mask if secret else text

        def fail(detail: str, hint: str) -> CastError:
            return CastError(name, kind or self.name, show(",".join(raw)), hint, detail=detail)

        def element(of: ParamType, text: str, where: str) -> object:
            try:
                return of.convert(text)
            except _CONVERT_ERRORS:
                raise fail(f"{where} ({show(text)!r}) is not {_article(of.name)}", of.hint) from None

        items = [item.strip() for value in raw if value.strip() for item in value.split(",")]
        if self.origin is dict:
            result: dict[object, object] = {}
            for position, item in enumerate(items, 1):
                key, colon, value = (part.strip() for part in item.partition(":"))
                if not colon:
                    where = f"element {position} ({show(item)!r}) has no ':'"
                    raise fail(where, "Use key:value pairs separated by commas, e.g. a:1,b:2.")
                keys, values = self.elements
                result[element(keys, key, f"key {position}")] = element(values, value, f"value of {show(key)!r}")
            return result
        elements = list(self.elements)
        if self.fixed:
            if (count := len(items)) != len(elements):
                hint = f"Give {len(elements)} comma-separated values: {', '.join(e.name for e in elements)}."
                raise fail(f"it has {count} element{'' if count == 1 else 's'}, needs {len(elements)}", hint)
        else:
            elements = elements[:1] * len(items)
        return self.origin(element(e, item, f"element {i}") for i, (e, item) in enumerate(zip(elements, items), 1))


def _article(kind: str) -> str:
    """``kind`` with an indefinite article: ``an int``, ``a path``, but a bare ``one of ...``."""
    return kind if kind.startswith("one of") else ("an " if kind[0] in "aeiou" else "a ") + kind


def type_name(annotation: object) -> str:
    """``int`` for a class, the repr for anything else (``list[list[int]]``)."""
    return annotation.__qualname__ if isinstance(annotation, type) else repr(annotation)


def _optional_inner(annotation: object) -> object | None:
    """``T`` for ``T | None`` / ``Optional[T]``, None for a non-union; other unions are a TypeError."""
    if get_origin(annotation) not in (Union, types.UnionType):
        return None
    inner: list[object] = [arg for arg in get_args(annotation) if arg is not type(None)]
    if len(inner) != 1 or len(get_args(annotation)) != 2:
        raise TypeError(f"batchcli cannot cast params of type {type_name(annotation)}: only `T | None` unions work.")
    return inner[0]


def _is_collection(annotation: object) -> bool:
    """Whether ``annotation`` is list/set/frozenset/tuple/dict, bare or parametrised."""
    return annotation in _COLLECTIONS or get_origin(annotation) in _COLLECTIONS


def param_type(annotation: object) -> ParamType:
    """The type object for a declared annotation; TypeError naming it when ``-p`` cannot set it."""
    inner = _optional_inner(annotation)
    if inner is not None:
        return Nullable(param_type(inner) if _is_collection(inner) else _scalar(inner))
    if _is_collection(annotation):
        origin = get_origin(annotation) or annotation
        args = [arg for arg in get_args(annotation) if arg is not Ellipsis]
        if not isinstance(origin, type):
            raise TypeError(f"batchcli cannot cast params of type {type_name(annotation)}.")
        elements = tuple(_scalar(arg) for arg in args or ([str, str] if origin is dict else [str]))
        fixed = origin is tuple and bool(get_args(annotation)) and get_args(annotation)[-1] is not Ellipsis
        return Collection(origin, elements, fixed)
    return _scalar(annotation)


def _scalar(annotation: object) -> ParamType:
    """The type of one non-collection value of ``annotation``; TypeError if batchcli cannot cast it."""
    if annotation is inspect.Parameter.empty:
        annotation = Any
    if isinstance(annotation, str):
        raise TypeError(f"batchcli got the string annotation {annotation!r}: resolve it with typing.get_type_hints().")
    if annotation in SCALARS:
        return SCALARS[annotation]
    inner = _optional_inner(annotation)
    if inner is not None:
        return Nullable(_scalar(inner))
    if get_origin(annotation) is Literal:
        return choice_of_literal(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return choice_of_enum(annotation)
    nested = " (collections cannot be nested)" if _is_collection(annotation) else ""
    raise TypeError(
        f"batchcli cannot cast params of type {type_name(annotation)}{nested}; use str, int, float, bool, Path,"
        " datetime, date, Decimal, timedelta, Secret, an Enum, a Literal, T | None,"
        " or a list/set/frozenset/tuple/dict of those."
    )


def as_typed(value: Any) -> str:
    """``value`` as it would be typed after ``-p name=``, written by the type of its own class."""
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ",".join(f"{as_typed(k)}:{as_typed(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return ",".join(as_typed(v) for v in items)
    if isinstance(value, Enum):
        return choice_of_enum(type(value)).render(value)
    # The nearest class -p knows: a datetime subclass is still written in ISO 8601.
    scalar = next((SCALARS[cls] for cls in type(value).__mro__ if cls in SCALARS and cls is not object), None)
    return str(value) if scalar is None else scalar.render(value)
