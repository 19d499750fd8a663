"""Loading a user's project: its modules, its injectable classes and its configurations."""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.util
import inspect
import linecache
import os
import shlex
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType
from typing import Callable

from batchcli.load.configuration import Configuration
from batchcli.errors import ProjectError, UsageError, UserCodeError
from batchcli.load.inject import inject_spec


@dataclass(frozen=True)
class Project:
    """A loaded project: what ``exec PATH`` pointed at, imported."""

    target: str
    """What the user gave: a path, or an installed job name."""
    name: str
    """The job name, used in run directory names."""
    package: str
    """The top-level module name the project's modules live under."""
    config_package: str | None
    """The module name of the ``config/`` package, when the project has one."""
    config_dir: Path | None
    """The ``config/`` directory, when the project has one."""
    root: Path | None = None
    """What module ``package`` was imported from, resolved: the project directory (with or without
    ``__init__.py``) or the single ``.py`` file; None for an installed job, which is imported by name.

    Decided once, here, by the rules of ``load_project``; whoever needs the project's files (the
    Dask bundle) takes them from this root instead of guessing again."""
    entry: Path | None = None
    """The file or directory ``exec`` pointed at, resolved: ``root`` itself or a file inside it."""

    def modules(self) -> list[ModuleType]:
        """Every loaded module of the project, ``config/`` included."""
        prefix = self.package + "."
        return [m for n, m in list(sys.modules.items()) if n == self.package or n.startswith(prefix)]

    def classes(self) -> list[type]:
        """Every class defined in the project's loaded modules, in a stable order."""
        found: dict[str, type] = {}
        for module in self.modules():
            for obj in vars(module).values():
                if isinstance(obj, type) and getattr(obj, "__module__", "") == module.__name__:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
        return [found[k] for k in sorted(found)]

    def injectables(self) -> list[type]:
        """The classes decorated with ``@inject``, configurations excluded."""
        return [c for c in self.classes() if inject_spec(c) and not issubclass(c, Configuration)]

    def config_names(self) -> list[str]:
        """The configurations ``-c`` accepts: modules of ``config/`` that define one, or class names."""
        leaves = self._load_configurations()
        if self.config_package is not None:
            prefix = self.config_package + "."
            return sorted({c.__module__[len(prefix):] for c in leaves if c.__module__.startswith(prefix)})
        return sorted(c.__name__ for c in leaves)

    def _load_configurations(self) -> list[type[Configuration]]:
        """The configurations ``-c`` offers: those no other one derives from, and each ``config/config_*.py``
        module's own (its class with no subclass in that module), which another environment may derive from: a
        staging config built on the prod one made ``-c config_prod`` an unknown configuration."""
        if self.config_dir is not None:
            for path in sorted(self.config_dir.glob("*.py")):
                if not path.stem.startswith("_"):
                    _import_user(f"{self.config_package}.{path.stem}", path)
        return self._choices()

    def _choices(self) -> list[type[Configuration]]:
        """``_load_configurations`` among the modules imported so far."""
        classes = self.classes()
        choices = _leaf_configurations(classes)
        if self.config_package is not None:
            prefix = f"{self.config_package}.config_"
            configs = [c for c in classes if issubclass(c, Configuration) and c is not Configuration]
            for c in configs:
                module = c.__module__
                if c in choices or not module.startswith(prefix) or inspect.isabstract(c):
                    continue
                if not any(o is not c and issubclass(o, c) and o.__module__ == module for o in configs):
                    choices.append(c)
        return choices

    def configuration(self, name: str | None) -> type[Configuration]:
        """The configuration class ``-c NAME`` selects (or the only one, or the built-in defaults).

        ``-c config_dev`` imports ``config/config_dev.py`` (and what it imports) only: a mistake in the prod
        module stopped every dev run. The others are imported when the name is not a module's, to list them."""
        # Only a config_* module's own class is offered whatever the others hold (a base is not): see _choices.
        if name is not None and self.config_dir is not None and name.startswith("config_"):
            path = self.config_dir / f"{name}.py"
            if path.is_file():
                _import_user(f"{self.config_package}.{name}", path)
                module = f"{self.config_package}.{name}"
                chosen = [c for c in self._choices() if c.__module__ == module]
                if len(chosen) == 1:
                    return chosen[0]
            else:
                # A module's name with no such module: a typo. Said so without importing the others, one of which
                # may be broken, so that its import error stood in place of the typo ("-c config_dve").
                modules = sorted(p.stem for p in self.config_dir.glob("config_*.py"))
                close = difflib.get_close_matches(name, modules, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                listing = ", ".join(modules) if modules else "none"
                raise UsageError(f"Unknown configuration {name!r}{hint}: there is no config/{name}.py. Available: {listing}.")
        leaves = self._load_configurations()
        if name is None:
            if not leaves:
                return Configuration
            if len(leaves) == 1:
                return leaves[0]
            raise UsageError(
                f"The project has several configurations ({', '.join(self.config_names())}); "
                "pick one with -c NAME."
            )
        chosen = [
            c
            for c in leaves
            if c.__name__ == name
            or (self.config_package and c.__module__ == f"{self.config_package}.{name}")
        ]
        if len(chosen) == 1:
            return chosen[0]
        available = self.config_names()
        if not chosen:
            listing = ", ".join(available) if available else "none (the built-in defaults apply without -c)"
            raise UsageError(f"Unknown configuration {name!r}. Available: {listing}.")
        raise ProjectError(
            f"Configuration module {name!r} defines several configurations "
            f"({', '.join(c.__name__ for c in chosen)}); keep one per module or pick one by class name."
        )


def _leaf_configurations(classes: list[type]) -> list[type[Configuration]]:
    """Configurations no other project configuration derives from: shared bases are not choices."""
    configs = [c for c in classes if issubclass(c, Configuration) and c is not Configuration]
    return [c for c in configs if not inspect.isabstract(c) and not any(o is not c and issubclass(o, c) for o in configs)]


def load_project(target: str, *, by_name: bool = False) -> Project:
    """Import the project at ``target``: a ``.py`` file, a file in a directory project, or a directory; or else
    the installed job (or module) of that name. ``by_name``: only the latter, whatever paths exist here."""
    path = Path(target).expanduser()
    if by_name or not path.exists():
        from batchcli.load.jobs import load_installed_job

        installed = load_installed_job(target)
        if installed is not None:
            return installed
        if by_name:
            raise ProjectError(
                f"The run was made by the installed job {target!r}, which is not installed here any more. Install "
                "the package that provides it again (see `batchcli list`), then try again."
            )
        raise ProjectError(
            f"Path {target!r} does not exist. Give a .py file, a project directory, "
            "the name of an installed job (see `batchcli list`), or an importable module name."
        )
    path = path.resolve()
    if path.is_file():
        if path.suffix != ".py":
            raise ProjectError(f"{target!r} is not a Python file. Give a .py file or a project directory.")
        root = path.parent
        if (root / "__init__.py").exists() or (root / "config").is_dir() or _imports_relatively(path):
            package = _import_package(root)
            _import_user(f"{package}.{path.stem}", path)
            return _directory_project(target, root, package, entry=path)
        name = _module_name(path.stem, path)
        _import_user(name, path)
        return Project(
            target=target, name=path.stem, package=name, config_package=None, config_dir=None, root=path, entry=path
        )
    package = _import_package(path)
    if not (path / "__init__.py").exists():
        for module_path in sorted(path.glob("*.py")):
            _import_user(f"{package}.{module_path.stem}", module_path)
    return _directory_project(target, path, package, entry=path)


def recorded_by_name(target: str) -> bool:
    """Whether a run's journal names its job by name: it records a path as an absolute one (``stable_target``), so
    anything else was an installed job's name, and stays that job even where a path of that name exists now."""
    return not os.path.isabs(target)


def load_recorded(target: str) -> Project:
    """Import the project a run's journal names (``recorded_by_name``)."""
    return load_project(target, by_name=recorded_by_name(target))


def _imports_relatively(path: Path) -> bool:
    """Whether the file has ``from . import`` style imports, which only work inside its directory's package."""
    import ast

    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return False  # the import proper reports it, with the user's traceback
    return any(isinstance(node, ast.ImportFrom) and node.level > 0 for node in ast.walk(tree))


def _directory_project(target: str, root: Path, package: str, entry: Path) -> Project:
    config_dir = root / "config"
    has_config = config_dir.is_dir()
    return Project(
        target=target,
        name=root.name,
        package=package,
        config_package=f"{package}.config" if has_config else None,
        config_dir=config_dir if has_config else None,
        root=root,
        entry=entry,
    )


def _module_name(name: str, location: Path) -> str:
    """Check that ``name`` can be the project's top-level module without hiding another module."""
    if not name.isidentifier():
        raise ProjectError(
            f"{str(location)!r} cannot be imported as {name!r}: rename it to a valid Python identifier "
            "(letters, digits, underscores)."
        )
    existing = sys.modules.get(name)
    if existing is not None and not _is_from(existing, location):
        where = getattr(existing, "__file__", None) or "built into Python"
        renamed = location.with_name(f"{name}_job{location.suffix}")
        raise ProjectError(
            f"The project name {name!r} ({str(location)!r}) clashes with the module {name!r} that is already "
            f"imported (from {where}): Python can hold only one module of that name. Rename the project, e.g. to "
            f"{str(renamed)!r}."
        )
    # A project loaded again in the same process (tests, resume) is imported afresh.
    for loaded in [n for n in sys.modules if n == name or n.startswith(name + ".")]:
        del sys.modules[loaded]
    return name


def _is_from(module: ModuleType, location: Path) -> bool:
    file = getattr(module, "__file__", None)
    if file is not None:
        return Path(file).resolve() == location or Path(file).resolve().parent == location
    return any(Path(p).resolve() == location for p in getattr(module, "__path__", []))


def _import_package(root: Path) -> str:
    """Import directory ``root`` as a package named after it, with or without ``__init__.py``."""
    name = _module_name(root.name, root)
    init = root / "__init__.py"
    if init.exists():
        _import_user(name, init, package_dir=root)
    else:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(root)]
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
    return name


