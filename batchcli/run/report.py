"""How a run ended: its result and exit code, its ``summary.json``, and the closing line the CLI prints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchcli import __version__
from batchcli.errors import RunDirGoneError, RunDirWriteError
from batchcli.journal.records import json_form, write_json
from batchcli.journal.rundir import breaker_totals, number
from batchcli.load.project import format_user_traceback
from batchcli.load.secret import mask_texts
from batchcli.outcome import Failure, Tally, error_text

if TYPE_CHECKING:
    from batchcli.journal.selection import Selection
    from batchcli.journal.writer import Journal
    from batchcli.load.wiring import Job, Wiring

EXIT_OK, EXIT_FAILED, EXIT_FATAL, EXIT_STOPPED = 0, 1, 3, 130


@dataclass(frozen=True)
class RunResult:
    """How a run ended."""

    exit_code: int
    """The process exit code (see the README)."""
    status: str
    """finished, stopped or crashed."""
    run_dir: Path
    """The run directory."""
    succeeded: int
    failed: int
    unprocessed: int | None
    """Items neither succeeded nor failed (None when the source's length is unknown)."""
    total: int | None
    failures: list[Failure]
    """Every final failure of this session, input and reason (a resumed run's earlier ones are in its journal)."""
    fatal: BaseException | None = None
    """The error that ended the run early, if any."""
    threads_left: int = 0
    """Threads a hard stop gave up on and left running: those of a sync ``process`` still in an item, plus the
    run's loop thread (``batchcli-loop``) when the Service's code holds it; the CLI does not wait for them."""
    write_error: RunDirWriteError | None = None
    """Why the run stopped when its run directory could not be written (a full disk); the CLI shows it."""
    stop_reason: str = ""
    """Why batchcli itself stopped the run (the circuit breaker gave up), for the closing lines; "" otherwise."""
    breaker: dict[str, float] | None = None
    """What the circuit breaker did in this session (trips, probes, cooldowns, open_s); None when it is off."""
    unrecorded: int = 0
    """Items that settled but could not be journaled before the run stopped on a write error: not in
    ``succeeded`` or ``failed`` (resume processes them again)."""


def result_of(
    run_dir: Path,
    tally: Tally,
    journal: Journal,
    *,
    fatal: BaseException | None,
    stop_requested: bool,
    write_error: RunDirWriteError | None,
    threads_left: int,
    breaker: dict[str, float] | None = None,
    stop_reason: str = "",
    hooks_cut: bool = False,
) -> RunResult:
    """The result and exit code: whole-run counts (earlier sessions included) come from the journal.

    ``hooks_cut``: a stop that timed out left the job's last hooks (``finish()``, ``persist_failed``) unfinished.
    """
    succeeded, failed = journal.succeeded, journal.failed
    unrecorded = 0
    if write_error is not None:  # count what resume will find, not what settled in memory
        succeeded, failed = journal.recorded
        unrecorded = journal.unrecorded
    # Never below 0: a stopped run whose source lost settled items has not counted them into its total yet.
    unprocessed = None if tally.total is None else max(0, tally.total - succeeded - failed)
    if fatal is not None:
        status, code = "crashed", EXIT_FATAL
    elif write_error is not None:
        status, code = "stopped", write_error.exit_code  # 130, resumable; 3 for a run directory that was deleted
    elif stop_requested and unprocessed != 0:
        status, code = "stopped", EXIT_STOPPED
    elif hooks_cut:
        # Every item settled, but finish() (which may flush what the job wrote) never returned: not "finished"
        # with exit 0. A resume settles nothing new and runs setup() and finish() again.
        status, code = "stopped", EXIT_STOPPED
        stop_reason = stop_reason or (
            "every item was settled, but the job's finish() (or persist_failed) had not returned when the stop "
            f"timed out, and was abandoned. Run setup() and finish() again with: batchcli resume {run_dir}"
        )
    elif not tally.exhausted or tally.retrying:
        # Finished means the source ran out and nothing waits to retry; anything else ended early
        # (whatever ended it) and is resumable, never "finished" with items silently dropped.
        status, code = "stopped", EXIT_STOPPED
    else:
        status, code = "finished", EXIT_FAILED if failed else EXIT_OK
    return RunResult(
        exit_code=code,
        status=status,
        run_dir=run_dir,
        succeeded=succeeded,
        failed=failed,
        unprocessed=unprocessed,
        total=tally.total,
        failures=list(tally.failures),
        fatal=fatal,
        threads_left=threads_left,
        write_error=write_error,
        breaker=breaker,
        stop_reason=stop_reason,
        unrecorded=unrecorded,
    )


def write_summary(
    result: RunResult,
    job: Job,
    wiring: Wiring,
    journal: Journal,
    started_at: datetime,
    selection: Selection | None = None,
    unrecorded: frozenset[str] = frozenset(),
) -> None:
    """Write ``summary.json``; raises ``OSError`` when the run directory cannot be written.

    Params are JSON values (``json_form``: a timedelta in seconds, a set as a sorted list, a secret
    masked); ``unrecorded`` names (``testing.run_job``'s own ``backoff_s``) are left out.
    """
    ended = datetime.now().astimezone()
    states = journal.earlier_states()  # each earlier session's own, a killed one's included
    breakers = [state["breaker_counts"] for state in states if isinstance(state.get("breaker_counts"), dict)]
    # A journal older than the live table (or than its breaker counts): the last summary's totals instead.
    last = _last_summary(result) if journal.session_count > 1 and not breakers else {}
    earlier_paused = sum(number(state.get("paused_s")) for state in states) if states else number(last.get("paused_s"))
    paused = earlier_paused + journal.tally.paused_s
    duration = max(0.0, journal.active_s() - paused)  # time spent running, over every session
    fatal = result.fatal
    write_json(
        result.run_dir / "summary.json",
        {
            "job": job.project.name,
            "target": wiring.target,
            "configuration": type(job.config).__name__,
            "params": {k: json_form(v) for k, v in job.public_params().items() if k not in unrecorded},
            "status": result.status,
            "exit_code": result.exit_code,
            "succeeded": result.succeeded,
            "failed": result.failed,
            "unprocessed": result.unprocessed,
            "total": result.total,
            "started_at": started_at.isoformat(),
            "ended_at": ended.isoformat(),
            "duration_s": round(duration, 3),
            "paused_s": round(paused, 3),
            "sessions": journal.session_count,
            "parent": journal.parent,
            "shard": None if journal.shard is None else {"index": journal.shard.index, "count": journal.shard.count},
            "group": None if journal.shard is None else journal.shard.group,
            "items_per_s": round((result.succeeded + result.failed) / duration, 1) if duration > 0 else None,
            "fatal": None
            if fatal is None
            else {
                "type": type(fatal).__qualname__,
                "message": mask_texts(error_text(fatal), journal.tally.secrets),
                "traceback": mask_texts(format_user_traceback(fatal), journal.tally.secrets),
            },
            "breaker": breaker_totals(breakers or [last.get("breaker")], result.breaker),
            "selection": None if selection is None else selection.as_dict(),
            "batchcli_version": __version__,
        },
    )


def _last_summary(result: RunResult) -> dict[str, Any]:
    """The run's last ``summary.json`` (an earlier session's), {} when there is none or it cannot be read."""
    try:
        data = json.loads((result.run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def print_closing(result: RunResult, console: Any, log_format: str = "text") -> None:
    """The closing line of exec, resume and retry (after the write error that stopped the run, if any).

    With ``--log-format json`` and no terminal it is one ``run_ended`` JSON event instead.
    """
    from rich.markup import escape

    if log_format == "json" and not console.is_terminal:
        _print_closing_json(result, console)
        return
    if result.write_error is not None:
        console.print(f"[bold red]Error:[/] {escape(str(result.write_error))}", highlight=False, soft_wrap=True)
    if result.stop_reason:
        console.print(f"[bold red]Stopped:[/] {escape(result.stop_reason)}", highlight=False, soft_wrap=True)
    console.print(f"{_counts(result)} Run directory: {escape(str(_run_dir_now(result)))}", highlight=False, soft_wrap=True)


def _run_dir_now(result: RunResult) -> object:
    """Where the run directory is at the end: its new place when it was moved while the run went on (the closing
    line named the old path, which no longer held it, just below the error that named the new one)."""
    error = result.write_error
    return error.now if isinstance(error, RunDirGoneError) and error.now is not None else result.run_dir


def _counts(result: RunResult) -> str:
    """``Stopped: 64 succeeded, 6 failed, 230 unprocessed of 300.``, and what settled but was never recorded."""
    unprocessed = f", {result.unprocessed} unprocessed" if result.unprocessed else ""
    total = "?" if result.total is None else result.total
    line = f"{result.status.capitalize()}: {result.succeeded} succeeded, {result.failed} failed{unprocessed} of {total}."
    if result.unrecorded:
        # Not after a deleted journal: the error above says the run cannot be resumed.
        gone = isinstance(result.write_error, RunDirGoneError) and result.write_error.exit_code == 3
        again = "." if gone else ": resume processes them again."
        line += f" {result.unrecorded} more settled but could not be recorded{again}"
    return line


def _print_closing_json(result: RunResult, console: Any) -> None:
    from batchcli.run.jsonlog import event_line

    line = event_line(
        "run_ended", result.run_dir.name, _counts(result), level="INFO" if result.exit_code == 0 else "WARNING",
        status=result.status, exit_code=result.exit_code, succeeded=result.succeeded, failed=result.failed,
        unprocessed=result.unprocessed, total=result.total, unrecorded=result.unrecorded, run_dir=str(_run_dir_now(result)),
        error=str(result.write_error) if result.write_error is not None else None, stop_reason=result.stop_reason or None,
    )
    console.file.write(line + "\n")
    console.file.flush()
