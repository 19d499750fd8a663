"""Test your own jobs with pytest: run one in-process and look at what happened.

::

    from batchcli.testing import run_job

    def test_every_record_is_indexed(tmp_path):
        outcome = run_job("examples/reindex", config="config_dev", params={"generate": 20}, output_dir=tmp_path)
        assert outcome.succeeded == 20 and outcome.failed == 0

    def test_a_record_without_id_fails_with_the_reason(tmp_path):
        (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{"title": "no id"}\n')
        outcome = run_job("examples/reindex", config="config_dev",
                          params={"records": tmp_path / "bad.jsonl"}, output_dir=tmp_path)
        assert outcome.failures[0].error_type == "KeyError"

``run_job`` wires and runs the job exactly as ``batchcli exec`` does (same loading, casting,
configuration, executor, retries and run directory) with three differences that suit a test:

- retries do not wait: ``backoff_s`` is 0 unless ``params`` sets it (that 0 is not recorded: the
  run's ``summary.json`` and journal hold only what you passed);
- nothing is drawn or printed: no live display, no signal handlers (so it runs in any thread);
  what the run would have printed is in ``JobOutcome.output``;
- the environment is not read unless you pass ``environ=os.environ`` (or a dict of
  ``BATCHCLI_*`` variables), so a developer's shell cannot change a test's result;
- without ``output_dir`` the run directory is made in a temporary directory that is removed
  when ``run_job`` returns: the outcome keeps the counts, failures and output; pass
  ``output_dir=tmp_path`` to keep the files (``summary.json``, ``failed.jsonl``, the log).

``params`` values may be strings (as after ``-p name=``) or Python values: ``5``, ``True``,
``Path(...)``, ``timedelta(minutes=5)``, an Enum member, a list/set/tuple or a dict. A mistake in
them raises the same ``batchcli.errors.UsageError`` the CLI would print, with the same message.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from batchcli.journal.results import Result

__all__ = ["FailedItem", "JobOutcome", "run_job"]


@dataclass(frozen=True)
class FailedItem:
    """One input that finally failed, and why."""

    input: Any
    """The item exactly as the Source yielded it."""
    error_type: str
    """The exception's class name, e.g. ``ValueError``."""
    message: str
    """``str()`` of the exception."""
    attempts: int
    """How many attempts were made (retries included)."""


@dataclass(frozen=True)
class JobOutcome:
    """What one run of a job did."""

    succeeded: int
    """Items processed without error."""
    failed: int
    """Items that finally failed."""
    total: int | None
    """Items the Source yielded (None if the run ended before the Source did)."""
    unprocessed: int | None
    """Items neither succeeded nor failed (a stop or a crash)."""
    exit_code: int
    """What ``batchcli exec`` would exit with: 0 all succeeded, 1 some failed, 3 fatal error."""
    status: str
    """``finished``, ``stopped`` or ``crashed``."""
    failures: tuple[FailedItem, ...]
    """Every failed input with its reason, in the order they failed."""
    run_dir: Path
    """The run directory: ``summary.json``, ``failed.jsonl``, the log file (removed already when
    ``run_job`` was called without ``output_dir``)."""
    output: str
    """What the run printed (warnings, errors, the final progress line)."""
    fatal: BaseException | None = None
    """The error that ended the run early (the Source raised, ``setup()`` failed), if any."""
    results: tuple[Result, ...] = ()
    """What ``process`` returned for each succeeded item (when not None), in source order: each a
    ``Result`` with ``ordinal``, ``key`` and ``value``, as ``batchcli.read_results`` yields them."""

    @property
    def ok(self) -> bool:
        """True when every item succeeded."""
        return self.exit_code == 0


