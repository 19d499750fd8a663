"""A fresh kink container per run: configuration, params and every ``@inject`` class of the project."""

from __future__ import annotations

import difflib
import inspect
import os
import reprlib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic

from kink import Container

from batchcli.load.configuration import Configuration
from batchcli.load.environment import from_environment, variable
from batchcli.errors import CastError, ProjectError, UsageError, UserCodeError
from batchcli.load.fields import build as build_configuration
from batchcli.load.fields import layout
from batchcli.load.inject import inject_spec
from batchcli.load.params import ParamSpec, constructor, constructor_hints, param_specs, unwrap_param
from batchcli.load.project import Project, exit_hint, format_user_traceback
from batchcli.load.secret import is_secret_type, mask_texts, masked_values, secret_texts
from batchcli.load.service import Service, retry_classes
from batchcli.load.source import Source


@dataclass(frozen=True)
class Wiring:
    """What a run is built from, as plain data: enough to rebuild it in another process."""

    target: str
    """The project path or installed job name."""
    config_name: str | None
    """The ``-c`` name, or None."""
    values: Mapping[str, tuple[str, ...]]
    """Every name given a value with the raw values given for it, in order: ``-p``, and ``environment``."""
    environment: frozenset[str] = frozenset()
    """The names in ``values`` that came from ``BATCHCLI_*`` variables rather than ``-p`` (``show`` says so)."""
    by_name: bool = False
    """``target`` is an installed job's name even if a path of that name exists (a resume of a run it made)."""

    def without(self, names: frozenset[str] | set[str]) -> Wiring:
        """This wiring minus ``names``: what to store for ``resume`` (``job.secret_names`` are given again)."""
        values = {k: v for k, v in self.values.items() if k not in names}
        return replace(self, values=values, environment=self.environment - names)

    def with_environment(self, found: Mapping[str, tuple[str, ...]]) -> Wiring:
        """This wiring plus the values ``build_job`` read from the environment (``Job.environment``).

        What a run records and ships to its workers, so a resume, a retry and every worker get the
        values the run started with, whatever the environment holds where and when they run.
        """
        if not found:
            return self
        extra = {k: v for k, v in found.items() if k not in self.values}  # -p wins over the environment
        return replace(self, values={**self.values, **extra}, environment=self.environment | extra.keys())


@dataclass(frozen=True)
class Job:
    """A wired job: the objects a run drives."""

    project: Project
    """The loaded project."""
    container: Container
    """This run's own container."""
    config: Configuration
    """The chosen configuration with its overrides applied."""
    source: Source[Any]
    """The resolved Source (None in a worker process, see ``build_job``)."""
    service: Service[Any]
    """The resolved Service."""
    params: dict[str, Any]
    """Every param and configuration override, cast (from ``-p`` or the environment)."""
    annotations: dict[str, Any] = field(default_factory=dict)
    """Every name ``-p`` accepts (params and dotted configuration fields) -> its declared type."""
    environment: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    """The raw values read from ``BATCHCLI_*`` variables (names ``-p`` did not give); see ``Wiring.with_environment``.

    Raw, so a secret's value is plain text here: kept out of ``repr``, like ``params``' Secrets are masked there."""

    @property
    def secret_names(self) -> frozenset[str]:
        """Names declared with a Secret type: keep their values out of anything written down."""
        return frozenset(n for n, a in self.annotations.items() if is_secret_type(a))

    def public_params(self) -> dict[str, Any]:
        """``params`` with every secret masked: the form for logs, the journal, summaries and banners."""
        return masked_values(self.params, self.annotations)


