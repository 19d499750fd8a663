"""Installed jobs: packages register them in the ``batchcli.jobs`` entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchcli.project import Project

GROUP = "batchcli.jobs"


def installed_jobs() -> dict[str, EntryPoint]:
    """Job name -> entry point, for every installed job."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_installed_job(name: str) -> Project | None:
    """Import the installed job ``name``, or None when no package registers it."""
    entry = installed_jobs().get(name)
    if entry is None:
        return None
    from batchcli.project import load_module_project

    return load_module_project(name, entry.value)
