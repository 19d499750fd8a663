"""Configuration fields by dotted name: nested dataclasses flattened for ``-p db.host=x``, and rebuilt."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from batchcli.load.configuration import RUNTIME_FIELDS

MISSING: Any = dataclasses.MISSING


@dataclass(frozen=True)
class FieldSpec:
    """One settable leaf of a configuration: a field that ``-p`` can cast, at any depth."""

    name: str
    """The dotted ``-p`` name: ``concurrency``, ``db.host``, ``db.pool.size``."""
    annotation: Any
    """The declared type."""
    default: Any
    """The value it has when not overridden, or ``MISSING``."""
    owner: type
    """The dataclass whose body declares the field (for its docstring)."""
    optional_group: str | None = None
    """The nearest enclosing group that is None by default: the field is only needed when that group is set."""

    @property
    def attr(self) -> str:
        """The attribute name in its own dataclass."""
        return self.name.rpartition(".")[2]

    @property
    def required(self) -> bool:
        """True when a value must be given (when its optional group, if any, is set at all)."""
        return self.default is MISSING


@dataclass(frozen=True)
class Layout:
    """Every settable leaf of a configuration class, and the nested groups that hold them."""

    leaves: dict[str, FieldSpec]
    """Dotted name -> leaf, in declaration order."""
    groups: dict[str, type]
    """Dotted name of each nested dataclass field -> its dataclass."""

    def missing(self, given: typing.Collection[str]) -> list[str]:
        """Required leaves not in ``given`` (a leaf of an unset optional group is not required)."""
        out = []
        for name, spec in self.leaves.items():
            if not spec.required or name in given:
                continue
            group = spec.optional_group
            if group is None or any(g.startswith(group + ".") for g in given):
                out.append(name)
        return out


def nested_dataclass(annotation: Any) -> tuple[type | None, bool]:
    """The dataclass ``annotation`` names (bare or ``X | None``) and whether None is allowed."""
    optional = False
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(annotation)) != 2:
            return None, False
        annotation, optional = args[0], True
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return annotation, optional
    return None, False


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a forward reference the module cannot resolve: cast it as text
        return {}


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()  # type: ignore[operator]  # checked against MISSING just above
    return MISSING


def layout(config_cls: type) -> Layout:
    """Flatten ``config_cls``'s settable fields; a nested dataclass field becomes a group of dotted leaves."""
    leaves: dict[str, FieldSpec] = {}
    groups: dict[str, type] = {}

    def walk(cls: type, prefix: str, base: Any, optional_group: str | None, chain: tuple[type, ...]) -> None:
        hints = _hints(cls)
        owners = {f: c for c in reversed(cls.__mro__) for f in getattr(c, "__annotations__", {})}
        for field in dataclasses.fields(cls):
            if not field.init or (not prefix and field.name in RUNTIME_FIELDS):
                continue
            name = prefix + field.name
            annotation = hints.get(field.name, Any)
            if base is MISSING:
                default = MISSING
            elif base is None:
                default = MISSING if field.default is MISSING and field.default_factory is MISSING else _default(field)
            else:
                default = getattr(base, field.name, MISSING)
            inner, optional = nested_dataclass(annotation)
            if inner is not None and inner not in chain:
                groups[name] = inner
                if default is None and optional:
                    walk(inner, name + ".", None, optional_group or name, (*chain, inner))
                else:
                    walk(inner, name + ".", default, optional_group, (*chain, inner))
                continue
            leaves[name] = FieldSpec(name, annotation, default, owners.get(field.name, cls), optional_group)

    walk(config_cls, "", None, None, (config_cls,))
    return Layout(leaves, groups)


def build(config_cls: type, values: dict[str, Any]) -> Any:
    """An instance of ``config_cls`` with the dotted ``values`` set; untouched nested fields keep their defaults.

    A nested group that is overridden is rebuilt from its default instance with ``dataclasses.replace``
    (so its ``__post_init__`` checks run again), or built from the values when its default is None.
    """

    def make(cls: type, base: Any, prefix: str) -> Any:
        kwargs: dict[str, Any] = {}
        hints = _hints(cls)
        for field in dataclasses.fields(cls):
            if not field.init:
                continue
            name = prefix + field.name
            if name in values:
                kwargs[field.name] = values[name]
                continue
            inner, _ = nested_dataclass(hints.get(field.name, Any))
            if inner is not None and any(v.startswith(name + ".") for v in values):
                current = getattr(base, field.name) if base is not None else _default(field)
                kwargs[field.name] = make(inner, None if current is MISSING else current, name + ".")
        if base is None:
            return cls(**kwargs)
        return dataclasses.replace(base, **kwargs) if kwargs else base

    return make(config_cls, None, "")