def build_job(
    project: Project, wiring: Wiring, environ: Mapping[str, str] | None = None, *, with_source: bool = True
) -> Job:
    """Wire a fresh container for ``project`` and resolve its Source, Service and Configuration.

    Values come from ``wiring`` (``-p``) first, then from ``BATCHCLI_<NAME>`` variables of
    ``environ`` (``os.environ`` when None). Worker processes pass ``with_source=False``: they only
    process items, so the Source is never built there (its constructor may open files that exist
    only where the run was started).
    """
    config_cls = project.configuration(wiring.config_name)
    classes = project.injectables()
    # Two copies of a job (job.py and job_old.py) are two Sources: said first, not as a clash of their params' types.
    source_cls = _the_one(classes, Source, "Source", project)
    service_cls = _the_one(classes, Service, "Service", project)
    params = collect_params(classes)
    config_layout = layout(config_cls)
    fields = {n: spec.annotation for n, spec in config_layout.leaves.items()}
    _check_clashes(params, fields, config_cls)
    annotations = {**fields, **{n: spec.annotation for n, spec in params.items()}}
    _check_names(list(wiring.values), annotations, config_layout.groups)
    env = from_environment([n for n in annotations if n not in wiring.values], os.environ if environ is None else environ)
    cast_values = {name: _cast(name, raw, annotations[name], name in env) for name, raw in {**env, **wiring.values}.items()}
    missing = sorted(n for n, spec in params.items() if spec.required and n not in cast_values)
    missing += [n for n in config_layout.missing(cast_values) if n not in missing]
    if missing:
        listing = " ".join(f"-p {n}=..." for n in missing)
        variables = ", ".join(variable(n) for n in missing)
        noun = "param" if all(n in params for n in missing) else "value"
        raise UsageError(
            f"Missing required {noun}{'s' if len(missing) > 1 else ''}: {', '.join(missing)}. "
            f"Give {listing} (or set {variables} in the environment)."
        )

    # A check of the job's own may quote the value it refused, a secret too ("api_key sk-... must start with sk-").
    secrets = secret_texts(cast_values)
    try:
        config = build_configuration(config_cls, {n: v for n, v in cast_values.items() if n in fields})
        Configuration.check(config)  # again: a subclass's own __post_init__ may not call Configuration's
    except ValueError as error:
        named = "" if config_cls is Configuration else f" {config_cls.__name__}"  # the default class: no name to give
        raise UsageError(mask_texts(f"Invalid configuration{named}: {error}", secrets)) from error
    except Exception as error:
        message = f"Building {config_cls.__name__} failed:\n{format_user_traceback(error)}"
        raise UserCodeError(mask_texts(message, secrets), error) from error

    container = Container()
    for key in config_cls.__mro__:
        if isinstance(key, type) and issubclass(key, Configuration):
            container[key] = config
    _check_defined(source_cls, service_cls)
    # Most derived first, so a parent class is aliased to the leaf that extends it.
    for cls in sorted(classes, key=lambda c: -len(c.__mro__)):
        _register(container, cls, cast_values)
    source: Any = _resolve(container, source_cls) if with_source else None
    service = _resolve(container, service_cls)
    try:
        retry_for = service.exceptions_to_retry_for  # a property may raise
    except Exception as error:
        raise UserCodeError(
            f"Reading {service_cls.__qualname__}.exceptions_to_retry_for failed:\n{format_user_traceback(error)}", error
        ) from error
    retry_classes(retry_for, service_cls.__qualname__)  # said now, not when the run fails
    return Job(project, container, config, source, service, cast_values, annotations, env)


def collect_params(classes: list[type]) -> dict[str, ParamSpec]:
    """Every ``Param[T]`` of the project's classes by name; one name declared with two types is an error."""
    params: dict[str, ParamSpec] = {}
    for cls in classes:
        try:
            specs = param_specs(cls)
        except TypeError as error:
            raise ProjectError(str(error)) from error
        for spec in specs:
            first = params.setdefault(spec.name, spec)
            if first.annotation != spec.annotation:
                raise ProjectError(
                    f"Param {spec.name!r} is declared as {first.annotation!r} in {first.owner.__qualname__} "
                    f"and as {spec.annotation!r} in {spec.owner.__qualname__}; give both the same type."
                )
            if first is not spec and not _same_default(first.default, spec.default):
                # --help showed one, and each class used its own: 2 items from a Source while the Service saw 500.
                raise ProjectError(
                    f"Param {spec.name!r} defaults to {_default_text(first.default)} in {first.owner.__qualname__} and "
                    f"to {_default_text(spec.default)} in {spec.owner.__qualname__}; give both the same default."
                )
    return params


