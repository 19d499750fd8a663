"""``@inject``: marks a class for wiring; the run's fresh container does the wiring."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar, overload

C = TypeVar("C", bound=type)

_MARK = "__batchcli_inject__"


@dataclass(frozen=True)
class InjectSpec:
    """How one decorated class takes part in a run's container."""

    aliases: tuple[type, ...] = ()
    """Extra keys the class answers to, beyond its parent classes (kink's ``alias=``)."""
    bind: dict[str, Any] = field(default_factory=dict)
    """Constructor argument name -> container key, overriding its annotation (kink's ``bind=``)."""
    use_factory: bool = False
    """Build a new instance every time it is asked for instead of one per run (kink's ``use_factory=``)."""


@overload
def inject(_cls: C) -> C: ...


@overload
def inject(
    _cls: None = None,
    *,
    alias: type | list[type] | tuple[type, ...] | None = None,
    bind: dict[str, Any] | None = None,
    use_factory: bool = False,
) -> Callable[[C], C]: ...


def inject(
    _cls: Any = None,
    *,
    alias: type | list[type] | tuple[type, ...] | None = None,
    bind: dict[str, Any] | None = None,
    use_factory: bool = False,
) -> Any:
    """Make a class injectable: ``@inject``, ``@inject()`` or ``@inject(alias=Base)``, as in kink.

    Unlike kink's decorator this registers nothing globally: it only marks the class, and every run
    builds a fresh container from the marked classes of its project, so two runs share nothing.
    Parent classes are aliased automatically when the container is built.
    """
    aliases: tuple[type, ...]
    if alias is None:
        aliases = ()
    elif isinstance(alias, (list, tuple)):
        aliases = tuple(alias)
    else:
        aliases = (alias,)
    spec = InjectSpec(aliases=aliases, bind=dict(bind or {}), use_factory=use_factory)

    def mark(cls: C) -> C:
        if not isinstance(cls, type):
            raise TypeError(f"@inject decorates classes, not {cls!r}: wrap the function in a class.")
        setattr(cls, _MARK, spec)
        return cls

    return mark if _cls is None else mark(_cls)


def inject_spec(cls: type) -> InjectSpec | None:
    """The spec ``@inject`` gave this very class (not one inherited from a parent), if any."""
    spec = cls.__dict__.get(_MARK)
    return spec if isinstance(spec, InjectSpec) else None
