"""From a declared annotation to its ``-p`` type object, and from a value to the text ``-p`` reads back."""

from __future__ import annotations

import inspect
import types
from enum import Enum
from typing import Any, Literal, Union, get_args, get_origin

from batchcli.load.types import SCALARS, Choice, Collection, Nullable, Option, ParamType, quote_element

_COLLECTIONS = (list, set, frozenset, tuple, dict)


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
    return Choice.of(options, shown)


def choice_of_literal(annotation: object) -> Choice:
    """The Choice of a ``Literal[...]`` of str, int or bool values (and None)."""
    values = list(get_args(annotation))
    if not all(v is None or type(v) in (str, int, bool) for v in values):
        raise TypeError(f"batchcli cannot cast {type_name(annotation)}: Literal values must be str, int or bool.")
    return Choice.of(tuple(Option(v, v, str(v), as_typed(v)) for v in values), ", ".join(map(repr, values)))


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
        return Nullable.of(param_type(inner) if _is_collection(inner) else _scalar(inner))
    if _is_collection(annotation):
        origin = get_origin(annotation) or annotation
        args = [arg for arg in get_args(annotation) if arg is not Ellipsis]
        if not isinstance(origin, type):
            raise TypeError(f"batchcli cannot cast params of type {type_name(annotation)}.")
        elements = tuple(_scalar(arg) for arg in args or ([str, str] if origin is dict else [str]))
        fixed = origin is tuple and bool(get_args(annotation)) and get_args(annotation)[-1] is not Ellipsis
        return Collection.of(origin, elements, fixed)
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
        return Nullable.of(_scalar(inner))
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
        return ",".join(quote_element(f"{as_typed(k)}:{as_typed(v)}") for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return ",".join(quote_element(as_typed(v)) for v in items)
    if isinstance(value, Enum):
        return choice_of_enum(type(value)).render(value)
    # The nearest class -p knows: a datetime subclass is still written in ISO 8601.
    scalar = next((SCALARS[cls] for cls in type(value).__mro__ if cls in SCALARS and cls is not object), None)
    return str(value) if scalar is None else scalar.render(value)
