"""``batchcli init NAME``: a new directory project, from the templates in ``batchcli/templates/project/``."""

from __future__ import annotations

import importlib.util
import keyword
import shutil
import string
import sys
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from batchcli.errors import UsageError

_RENAMES = {"gitignore": ".gitignore", "tests/test_name.py": "tests/test_{name}.py"}


def create_project(root: Path) -> Path:
    """Write a runnable project at ``root`` (which must not exist) and return it."""
    name = root.name
    if not name or name == "..":  # "" and "." are Path("."), the directory you are in
        raise UsageError(
            f"{str(root)!r} names no new directory (an empty name is the one you are in): give the new project's name, "
            "e.g. batchcli init my_job"
        )
    if root.exists() or root.is_symlink():
        raise UsageError(
            f"{str(root)!r} already exists; batchcli init never overwrites anything. "
            "Give a new directory name, or move the existing one away first."
        )
    _check_name(name, root)
    written: list[tuple[Path, str]] = []
    for relative, template in _templates(files("batchcli") / "templates" / "project", ""):
        relative = _RENAMES.get(relative, relative).format(name=name)
        written.append((root / relative, string.Template(template.read_text(encoding="utf-8")).substitute(name=name)))
    try:
        root.mkdir(parents=True)
    except OSError as error:
        raise _cannot_create(root, error) from error
    try:
        for path, text in written:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except BaseException as error:
        # A half-made project is worse than none: init refuses to redo it ("already exists").
        shutil.rmtree(root, ignore_errors=True)
        if not isinstance(error, OSError):
            raise
        raise UsageError(
            f"Cannot write the project {str(root)!r} ({error.strerror or error}: {error.filename or path}); nothing "
            "was left behind. Free some space (or pick a directory on another disk), then run batchcli init again."
        ) from error
    return root


def _cannot_create(root: Path, error: OSError) -> UsageError:
    """Why ``root`` cannot be made (a file in the way, a directory not writable), and what to give instead."""
    blocker = next((p for p in root.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        reason = f"{str(blocker)!r} is a file, not a directory"
    else:
        # mkdir names the directory it could not make; the one that refused it is its parent.
        where = Path(error.filename).parent if error.filename else root.parent
        reason = f"{str(where)!r} is not writable ({error.strerror or error})"
    return UsageError(
        f"Cannot create the project {str(root)!r}: {reason}. Give batchcli init a new directory inside one you "
        "can write to."
    )


def _templates(folder: Traversable, prefix: str) -> list[tuple[str, Traversable]]:
    """(relative output path without ``.tmpl``, template) for every template under ``folder``."""
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            found += _templates(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".tmpl"):
            found.append((prefix + entry.name.removesuffix(".tmpl"), entry))
    return found


def _check_name(name: str, root: Path) -> None:
    """The directory becomes a package named after it: it must be an identifier that hides no module."""
    if not name.isidentifier() or keyword.iskeyword(name):
        suggestion = "".join(c if c.isalnum() else "_" for c in name).strip("_").lower() or "my_job"
        if suggestion[0].isdigit() or keyword.iskeyword(suggestion):
            suggestion = f"job_{suggestion}"
        raise UsageError(
            f"{name!r} cannot be a project name: batchcli imports the directory as a Python package, so its "
            f"name must be a valid identifier (letters, digits, underscores). Try {str(root.with_name(suggestion))!r}."
        )
    try:
        taken = name in sys.stdlib_module_names or name in sys.modules or importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        taken = True
    if taken:
        raise UsageError(
            f"{name!r} is already the name of an importable module, which the project would clash with. "
            f"Pick another name, e.g. {str(root.with_name(name + '_job'))!r}."
        )