def run_job(
    target: str | os.PathLike[str],
    *,
    params: Mapping[str, object] | None = None,
    config: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> JobOutcome:
    """Run the job at ``target`` (a path, an installed job or a module name) to the end, in this process.

    Args:
        target: What ``batchcli exec`` takes: a .py file, a project directory, a job or module name.
        params: ``-p`` values by name (dotted for nested configuration fields); strings or Python values.
        config: The ``-c`` configuration name.
        output_dir: Where the run directory is made; when None, a temporary directory removed on return.
        environ: Where ``BATCHCLI_<NAME>`` variables are read from; none are read when None.
    """
    from batchcli.errors import UsageError

    if not os.fspath(target).strip():  # as exec refuses it: Path('') would load the current directory
        raise UsageError(f"target {os.fspath(target)!r} is empty. Give a .py file, a project directory or a job name.")
    if output_dir is not None and not os.fspath(output_dir).strip():
        raise UsageError(
            f"output_dir {os.fspath(output_dir)!r} is empty. Give the directory for the run directories, or None "
            "for a temporary one."
        )
    if not all(isinstance(name, str) for name in (params or {})):
        raise UsageError(f"params must be named by strings (-p NAME=VALUE), got {list(params or {})!r}.")
    from batchcli.journal.results import UnreadableResult, read_results

    if output_dir is None:
        with tempfile.TemporaryDirectory(prefix="batchcli-test-", ignore_cleanup_errors=True) as scratch:
            try:
                return run_job(target, params=params, config=config, output_dir=scratch, environ=environ)
            except UnreadableResult as error:  # its message names a run directory about to be removed
                raise UnreadableResult(
                    f"{error} That run directory is run_job's temporary one, removed now: pass output_dir (pytest's "
                    "tmp_path) to keep it."
                ) from error.__cause__
    from batchcli.load.wiring import Wiring
    from batchcli.run.session import Fresh, RunOptions, Session

    values = {name: raw_values(value) for name, value in (params or {}).items()}
    # Retries that do not wait suit a test; the run records only what the caller passed.
    injected = frozenset() if "backoff_s" in values else frozenset({"backoff_s"})
    values.setdefault("backoff_s", ("0",))
    wiring = Wiring(target=os.fspath(target), config_name=config, values=values)
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, force_terminal=False, color_system=None)
    options = RunOptions(
        output_dir=Path(output_dir),
        console=console,
        progress_interval_s=3600.0,
        handle_signals=False,
        closing_line=False,
        unrecorded=injected,
    )
    result = Session(options).run(Fresh(wiring, environ={} if environ is None else environ))
    assert result is not None, "a fresh run always runs"
    failures = tuple(FailedItem(f.item, f.error_type, f.error_message, f.attempts) for f in result.failures)
    if result.failed > len(failures):  # more than a run holds in memory (FAILURES_KEPT): every one is journaled
        failures = _journaled_failures(result.run_dir)
    return JobOutcome(
        succeeded=result.succeeded,
        failed=result.failed,
        total=result.total,
        unprocessed=result.unprocessed,
        exit_code=result.exit_code,
        status=result.status,
        failures=failures,
        run_dir=result.run_dir,
        output=buffer.getvalue(),
        fatal=result.fatal,
        results=tuple(read_results(result.run_dir)),
    )


def _journaled_failures(run_dir: Path) -> tuple[FailedItem, ...]:
    """Every final failure of a fresh run, from its journal, in the order they failed (inputs as they were, or as
    their JSON form when they could not be pickled)."""
    import json
    import pickle

    from batchcli.journal.rundir import query

    rows = query(run_dir, "SELECT item, item_json, error_type, error_message, attempts FROM failures ORDER BY rowid")
    return tuple(
        FailedItem(json.loads(text) if blob is None else pickle.loads(blob), error_type, message, attempts)
        for blob, text, error_type, message, attempts in rows
    )


def raw_values(value: object) -> tuple[str, ...]:
    """A Python value as the ``-p`` strings that cast back to it: one per element for a list, set or tuple."""
    from batchcli.load.annotations import as_typed
    from batchcli.load.types import quote_element

    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return tuple(quote_element(as_typed(item)) for item in items)
    return (as_typed(value),)
