"""One Session: load -> wire -> run -> report, sequenced once for ``exec``, ``resume``, ``retry`` and ``testing.run_job``.

An entry point only says what to run (a ``Launch``: a fresh job, or one rebuilt from a run's journal)
and how the run presents itself (``RunOptions``); the Session does the rest in one order:

1. take the stop signals (``EarlySignals``): one while the user's code loads abandons the loading;
2. load the project and wire the job (``load_project``, ``build_job``), then ask the launch what the
   run carries on from (a resumed journal, a retry's failed inputs);
3. check the executor settings, make the run directory (or take the resumed one) and bind the
   configuration's runtime fields: from here a signal is only remembered;
4. drive the run (``run.driver.Run``), then report: the closing line and the result.
"""

from __future__ import annotations

import itertools
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Protocol

from rich.console import Console

from batchcli.errors import StoppedBeforeStart, UsageError
from batchcli.journal.inputs import Progress
from batchcli.journal.resumption import Continuation, Notice, fresh_continuation
from batchcli.journal.selection import Selection
from batchcli.journal.rundir import check_output_dir, unusable_output_dir
from batchcli.run.interrupts import EarlySignals, StartInterrupted
from batchcli.run.preparing import Preparation
from batchcli.run.report import RunResult, print_closing

if TYPE_CHECKING:
    from batchcli.load.wiring import Job, Wiring


PROGRESS_INTERVAL_MIN_S = 0.1


def progress_interval(environ: Mapping[str, str] = os.environ) -> float:
    """``BATCHCLI_PROGRESS_INTERVAL`` (10 s when unset): read when a command builds its options, not at import, and
    checked, since a word made every command fail with a traceback and 0 printed thousands of lines a second."""
    text = environ.get("BATCHCLI_PROGRESS_INTERVAL", "10")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not PROGRESS_INTERVAL_MIN_S <= value < math.inf:
        raise UsageError(
            f"BATCHCLI_PROGRESS_INTERVAL={text!r} is not a number of seconds between progress lines: give one of "
            f"{PROGRESS_INTERVAL_MIN_S:g} or more, e.g. BATCHCLI_PROGRESS_INTERVAL=30, or unset it for 10."
        )
    return value


@dataclass(frozen=True)
class RunOptions:
    """How a run presents itself; none of it changes what is processed."""

    output_dir: Path = Path("batchcli_outputs")
    """Where run directories are created (``-d``)."""
    verbosity: int = 0
    """0 default, 1 for ``-v``, 2 for ``-vv``."""
    console: Console = field(default_factory=lambda: Console(stderr=True))
    """Where progress and log lines go."""
    progress_interval_s: float = field(default_factory=progress_interval)
    """Seconds between plain progress lines when the console is not a terminal."""
    handle_signals: bool = True
    """Install SIGINT/SIGTERM handlers (only possible on the main thread)."""
    pause_shell: bool = True
    """On a terminal, Ctrl-C pauses the run and opens the pause shell (``--no-shell`` turns it off)."""
    closing_line: bool = True
    """Print the closing line (``Finished: ... Run directory: ...``); ``testing.run_job`` does not."""
    log_format: str = "text"
    """``json``: one JSON object per log line in the log file, and on stderr without a terminal."""
    unrecorded: frozenset[str] = frozenset()
    """Names whose values the run uses but never records (``testing.run_job``'s own ``backoff_s=0``): they
    stay out of the journal (a resume goes without them) and out of ``summary.json``."""


