"""Installed jobs: packages register them in the ``batchcli.jobs`` entry-point group; modules work by name too."""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

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
    """Job name -> entry point, for every installed job."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def describe_installed() -> list[InstalledJob]:
    """Every installed job with its description, read from the module's source without importing it."""
    jobs = []
    for name, entry in sorted(installed_jobs().items()):
        dist = getattr(entry, "dist", None)
        jobs.append(InstalledJob(name, entry.module, dist.name if dist else "?", _first_doc_line(entry.module)))
    return jobs


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

    entry = installed_jobs().get(name)
    if entry is not None:
        return load_module_project(name, entry.module)
    if _MODULE_NAME.fullmatch(name) and _module_exists(name):
        return load_module_project(name.rpartition(".")[2], name, target=name)
    return None


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