def _check_clashes(params: Mapping[str, ParamSpec], fields: Mapping[str, Any], config_cls: type) -> None:
    """A Param may not have the name of a configuration field: ``-p NAME=...`` sets both, cast as the Param says,
    and without it each kept its own default (the Source saw 3 while the run went at ``concurrency=10``)."""
    clashes = [name for name in params if name in fields]
    if clashes:
        name = clashes[0]
        owner = params[name].owner.__qualname__
        raise ProjectError(
            f"Param {name!r} of {owner} has the name of a configuration field ({config_cls.__name__}.{name}), so "
            f"-p {name}=... would set both, and without it they could differ. Rename the param (e.g. "
            f"{owner.lower()}_{name}), or read the field instead: take the configuration in the constructor "
            f"(config: {config_cls.__name__}) and use config.{name}."
        )


def _same_default(a: Any, b: Any) -> bool:
    try:
        return a is b or bool(a == b)
    except Exception:  # a default whose == raises: not provably the same
        return False


def _default_text(value: Any) -> str:
    return "nothing (required)" if value is inspect.Parameter.empty else reprlib.repr(value)


def _check_names(given: list[str], annotations: Mapping[str, Any], groups: Mapping[str, type]) -> None:
    """Every given name must be a param or a configuration leaf; a group name says which leaves it has."""
    for name in given:
        if name in groups and name not in annotations:
            leaves = [n for n in annotations if n.startswith(name + ".")]
            example = f" -p {leaves[0]}=..." if leaves else ""
            raise UsageError(
                f"{name!r} is a group of configuration fields ({', '.join(leaves) or 'none settable'}), "
                f"not one value: set its fields one by one, e.g.{example}."
            )
    unknown = [name for name in given if name not in annotations]
    if unknown:
        raise UsageError(_unknown_message(unknown, set(annotations)))


def _cast(name: str, raw: tuple[str, ...], annotation: Any, from_env: bool) -> Any:
    from batchcli.load.casting import cast

    try:
        return cast(name, list(raw), annotation)
    except CastError as error:
        if not from_env:
            raise
        raise UsageError(f"{error} (The value comes from the environment variable {variable(name)}.)") from error
    except TypeError as error:  # a type batchcli cannot cast: the project must change, not the command line
        raise ProjectError(f"{error} (Declared for {name!r}.)") from error


def _unknown_message(unknown: list[str], known: set[str]) -> str:
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        parts.append(f"{name!r}{hint}")
    valid = ", ".join(sorted(known)) or "none"
    noun = "names" if len(unknown) > 1 else "name"
    return f"Unknown param or configuration {noun}: {'; '.join(parts)}. Valid names: {valid}."


def _the_one(classes: list[type], base: type, label: str, project: Project) -> type:
    candidates = [c for c in classes if issubclass(c, base)]
    # A decorated class that a decorated subclass extends is the subclass's base, not a rival.
    leaves = [c for c in candidates if not any(o is not c and issubclass(o, c) for o in candidates)]
    if len(leaves) == 1:
        return leaves[0]
    if not leaves:
        raise ProjectError(
            f"The project has no {label}: define a class that subclasses batchcli.{label} and decorate it "
            f"with @inject.{_why_none(base, label, project)}"
        )
    names = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in leaves)
    raise ProjectError(f"The project has {len(leaves)} {label} classes: {names}. Keep one, or drop @inject from the others.")


def _check_defined(source_cls: type, service_cls: type) -> None:
    """A Service without ``process``, or a Source with nothing that yields items, is the project's error, said before
    anything runs: each item failed with NotImplementedError (and the circuit breaker tripped on them), or the run
    crashed after making its directory."""
    if getattr(service_cls, "process", None) is Service.process:
        raise ProjectError(
            f"{service_cls.__qualname__} defines no process(self, item): batchcli calls it for each item. Define it "
            "(async def process(self, item) for I/O-bound work, or a plain def)."
        )
    _check_iteration(source_cls)
    iterates = getattr(source_cls, "__iter__", None) is not Source.__iter__ or hasattr(source_cls, "__aiter__")
    if not iterates and getattr(source_cls, "next", None) is Source.next:
        raise ProjectError(
            f"{source_cls.__qualname__} yields no items: define __iter__ (a generator), __aiter__ (an async "
            "generator) or next() (raising StopIteration at the end) on it."
        )


