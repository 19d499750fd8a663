"""One object per ``-p`` type: it parses a value, writes one back, and lists the choices to complete.

Like click's ``ParamType`` (``convert``, ``fail``, ``shell_complete``). ``annotations.param_type``
picks the object for a declared type; casting, ``exec PATH --help``, shell completion and
``batchcli.testing`` all ask that object, so a type is read, shown and completed by one rule.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from batchcli.errors import CastError, UsageError
from batchcli.load import readers
from batchcli.load.secret import Secret

_CONVERT_ERRORS = (ValueError, ArithmeticError)
"""What a reader raises for text that is not a value of its type."""


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class Scalar(ParamType):
    """A type read by one function: ``int``, ``Path``, ``timedelta``..."""

    reader: Callable[[str], object]
    """Text to value; raises ValueError for text that is not one."""
    writer: Callable[[Any], str] = str
    """Value to text that ``reader`` reads back."""
    fixed: tuple[str, ...] = ()
    """The values to complete, when the type has a fixed set (``bool``)."""

    def convert(self, text: str) -> object:
        return self.reader(text)

    def render(self, value: Any) -> str:
        return self.writer(value)

    def choices(self) -> list[str]:
        return list(self.fixed)


SCALARS: dict[object, Scalar] = {
    str: Scalar(name="str", reader=str),
    Any: Scalar(name="str", reader=str),
    Secret: Scalar(name="secret", reader=Secret, secret=True),
    int: Scalar(name="int", reader=readers.to_int, hint="Use a whole number, e.g. 42."),
    float: Scalar(name="float", reader=readers.to_float, hint="Use a number, e.g. 3.5."),
    Decimal: Scalar(name="decimal", reader=readers.to_decimal, hint="Use a decimal number, e.g. 19.99."),
    bool: Scalar(
        name="bool",
        reader=readers.to_bool,
        hint="Use one of: true, false, yes, no, on, off, 1, 0.",
        writer=readers.bool_text,
        fixed=("true", "false"),
    ),
    Path: Scalar(name="path", reader=readers.to_path, hint="Give a non-empty file or directory path."),
    datetime: Scalar(
        name="datetime (ISO 8601)",
        reader=readers.to_datetime,
        hint="Use ISO 8601, e.g. 2024-01-31T12:00:00 (or ...Z for UTC).",
        writer=readers.iso_text,
    ),
    date: Scalar(
        name="date (ISO 8601)", reader=readers.to_date, hint="Use ISO 8601, e.g. 2024-01-31.", writer=readers.iso_text
    ),
    timedelta: Scalar(
        name="duration",
        reader=readers.to_duration,
        hint="Use e.g. 90s, 5m, 1h30m, 2d, 500ms, PT1H30M, or seconds like 90.",
        writer=readers.duration_text,
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
    """How batchcli writes it (``--help`` defaults, completion, ``testing``); errors list the same, quoted."""


@dataclass(frozen=True, kw_only=True)
class Choice(ParamType):
    """An Enum or a Literal: a fixed set of options, each matched by value, then name, then either ignoring case.

    The one spelling rule for an Enum (see ``annotations.choice_of_enum``) decides whether ``--help``, the
    error's ``Allowed:`` list, completion and ``testing`` write its members by value or by name.
    """

    options: tuple[Option, ...]
    """The options, in declaration order."""

    @classmethod
    def of(cls, options: tuple[Option, ...], shown: str) -> Choice:
        """The choice among ``options``, listed as ``shown`` (``'fast', 'slow'``) in its name and its hint."""
        return cls(name=f"one of {shown}", hint=f"Allowed: {shown}.", options=options)

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
        return found[0].spelling if found else str(value)

    def choices(self) -> list[str]:
        return [option.spelling for option in self.options]


@dataclass(frozen=True, kw_only=True)
class Nullable(ParamType):
    """``T | None``: ``none`` or ``null`` (any case) is None, anything else is a ``T``."""

    inner: ParamType
    """The type of a value that is not None."""

    @classmethod
    def of(cls, inner: ParamType) -> Nullable:
        """``inner`` or None: named ``int or none``; a scalar's hint also says that none is allowed."""
        hint = "" if isinstance(inner, Collection) else f"{inner.hint} Or none for no value.".lstrip()
        return cls(name=f"{inner.name} or none", hint=hint, secret=inner.secret, inner=inner)

    def convert(self, text: str) -> object:
        return None if readers.is_none(text) else self.inner.convert(text)

    def render(self, value: Any) -> str:
        return "none" if value is None else self.inner.render(value)

    def choices(self) -> list[str]:
        return [*self.inner.choices(), "none"]

    def cast(self, name: str, raw: list[str]) -> object:
        if not isinstance(self.inner, Collection):
            return super().cast(name, raw)
        if len(raw) == 1 and readers.is_none(raw[0]):
            return None
        return self.inner.collect(name, raw, kind=self.name)


@dataclass(frozen=True, kw_only=True)
class Collection(ParamType):
    """list/set/frozenset/tuple/dict of scalars: every ``-p`` value comma-separated, a dict's pairs ``key:value``."""

    origin: type
    """The container class."""
    elements: tuple[ParamType, ...]
    """One element type (list, set, ``tuple[T, ...]``), key and value (dict), or one per position (fixed tuple)."""
    fixed: bool
    """Whether it is a fixed-length tuple, one element type per position."""

    @classmethod
    def of(cls, origin: type, elements: tuple[ParamType, ...], fixed: bool) -> Collection:
        """The collection named ``list of int``, ``set of str``, ``tuple (int, str)``, ``dict of str to int``."""
        names = [element.name for element in elements]
        if origin is dict:
            name = f"dict of {names[0]} to {names[1]}"
        elif fixed:
            name = f"tuple ({', '.join(names)})"
        else:
            name = f"{'set' if origin is frozenset else origin.__name__} of {names[0]}"
        secret = any(element.secret for element in elements)
        return cls(name=name, secret=secret, origin=origin, elements=elements, fixed=fixed)

    def convert(self, text: str) -> object:
        return self.collect("value", [text])

    def render(self, value: Any) -> str:
        if self.origin is dict:
            keys, values = self.elements
            return ",".join(quote_element(f"{keys.render(k)}:{values.render(v)}") for k, v in value.items())
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        elements = self.elements if self.fixed else self.elements[:1] * len(items)
        return ",".join(quote_element(element.render(item)) for element, item in zip(elements, items))

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

        try:
            items = [item for value in raw if value.strip() for item in split_elements(value)]
        except csv.Error as error:
            hint = 'Put an element that holds commas in double quotes, a quote inside it doubled: -p names=\'"Smith, J",Doe\'.'
            raise fail(f"its double quotes do not pair up ({error})", hint) from None
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


def split_elements(value: str) -> list[str]:
    """The elements of one collection value: comma-separated and stripped; an element in double quotes may hold
    commas (``"Smith, J",Doe``), a double quote inside it doubled, as in CSV. ``csv.Error`` for an unclosed quote."""
    if '"' not in value:
        return [item.strip() for item in value.split(",")]
    return [item.strip() for row in csv.reader([value], skipinitialspace=True, strict=True) for item in row]


def quote_element(text: str) -> str:
    """``text`` written as one element of a collection value (``split_elements`` reads it back as it is)."""
    if "," in text or text.lstrip().startswith('"'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _article(kind: str) -> str:
    """``kind`` with an indefinite article: ``an int``, ``a path``, but a bare ``one of ...``."""
    return kind if kind.startswith("one of") else ("an " if kind[0] in "aeiou" else "a ") + kind
