"""Shell completion for ``-p`` and ``-c``: names from the project PATH on the command line, best effort."""

from __future__ import annotations

import contextlib
import io
from typing import Any


def command_line(params: dict[str, Any], extra: list[str]) -> tuple[str | None, str | None]:
    """PATH and the ``-c`` value from a completion context's parsed ``params`` and leftover words.

    While ``-p`` still lacks its value, click stops parsing before it assigns the positional
    PATH, so PATH is then the first leftover word.
    """
    path = params.get("path") or next((w for w in extra if not w.startswith("-")), None)
    return path, params.get("config")


def _quietly_load(target: str) -> Any:
    """Load the project without letting its imports print into the shell's completion output."""
    from batchcli.load.project import load_project

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return load_project(target)


def _choices(annotation: Any, incomplete: str) -> list[str]:
    """The values the param type of ``annotation`` completes (bool, Enum, Literal, and ``none`` for ``T | None``)."""
    from batchcli.load.annotations import param_type

    try:
        return param_type(annotation).shell_complete(incomplete)
    except TypeError:  # a type -p cannot set has nothing to offer
        return []


def accepted_names(target: str, config_name: str | None) -> dict[str, Any]:
    """Every ``-p`` name of the project at ``target`` with its type (the configuration's fields when one is chosen)."""
    from batchcli.load.wiring import collect_params
    from batchcli.errors import BatchcliError
    from batchcli.load.fields import layout

    project = _quietly_load(target)
    names: dict[str, Any] = {n: spec.annotation for n, spec in collect_params(project.injectables()).items()}
    try:
        config_cls = project.configuration(config_name)
    except BatchcliError:
        from batchcli.load.configuration import Configuration

        config_cls = Configuration  # several to choose from: the built-in fields are common to all
    for name, leaf in layout(config_cls).leaves.items():
        names.setdefault(name, leaf.annotation)
    return names


def complete_values(target: str | None, config_name: str | None, incomplete: str) -> list[str]:
    """``name=`` for every name starting with ``incomplete``; after ``name=``, the choices of a bool/Enum/Literal.

    Never raises: a project that cannot load completes nothing.
    """
    if not target:
        return []
    try:
        known = accepted_names(target, config_name)
        name, sep, _ = incomplete.partition("=")
        if sep:
            return [f"{name}={c}" for c in _choices(known.get(name), incomplete[len(name) + 1 :])]
        return [f"{n}=" for n in known if n.startswith(incomplete)]
    except (Exception, SystemExit):  # noqa: BLE001 - completion must never break the shell
        return []


def complete_configs(target: str | None, incomplete: str) -> list[str]:
    """The configuration names of the project at ``target`` that start with ``incomplete``; never raises."""
    if not target:
        return []
    try:
        return [n for n in _quietly_load(target).config_names() if n.startswith(incomplete)]
    except (Exception, SystemExit):  # noqa: BLE001 - completion must never break the shell
        return []
