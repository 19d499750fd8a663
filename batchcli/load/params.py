"""``Param[T]``: a constructor argument whose value comes from ``-p name=value`` on the command line."""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

T = TypeVar("T")


class _ParamMarker:
    """The metadata that tells batchcli an ``Annotated`` argument is a command-line param."""

    def __repr__(self) -> str:
        return "Param"


PARAM = _ParamMarker()

Param = Annotated[T, PARAM]
"""``name: Param[int]`` is ``name: int`` to type checkers, and a ``-p name=...`` param to batchcli."""

_MISSING: Any = inspect.Parameter.empty


@dataclass(frozen=True)
class ParamSpec:
    """One ``Param[T]`` argument of one injectable class's constructor."""

    name: str
    """The argument name, which is also the ``-p`` name."""
    annotation: Any
    """The declared type inside ``Param[...]``."""
    default: Any
    """The default value, or ``inspect.Parameter.empty`` when the param is required."""
    owner: type
    """The class whose constructor declares it."""

    @property
    def required(self) -> bool:
        """True when the command line must give a value."""
        return self.default is _MISSING


def constructor(cls: type) -> Any:
    """``cls.__init__``, looked up on the class (where a decorator may have replaced it)."""
    return getattr(cls, "__init__")


def constructor_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of ``cls.__init__``, ``Annotated`` metadata kept."""
    init = constructor(cls)
    if init is object.__init__:
        return {}
    try:
        return typing.get_type_hints(init, include_extras=True)
    except Exception as error:  # an unresolvable forward reference in the user's annotations
        raise TypeError(f"Cannot read the annotations of {cls.__qualname__}.__init__: {error}") from error


def unwrap_param(annotation: Any) -> Any | None:
    """The type inside ``Param[T]``, or None when ``annotation`` is not a param."""
    if typing.get_origin(annotation) is Annotated:
        inner, *metadata = typing.get_args(annotation)
        if any(isinstance(m, _ParamMarker) for m in metadata):
            return inner
    return None


def param_specs(cls: type) -> list[ParamSpec]:
    """Every ``Param[T]`` argument of ``cls``'s constructor, in signature order."""
    hints = constructor_hints(cls)
    if not hints:
        return []
    specs = []
    for name, parameter in inspect.signature(constructor(cls)).parameters.items():
        inner = unwrap_param(hints.get(name))
        if inner is not None:
            if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:  # params are passed by name
                raise TypeError(
                    f"Param {name!r} of {cls.__qualname__}.__init__ is positional-only (before the /): batchcli passes "
                    "params by name. Move it after the /."
                )
            specs.append(ParamSpec(name, inner, parameter.default, cls))
    return specs