def _import_user(name: str, path: Path, package_dir: Path | None = None) -> ModuleType:
    """Import one of the user's modules under a stable ``name`` so its classes pickle."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(package_dir)] if package_dir else None
    )
    if spec is None or spec.loader is None:
        raise ProjectError(f"Cannot import {str(path)!r}.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        del sys.modules[name]
        if isinstance(error, KeyboardInterrupt):
            raise
        raise UserCodeError(
            f"Importing {str(path)!r} failed:\n{format_user_traceback(error)}{exit_hint(error, 'importing it')}"
            f"{missing_hint(error)}",
            error,
        ) from error
    return module


def missing_hint(error: BaseException) -> str:
    """For a module the job imports that this Python does not have: where to install it. A traceback that ended in
    "No module named 'httpx'" left a new user to guess which Python batchcli runs in (a virtualenv's, or pipx's)."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return ""
    if "." in error.name:  # a package's module (its parent was found): a name to check, not a package to install
        return f"\n{error.name!r} is not a module of {error.name.rpartition('.')[0]!r}: check the name."
    return (
        f"\n{error.name!r} is not installed in the Python that runs batchcli ({sys.executable}). If it is a package, "
        f"install it there: {shlex.quote(sys.executable)} -m pip install {error.name} (a package's name can differ "
        "from its module's); if it is a module of the job's, check its name and that it sits beside the job."
    )


