"""The project section of ``batchcli exec PATH --help``: every param and configuration field a job accepts."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from batchcli.load.environment import PREFIX, variable
from batchcli.errors import BatchcliError
from batchcli.load.fields import MISSING
from batchcli.load.project import Project
from batchcli.load.secret import Secret, is_secret_type, unset
from batchcli.load.annotations import as_typed, param_type


@dataclass(frozen=True)
class Entry:
    """One line of the help: a name ``-p`` accepts."""

    name: str
    """The ``-p`` name (dotted for nested configuration fields)."""
    type: str
    """The type in words (``list of int``)."""
    default: str
    """The default as it would be typed, ``required``, or the mask for a secret."""
    description: str
    """From the docstrings, or empty."""


@dataclass(frozen=True)
class ProjectHelp:
    """What ``--help`` shows for one project and configuration."""

    params: list[Entry]
    """The params of the project's injectable classes."""
    fields: list[Entry]
    """The chosen configuration's settable fields (empty when no configuration could be chosen)."""
    config_title: str
    """Which configuration the fields belong to, as the panel title starts: ``DevConfig (-c config_dev; ``."""
    note: str = ""
    """Why fields are missing, and how to see them."""


def project_help(project: Project, config_name: str | None) -> ProjectHelp:
    """Collect the params and configuration fields of ``project``; raises BatchcliError when it cannot."""
    from batchcli.load.wiring import collect_params
    from batchcli.load.docstrings import constructor_docs, field_docs
    from batchcli.load.fields import layout

    specs = collect_params(project.injectables())
    params = [
        Entry(s.name, type_name(s.annotation), show_default(s.default, s.annotation), constructor_docs(s.owner).get(s.name, ""))
        for s in specs.values()
    ]
    try:
        config_cls = project.configuration(config_name)
    except BatchcliError as error:
        if config_name is not None:
            raise
        return ProjectHelp(params, [], "", f"{error} Add -c NAME to --help to list its fields.")
    from batchcli.load.configuration import Configuration

    docs_by_owner: dict[type, dict[str, str]] = {}
    fields = []
    # The job's own fields first; batchcli's built-in ones (declared by Configuration) after them.
    builtin = {f.name for f in dataclasses.fields(Configuration)}
    leaves = sorted(layout(config_cls).leaves.values(), key=lambda leaf: leaf.name in builtin)
    for leaf in leaves:
        docs = docs_by_owner.setdefault(leaf.owner, field_docs(leaf.owner))
        fields.append(Entry(leaf.name, type_name(leaf.annotation), show_default(leaf.default, leaf.annotation), docs.get(leaf.attr, "")))
    shown = f"-c {config_name}; " if config_name else ""
    return ProjectHelp(params, fields, f"{config_cls.__name__} ({shown}")


def type_name(annotation: Any) -> str:
    """The param type's name, or the raw annotation for a type ``-p`` cannot set."""
    try:
        return param_type(annotation).name
    except TypeError:
        return f"{getattr(annotation, '__qualname__', None) or annotation!r} (not settable)"


def show_default(value: Any, annotation: Any) -> str:
    """A default the way it would be typed after ``-p name=``; ``required`` when there is none."""
    if value is inspect.Parameter.empty or value is MISSING:
        return "required"
    if value is None:
        return "none"
    if (is_secret_type(annotation) or isinstance(value, Secret)) and not unset(value):
        return Secret.mask
    return as_typed(value) or ("(empty)" if isinstance(value, (dict, list, tuple, set, frozenset)) else "''")


def _table(entries: list[Entry]) -> Table:
    table = Table(box=None, show_header=True, header_style="dim", padding=(0, 1), expand=False)
    table.add_column("Name", style="bold cyan", no_wrap=True)
    table.add_column("Type", style="yellow")
    table.add_column("Default")
    table.add_column("Description", ratio=1)
    for entry in entries:
        default = Text(entry.default, style="red" if entry.default == "required" else "dim")
        # Text, never a str: a str cell is read as rich markup, so a docstring's [/] would crash the help
        # and the executor field's 'batchcli[dask]' would lose its [dask].
        table.add_row(Text(entry.name), Text(entry.type), default, Text(entry.description))
    return table


def print_project_help(console: Console, help: ProjectHelp, name: str) -> None:
    """Print the params and fields as panels in the style of typer's help."""
    panel: dict[str, Any] = {"border_style": "dim", "title_align": "left"}
    if help.params:
        console.print(Panel(_table(help.params), title=Text(f"Params of {name} (-p NAME=VALUE)"), **panel))
    else:
        console.print(Panel(Text("none", style="dim"), title=Text(f"Params of {name}"), **panel))
    body: Any = _table(help.fields) if help.fields else Text(help.note, style="yellow")
    if help.fields and help.note:
        body = Group(body, Text(help.note, style="yellow"))
    # The title holds the -c name as typed: plain Text, not markup.
    title = Text(f"Fields of {help.config_title}-p NAME=VALUE)" if help.fields else "Configuration fields")
    console.print(Panel(body, title=title, **panel))
    console.print(
        Text.assemble(
            "Any name can also come from the environment as ",
            (f"{PREFIX}<NAME>", "bold"),
            f" (upper-case, dots as __, e.g. {variable('db.host')}); -p wins over the environment.",
        )
    )
