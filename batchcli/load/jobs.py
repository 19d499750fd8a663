"""Installed jobs: packages register them in the ``batchcli.jobs`` entry-point group; modules work by name too."""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from batchcli.errors import UsageError

if TYPE_CHECKING:
    from batchcli.load.project import Project

GROUP = "batchcli.jobs"
"""The entry-point group: ``[project.entry-points."batchcli.jobs"]`` ``name = "package.module"``."""

_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class InstalledJob:
    """One job a package registers, as ``batchcli list`` shows it."""

    name: str
    """What ``batchcli exec NAME`` takes."""
    module: str
    """The module the entry point names."""
    package: str
    """The distribution that registers it."""
    description: str
    """The first line of the module's docstring, or why it cannot be read."""


def installed_jobs() -> dict[str, EntryPoint]:
    """Job name -> entry point, for every installed job (the first on the path for a name registered twice)."""
    found: dict[str, EntryPoint] = {}
    for entry in _scan()[0]:
        found.setdefault(entry.name, entry)
    return found


def _scan() -> tuple[list[EntryPoint], list[EntryPoint]]:
    """One reading of the installed entry points: every well-formed registration of a job, in the order of the path,
    one per job name and module; and the malformed ones, whose value is no ``module[:attr]`` (one package's typo must not break every exec and list)."""
    seen: set[tuple[str, str]] = set()
    found, malformed = [], []
    for entry in entry_points(group=GROUP):
        module = _module_of(entry)
        if module is None:
            malformed.append(entry)
        elif (entry.name, module) not in seen:  # a distribution found twice registers once
            seen.add((entry.name, module))
            found.append(entry)
    return found, malformed


def _module_of(entry: EntryPoint) -> str | None:
    try:
        return entry.module
    except (AttributeError, ValueError):  # importlib.metadata found no module name in the value
        return None


def _malformed_reason(entry: EntryPoint) -> str:
    return (
        f"(cannot be loaded: its entry point's value {entry.value!r} is not a module name such as package.module; "
        f"fix it in the {_package(entry)} package's entry points)"
    )


def _package(entry: EntryPoint) -> str:
    dist = getattr(entry, "dist", None)
    return dist.name if dist else "?"


def describe_installed() -> list[InstalledJob]:
    """Every installed job with its description, read from the module's source without importing it; a name that
    two packages register is listed once for each."""
    registrations, malformed = _scan()
    entries = sorted(registrations, key=lambda e: e.name)  # stable: the path's order within a name
    listed = [InstalledJob(e.name, e.module, _package(e), _first_doc_line(e.module)) for e in entries]
    listed += [InstalledJob(e.name, e.value, _package(e), _malformed_reason(e)) for e in malformed]
    return sorted(listed, key=lambda job: job.name)


def _first_doc_line(module: str) -> str:
    try:
        spec = importlib.util.find_spec(module)
    except Exception:  # noqa: BLE001 - its parent package failed to import; list must go on
        spec = None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return "(module not found: reinstall the package that provides it)"
    try:
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8")))
    except (OSError, SyntaxError, ValueError):
        return "(cannot read the module's source)"
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


def shadowed_job(target: str) -> EntryPoint | None:
    """The installed job named ``target`` when ``target`` is also an existing path (the path wins)."""
    if not Path(target).expanduser().exists():
        return None
    return installed_jobs().get(target)


def load_installed_job(name: str) -> Project | None:
    """Import the installed job ``name``, or the module named ``name``; None when neither exists."""
    from batchcli.load.project import load_module_project

    registrations, malformed = _scan()  # once: a name that is no installed job used to read them twice
    registered = [e for e in registrations if e.name == name]
    if len(registered) > 1:  # one of them silently hid the other, and not the one Python's import order would pick
        packages = ", ".join(f"{_package(e)} ({e.module})" for e in registered)
        raise UsageError(
            f"The job name {name!r} is registered by several installed packages: {packages}. Run one by its module "
            f"name, e.g. batchcli exec {registered[0].module}, or uninstall the other."
        )
    if registered:
        return load_module_project(name, registered[0].module)
    broken = [e for e in malformed if e.name == name]
    if broken:
        raise UsageError(f"The installed job {name!r} {_malformed_reason(broken[0])[1:-1]}.")
    if _MODULE_NAME.fullmatch(name) and _module_exists(name):
        return load_module_project(name.rpartition(".")[2], name, target=name)
    return None


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