def exit_hint(error: BaseException, doing: str) -> str:
    """For a ``SystemExit`` the user's code raised while batchcli was ``doing`` something: what to change. It
    ended batchcli silently with the job's own exit code (0 read as every item done), or with argparse's usage
    of batchcli's arguments."""
    if not isinstance(error, SystemExit):
        return ""
    return (
        f"\nThe job's code called sys.exit({error.code!r}) while batchcli was {doing} (argparse does that too, "
        "when it parses a command line meant for the module's own use): run that code only under "
        "`if __name__ == \"__main__\":`, and raise an exception to report an error."
    )


# Frames of the machinery between batchcli and the user's code: importing a module, running a sync
# process() in a thread pool, awaiting on the loop.
_STDLIB = Path(traceback.__file__ or "").parent
_RUNTIME_FRAMES = (*(f"{_STDLIB}/{name}" for name in ("importlib", "concurrent", "asyncio")), "<frozen importlib")


def format_user_traceback(error: BaseException) -> str:
    """The traceback of ``error`` without batchcli's and importlib's own frames, with its chain as Python prints it."""
    return _with_chain(error, _user_traceback, 0)


def _user_traceback(error: BaseException) -> str:
    ours = str(Path(__file__).parent.parent)  # the batchcli package (not imported: the API above would import the journal)
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if not f.filename.startswith(ours) and not f.filename.startswith(_RUNTIME_FRAMES)
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(error)
    return "".join(lines).rstrip()