def _check_iteration(source_cls: type) -> None:
    """An ``async def __iter__`` (meant as ``__aiter__``), or an ``async def __aiter__`` that returns instead of
    yielding, gives a coroutine where an iterator belongs: the run crashed with "batchcli failed" and no frame of
    the user's, after making its directory."""
    name = source_cls.__qualname__
    method = getattr(source_cls, "__iter__", None)
    if inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method):
        raise ProjectError(
            f"{name}.__iter__ is async def, but __iter__ must give its items without awaiting. For a Source that "
            f"awaits, rename it to __aiter__ and yield each item in it (async def __aiter__(self): ... yield item); "
            "otherwise drop the async and make it a generator (def __iter__(self): ... yield item)."
        )
    method = getattr(source_cls, "__aiter__", None)
    if inspect.iscoroutinefunction(method):
        raise ProjectError(
            f"{name}.__aiter__ is async def but does not yield, so it gives a coroutine, not the items. Make it an "
            "async generator: yield each item in it (async def __aiter__(self): ... yield item)."
        )


def _why_none(base: type, label: str, project: Project) -> str:
    """What most likely hid the project's Source or Service, for the error that says there is none."""
    undecorated = [c for c in project.classes() if issubclass(c, base) and c is not base and not inject_spec(c)]
    if undecorated:
        names = ", ".join(c.__qualname__ for c in undecorated)
        return (
            f" {names} subclasses batchcli.{label} but is not decorated with batchcli's inject: kink's own "
            "@inject (from kink import inject, as Batchframe projects have it) does not register a class with "
            "batchcli. Use from batchcli import inject."
        )
    entry, root = project.entry, project.root
    if entry is not None and root is not None and entry.is_file() and root.is_dir():
        return (
            f" Only {entry.name} and what it imports were loaded, and the {label} is not among them: give the "
            f"project directory to load all of its modules: batchcli exec {_project_dir(root)}"
        )
    return ""


def _project_dir(root: Path) -> Path:
    """The project directory of a file in ``root``: the one above, for a configuration module in ``config/``."""
    return root.parent if root.name == "config" and any(root.parent.glob("*.py")) else root


def _register(container: Container, cls: type, values: dict[str, Any]) -> None:
    spec = inject_spec(cls)
    assert spec is not None  # injectables() only returns decorated classes

    def build(c: Container) -> Any:
        return _construct(c, cls, values)

    if spec.use_factory:
        container.factories[cls] = build
    else:
        container[cls] = lambda c: build(c)  # kink memoizes lambdas: one instance per run
    keys = [b for b in cls.__mro__[1:] if b not in (object, Generic) and b.__module__ != "abc"]
    for key in [*keys, *spec.aliases]:
        if key not in container:
            container.add_alias(key, cls)


def _construct(container: Container, cls: type, values: dict[str, Any]) -> Any:
    spec = inject_spec(cls)
    hints = constructor_hints(cls)
    kwargs: dict[str, Any] = {}
    init = constructor(cls)
    signature = inspect.signature(init) if init is not object.__init__ else None
    for name, parameter in (signature.parameters.items() if signature else []):
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(name)
        if unwrap_param(annotation) is not None:
            if name in values:
                kwargs[name] = values[name]
            continue
        key = spec.bind.get(name, annotation) if spec else annotation
        if isinstance(typing.get_origin(key), type) and not _resolvable(container, key):
            key = typing.get_origin(key)  # ``Source[int]`` is answered by whatever ``Source`` resolves to
        if key is not None and _resolvable(container, key):
            kwargs[name] = container[key]
        elif parameter.default is inspect.Parameter.empty:
            raise ProjectError(
                f"{cls.__qualname__}.__init__ needs {name!r} ({_type_name(annotation)}), which nothing provides: "
                "decorate that class with @inject, mark the argument Param[...] to take it from -p, "
                "or give it a default."
            )
    try:
        return cls(**kwargs)
    except (Exception, SystemExit) as error:
        message = f"Building {cls.__qualname__} failed:\n{format_user_traceback(error)}{exit_hint(error, 'building it')}"
        raise UserCodeError(mask_texts(message, secret_texts(values)), error) from error  # it may quote a secret


def _resolvable(container: Container, key: Any) -> bool:
    try:
        return key in container
    except TypeError:  # unhashable annotations
        return False


def _resolve(container: Container, cls: type) -> Any:
    return container[cls]


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__qualname__", None) or repr(annotation) if annotation is not None else "no annotation"