class Launch(Protocol):
    """What a Session runs: a fresh job (``Fresh``), or one from an earlier run (``resumption.Resume``/``Retry``)."""

    notices: list[Notice]
    """Lines to print before the run (or instead of it, when there is nothing to do)."""
    stopped_outcome: str
    """What a stop signal during loading leaves behind, for the ``Stopped:`` message."""
    dry_run: bool
    """``exec --dry-run``: stop after wiring and show what would run; no run directory, no hook."""
    progress: Progress | None
    """Told how a long check in ``carry_on`` goes (a retry's inputs); set by the Session."""

    def wiring(self) -> tuple[Wiring, Mapping[str, str] | None] | None:
        """What to build, and where ``BATCHCLI_*`` values are read (None: ``os.environ``); None: nothing to do."""

    def carry_on(self, job: Job) -> Continuation | None:
        """Once the job is built: what the run continues from; None: nothing to do."""

    def abandon(self) -> None:
        """The run will not start after all: release what ``wiring`` took (a resumed journal's lock)."""


@dataclass
class Fresh:
    """``batchcli exec`` and ``testing.run_job``: a new run of the job ``wiring`` names."""

    target: Wiring
    """The job to build."""
    environ: Mapping[str, str] | None = None
    """Where ``BATCHCLI_*`` values are read; None for ``os.environ``."""
    notices: list[Notice] = field(default_factory=list)
    stopped_outcome: str = "nothing ran and no run directory was made."
    selection: Selection | None = None
    """``--limit``, ``--sample``, ``--skip-done-in``: which items of the source to take (None: all)."""
    dry_run: bool = False
    """``--dry-run``: show what would run, with no run directory and no hook but the constructors."""
    progress: Progress | None = None
    """A fresh run checks nothing long before it starts."""

    def wiring(self) -> tuple[Wiring, Mapping[str, str] | None]:
        """The wiring as given."""
        return self.target, self.environ

    def carry_on(self, job: Job) -> Continuation:
        """A fresh run carries on from nothing (but the items ``--skip-done-in`` runs did)."""
        return fresh_continuation(job, self.selection, self.dry_run, self.notices)

    def abandon(self) -> None:
        """Nothing is held."""