_OURS = str(Path(__file__).parent.parent)


def format_item_traceback(error: BaseException) -> str:
    """``format_user_traceback`` for a failed item, many times cheaper: a flood of failures formats one each.

    The same frames and lines, without the ``^^^`` markers under the failing expression (Python parses
    the line again for those). The frames' text is cached by code location, since a flood fails in the
    same few places, and the source lines come from ``linecache`` without checking each file's time stamp.
    """
    if (
        error.__cause__ is None
        and (error.__context__ is None or error.__suppress_context__)
        and not isinstance(error, BaseExceptionGroup)
    ):
        return _item_traceback(error)  # the common case, a flood's: one exception
    return _with_chain(error, _item_traceback, 0)


_CAUSE = "\n\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\n\nDuring handling of the above exception, another exception occurred:\n\n"
CHAIN_MAX = 16
"""At most how many exceptions of a chain (``raise ... from``, or raised while handling another) are shown."""
GROUP_MAX = 15
"""At most how many sub-exceptions of an exception group are shown, as Python shows them."""
GROUP_DEPTH_MAX = 8
"""Exception groups nested deeper than this show their own line only."""


def _with_chain(error: BaseException, single: Callable[[BaseException], str], depth: int) -> str:
    """``single``'s text of ``error`` after those of the exceptions it was raised from or while handling, oldest
    first, as Python prints them (a cycle ends the chain); an exception group's sub-exceptions under its own.
    Recorded failures kept the last exception only: a ``RuntimeError("could not enrich")`` lost the refused
    connection it was raised from, and a TaskGroup's ``ExceptionGroup`` the error inside it."""
    links, joints, seen = [error], [], {id(error)}
    current: BaseException = error
    while len(links) < CHAIN_MAX:
        if current.__cause__ is not None:
            earlier, joint = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            earlier, joint = current.__context__, _CONTEXT
        else:
            break
        if id(earlier) in seen:
            break
        seen.add(id(earlier))
        links.append(earlier)
        joints.append(joint)
        current = earlier
    text = _with_group(links[-1], single, depth)
    for link, joint in zip(reversed(links[:-1]), reversed(joints)):
        text += joint + _with_group(link, single, depth)
    return text


def _with_group(error: BaseException, single: Callable[[BaseException], str], depth: int) -> str:
    text = single(error)
    if not isinstance(error, BaseExceptionGroup) or depth >= GROUP_DEPTH_MAX:
        return text
    parts = [text]
    for n, sub in enumerate(error.exceptions[:GROUP_MAX], 1):
        parts.append(f"  +---------------- {n} ----------------")
        parts += [f"  | {line}".rstrip() for line in _with_chain(sub, single, depth + 1).splitlines()]
    if len(error.exceptions) > GROUP_MAX:
        parts.append(f"  +---------------- ... ----------------\n  | and {len(error.exceptions) - GROUP_MAX} more exceptions")
    parts.append("  +------------------------------------")
    return "\n".join(parts)


