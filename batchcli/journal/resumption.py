"""``resume`` and ``retry``: rebuilding a job from an earlier run's journal, ready to run again."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchcli.load.environment import variable
from batchcli.errors import JournalError, UsageError
from batchcli.journal.writer import Journal
from batchcli.journal.rundir import RunInfo, check_safe, damaged, query, read_run
from batchcli.load.source import Source

if TYPE_CHECKING:
    from batchcli.load.wiring import Job, Wiring


@dataclass(frozen=True)
class Continuation:
    """How a run carries on from an earlier one; the default is a fresh run."""

    journal: Journal | None = None
    """resume: the opened (and locked) journal of the run to continue, in its own directory."""
    parent: Path | None = None
    """retry: the run whose failed inputs this run reprocesses."""
    items: list[Any] | None = None
    """retry: the inputs to process instead of iterating the Source."""


@dataclass(frozen=True)
class Plan:
    """A resume or retry ready to run, or (``job`` None) nothing to do."""

    earlier: RunInfo
    """The run being resumed or retried, as its journal tells it."""
    job: Job | None = None
    wiring: Wiring | None = None
    continuation: Continuation | None = None
    unsaved: int = 0
    """Failed inputs a retry cannot reprocess because they could not be pickled."""


def plan_resume(run_dir: Path, overrides: dict[str, tuple[str, ...]]) -> Plan:
    """Rebuild the job of ``run_dir`` to continue it there; nothing to do when it finished."""
    check_safe(run_dir)
    earlier = read_run(run_dir)
    if earlier.status == "finished":
        return Plan(earlier)
    journal = Journal.open(run_dir)
    try:
        job, wiring = _rebuild(earlier, overrides, "resume")
        if journal.keyed and not defines_item_key(job.source):
            raise UsageError(
                f"Run {str(run_dir)!r} identified its items by {type(job.source).__qualname__}.item_key(), which the "
                "Source no longer defines. Define item_key(item) again to resume this run."
            )
        # A retry run's own inputs, unpickled once the project is loaded so their classes resolve.
        items = saved_inputs(run_dir) if earlier.parent else None
    except BaseException:
        journal.close()
        raise
    return Plan(earlier, job, wiring, Continuation(journal=journal, items=items))


def plan_retry(run_dir: Path, overrides: dict[str, tuple[str, ...]]) -> Plan:
    """Rebuild the job of ``run_dir`` to reprocess exactly its failed inputs; nothing to do without any."""
    earlier = read_run(run_dir)
    if earlier.status == "running":
        raise JournalError(
            f"Run {str(run_dir)!r} is still running (pid {earlier.pid}), so its failures are not final yet. "
            "Wait for it to end, or stop it first (Ctrl-C, or kill -INT PID), then retry."
        )
    check_safe(run_dir)
    if earlier.failed == 0:
        return Plan(earlier)
    job, wiring = _rebuild(earlier, overrides, "retry")
    items, unsaved = failed_inputs(run_dir)
    return Plan(earlier, job, wiring, Continuation(parent=run_dir, items=items), unsaved=unsaved)


def failed_inputs(run_dir: Path) -> tuple[list[Any], int]:
    """The finally failed inputs of ``run_dir``, unpickled, and how many could not be saved.

    Load the project first: unpickling finds the inputs' classes in its modules.
    """
    path = check_safe(run_dir)
    rows = query(run_dir, "SELECT item FROM failures ORDER BY session, ordinal")
    items = [unpickle(path, blob) for (blob,) in rows if blob is not None]
    return items, len(rows) - len(items)


def saved_inputs(run_dir: Path) -> list[Any]:
    """The inputs a retry run was given (kept in its journal, so it resumes without its parent)."""
    path = check_safe(run_dir)
    return [unpickle(path, blob) for (blob,) in query(run_dir, "SELECT item FROM inputs ORDER BY ordinal")]


def unpickle(path: Path, blob: bytes) -> Any:
    """One saved input, or a clear error when it cannot be loaded any more."""
    try:
        return pickle.loads(blob)
    except Exception as error:
        if isinstance(error, pickle.UnpicklingError):
            raise damaged(path, f"a saved input is unreadable: {error}") from error
        raise JournalError(
            f"An input saved in {str(path)!r} cannot be loaded: {type(error).__name__}: {error}. The project's "
            "classes must be importable as they were when the run saved it; restore that class (same module "
            "and name), then try again."
        ) from error


def defines_item_key(source: object) -> bool:
    """True when the source overrides ``Source.item_key``."""
    method = getattr(type(source), "item_key", None)
    return method is not None and method is not Source.item_key


def _rebuild(earlier: RunInfo, overrides: dict[str, tuple[str, ...]], command: str) -> tuple[Job, Wiring]:
    """The job as the run started it: its recorded values, then ``overrides`` (``-p`` wins), then its secrets again.

    Only the secrets are read from the environment: every other value the run started with, from
    ``-p`` or a ``BATCHCLI_*`` variable, is in the journal, and a variable set (or unset) since must
    not quietly change the job. A secret is never taken from its default either: it was given once,
    so it must be given again.
    """
    from batchcli.load.wiring import Wiring, build_job
    from batchcli.load.project import load_project

    missing = [name for name in earlier.secrets if name not in overrides and variable(name) not in os.environ]
    if missing:
        raise UsageError(_secrets_missing(earlier, missing, command))
    values = {name: tuple(raw) for name, raw in earlier.params.items()}
    values.update(overrides)
    environment = frozenset(name for name in earlier.environment if name not in overrides)
    wiring = Wiring(target=earlier.target, config_name=earlier.config_name, values=values, environment=environment)
    secrets = {variable(name): os.environ[variable(name)] for name in earlier.secrets if name not in overrides}
    return build_job(load_project(earlier.target), wiring, environ=secrets), wiring


def _secrets_missing(earlier: RunInfo, missing: list[str], command: str) -> str:
    """Which secrets ``command`` needs again, and the two ways to give them."""
    many = len(missing) > 1
    names, again = ", ".join(map(repr, missing)), " ".join(f"-p {name}=..." for name in missing)
    return (
        f"Run {str(earlier.run_dir)!r} was started with the secret {'params' if many else 'param'} {names}, which "
        f"the journal does not keep (and {'their defaults are' if many else 'its default is'} not used instead). "
        f"Give {'them' if many else 'it'} again: batchcli {command} {earlier.run_dir} {again} "
        f"(or set {', '.join(map(variable, missing))})."
    )