class Session:
    """Sequences one run's stages; every entry point goes through ``run``."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options

    def run(self, launch: Launch) -> RunResult | None:
        """Load, wire, run and report ``launch``; None when there was nothing to do (its notices say why).

        Raises a ``BatchcliError`` for bad input (before any run directory is made), and
        ``StoppedBeforeStart`` when a stop signal arrived while the job was being loaded.
        """
        early = EarlySignals.install() if self.options.handle_signals else None
        preparation = Preparation(self.options.console, self.options.log_format, before=lambda: self._notify(launch))
        launch.progress = preparation
        try:
            return self._run(launch, early, preparation)
        except StartInterrupted as stop:
            raise StoppedBeforeStart(stop.name, launch.stopped_outcome) from None
        finally:
            preparation.close()
            if early is not None:
                early.uninstall()

    def _run(self, launch: Launch, early: EarlySignals | None, preparation: Preparation) -> RunResult | None:
        from batchcli.executors.base import check_executor
        from batchcli.journal.writer import check_recordable
        from batchcli.load.configuration import bind_runtime
        from batchcli.load.project import load_project
        from batchcli.load.wiring import build_job
        from batchcli.run.driver import Run
        from batchcli.run.metrics import open_metrics

        options = self.options
        # The user's imports and constructors may block (a network): a stop signal abandons them.
        with early.aborting() if early is not None else nullcontext():
            wanted = launch.wiring()
            if wanted is None:
                self._notify(launch)
                return None
            wiring, environ = wanted
            try:
                job = build_job(load_project(wiring.target, by_name=wiring.by_name), wiring, environ=environ)
                continuation = launch.carry_on(job)
            except UsageError as error:
                launch.abandon()
                explain = getattr(launch, "explained", None)  # resume and retry: a value the run recorded?
                if explain is None:
                    raise
                raise explain(error) from error.__cause__
            except BaseException:
                launch.abandon()
                raise
        self._notify(launch)
        if continuation is None:
            return None
        metrics = None
        if launch.dry_run:
            from batchcli.run.preview import preview

            with early.aborting() if early is not None else nullcontext():  # counting reads the source: it may block
                preview(job, continuation)
            return None
        try:
            check_recordable(wiring.target)  # nor for a path the journal cannot keep
            check_executor(job.config)  # bad executor settings are bad input: no run directory for them
            metrics = open_metrics(job.config, job.project.name)  # so is a busy metrics_port
            made = _missing(options.output_dir)
            run_dir, started_at = self._place(continuation, job.project.name)
            # Absolute from here on: the job's code may change directory, and the run writes its directory by
            # path (summary.json, failed.jsonl, kernel.json) until the end.
            run_dir = run_dir.absolute()
            bind_runtime(job.config, output_dir=options.output_dir, run_dir=run_dir, started_at=started_at)
        except BaseException:
            if metrics is not None:
                metrics.close()
            launch.abandon()
            raise
        # Values read from BATCHCLI_* variables are recorded and shipped like -p values, so resume, retry
        # and workers never depend on the environment they happen to run in.
        run = Run(job, wiring.with_environment(job.environment), options, run_dir, started_at, continuation)
        run.preparing = preparation  # a retry copies its inputs as the run makes its journal
        if metrics is not None:
            metrics.watch(run)
        try:
            result = run.execute(early)
        except BaseException:
            if continuation.journal is None and not run_dir.exists():  # a new run that did not start removed its own
                _remove_empty(made)  # directory: the ones made for it go too (a retry's parent moved away meanwhile)
            raise
        finally:
            for lock in continuation.held:  # a retry holds the runs it retries for its whole run
                lock.release()
            if metrics is not None:
                metrics.close()
        if options.closing_line:
            print_closing(result, options.console, options.log_format)
        return result

    def _place(self, continuation: Continuation, job_name: str) -> tuple[Path, datetime]:
        """The run directory and when the run started: new ones, or a resumed run's own."""
        resumed = continuation.journal
        if resumed is not None:  # a resumed run keeps its directory and the time it first started
            return resumed.run_dir, datetime.fromtimestamp(resumed.started_at).astimezone()
        started_at = datetime.now().astimezone()
        if continuation.run_dir is not None:  # a shard's directory is named by its group and index
            from batchcli.journal.groups import make_shard_dir

            make_shard_dir(continuation.run_dir)
            return continuation.run_dir, started_at
        return make_run_dir(self.options.output_dir, job_name, started_at), started_at

    def _notify(self, launch: Launch) -> None:
        console = self.options.console
        for notice in launch.notices:
            if self.options.log_format == "json" and not console.is_terminal:  # stderr carries JSON lines only
                from batchcli.run.jsonlog import event_line
                from rich.text import Text

                text = Text.from_markup(notice.text).plain if notice.markup else notice.text
                console.file.write(event_line("notice", "", text) + "\n")
                continue
            console.print(notice.text, highlight=False, markup=notice.markup, soft_wrap=notice.soft_wrap)
        launch.notices.clear()


def _missing(output_dir: Path) -> list[Path]:
    """The directories ``make_run_dir`` would create to reach ``output_dir``, deepest first."""
    missing = []
    for path in (output_dir, *output_dir.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_empty(made: list[Path]) -> None:
    """Remove the directories made for a run that did not start, deepest first, each only if empty. A retry whose
    group was moved away as it started made an empty one in its place, and moving the group back nested it in there."""
    for path in made:
        try:
            path.rmdir()
        except OSError:
            return


def make_run_dir(output_dir: Path, job_name: str, started: datetime) -> Path:
    """``<output_dir>/<timestamp>_<job>``, owner-only, unique even for runs started in the same second."""
    check_output_dir(output_dir)
    stem = f"{started.strftime('%Y-%m-%dT%H-%M-%S')}_{job_name}"
    for n in itertools.count(1):
        path = output_dir / (stem if n == 1 else f"{stem}_{n}")
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
        except OSError as error:  # not writable, read-only file system, disk full: the same fix
            raise unusable_output_dir(output_dir, error) from error
    raise AssertionError("unreachable")