def _item_traceback(error: BaseException) -> str:
    # Keyed by the code objects' ids, which the entry holds alive so that no other code object can take one:
    # hashing a code object hashes its bytecode and constants each time (0.2-0.5 us a frame, for every failure).
    # And by each frame's instruction offset, not its line: Python works ``tb_lineno`` out from the code's line
    # table at every read, 0.5-0.9 us for a frame deep in a long function such as the worker loop's, which every
    # failure passes through; an offset is always on the same line, so it finds the same text.
    key = []
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        key.append(id(code))
        key.append(tb.tb_lasti)
        tb = tb.tb_next
    frames_key = tuple(key)
    cached = _FRAMES.get(frames_key)
    if cached is None:
        located = []
        tb = error.__traceback__
        while tb is not None:
            located.append((tb.tb_frame.f_code, tb.tb_lineno))
            tb = tb.tb_next
        codes = tuple(located)
        cached = (codes, _format_frames(codes))
        if len(_FRAMES) >= 1024:
            _FRAMES.clear()
        _FRAMES[frames_key] = cached
    frames = cached[1]
    cls = type(error)
    if issubclass(cls, SyntaxError) or getattr(error, "__notes__", None):
        last = "".join(traceback.format_exception_only(cls, error))
    else:
        name = cls.__qualname__ if cls.__module__ in ("builtins", "__main__") else f"{cls.__module__}.{cls.__qualname__}"
        try:
            message = str(error)
        except BaseException:  # a KeyboardInterrupt from __str__ too (see outcome.error_text)
            message = "<exception str() failed>"
        last = f"{name}: {message}" if message else name
    return (frames + last).rstrip()


_FRAMES: dict[tuple[int, ...], tuple[tuple[tuple[CodeType, int | None], ...], str]] = {}
"""The text of traceback frames by code location, as the ids of the frames' code objects and their instruction
offsets, with those code objects and their lines (the objects keep the ids theirs while the entry lasts; see
``_item_traceback``)."""


REPEATED_FRAMES_SHOWN = 3
"""A frame repeated in a row (recursion) is shown this many times, then counted, as Python prints it."""


def _format_frames(frames: tuple[tuple[CodeType, int | None], ...]) -> str:
    lines = ["Traceback (most recent call last):\n"]
    last, repeats = None, 0
    for frame in frames:
        code, lineno = frame
        filename = code.co_filename
        if filename.startswith(_OURS) or filename.startswith(_RUNTIME_FRAMES):
            continue
        if frame == last:
            repeats += 1
            if repeats >= REPEATED_FRAMES_SHOWN:
                continue  # a RecursionError's thousand frames took 135 KB per failure, in three files
        else:
            _count_repeats(lines, repeats)
            last, repeats = frame, 0
        lines.append(f'  File "{filename}", line {lineno}, in {code.co_name}\n')
        source = linecache.getline(filename, lineno or 0).strip()
        if source:
            lines.append(f"    {source}\n")
    _count_repeats(lines, repeats)
    return "".join(lines) if len(lines) > 1 else ""  # no frame of the job's: the exception's line alone, as Python


def _count_repeats(lines: list[str], repeats: int) -> None:
    hidden = repeats - REPEATED_FRAMES_SHOWN + 1
    if hidden > 0:
        lines.append(f"  [Previous line repeated {hidden} more time{'s' if hidden > 1 else ''}]\n")


def load_module_project(job_name: str, module_name: str, target: str | None = None) -> Project:
    """Import an installed job's module by name; its package's ``config/`` holds its configurations.

    ``target`` is what the user gave (the job name when None). The project is the module's package:
    every loaded module under it counts, so give each job a package of its own, or keep one job per
    package's modules.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = getattr(error, "name", None)
        if missing and module_name != missing and not module_name.startswith(missing + "."):
            # The job's module is there; something it imports is not: reinstalling the job would not help.
            what = f"The installed job {job_name!r} (module {module_name!r})" if target is None else f"The module {module_name!r}"
            raise ProjectError(
                f"{what} imports {missing!r}, which is not installed in this environment ({error}). Install it "
                f"(e.g. pip install {missing.partition('.')[0]}), or the package that provides it, then try again."
            ) from error
        if target is None:
            what = f"The installed job {job_name!r} points at module {module_name!r}, which"
            fix = "Reinstall the package that provides it."
        else:
            what, fix = f"The module {module_name!r}", "Install what it imports."
        raise ProjectError(f"{what} cannot be imported: {error}. {fix}") from error
    except Exception as error:
        raise UserCodeError(
            f"Importing {module_name!r} failed:\n{format_user_traceback(error)}", error
        ) from error
    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0] or module.__name__
    package_module = sys.modules[package]
    config_dir = next(
        (Path(p) / "config" for p in getattr(package_module, "__path__", []) if (Path(p) / "config").is_dir()),
        None,
    )
    return Project(
        target=job_name if target is None else target,
        name=job_name,
        package=package,
        config_package=f"{package}.config" if config_dir else None,
        config_dir=config_dir,
    )
