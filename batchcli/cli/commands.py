"""The command line: parses, hands each run to a ``Session``, and lets domain errors show themselves."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.markup import escape

from typer.core import TyperGroup

from batchcli.cli.usageline import BatchcliTyper
from batchcli.errors import BatchcliError, CommandStopped, ReaderLeft, UsageError
from batchcli.load.environment import PREFIX as ENV_PREFIX
from batchcli.run.interrupts import EarlySignals, ends_at_stop_signals

if TYPE_CHECKING:
    from batchcli.run.report import RunResult


class BatchcliGroup(TyperGroup):
    """The commands' group: the one place a domain error is shown and turned into its exit code.

    Caught here rather than left to typer, whose rich handler would draw it in a box: each error
    ``show()``s itself as one ``Error:`` paragraph (``StoppedBeforeStart`` as a ``Stopped:`` line).
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ReaderLeft:
            _reader_left()
        except BatchcliError as error:
            _show(error, ctx)
            if isinstance(error, CommandStopped):
                # What the command had not yet written is moot, and writing it could block the exit for good
                # (a pipe whose reader stopped reading).
                _drop_stdout()
            raise typer.Exit(error.exit_code) from None
        except OSError as error:
            if isinstance(error, PermissionError) and error.filename is not None and not _writing_stdout(error):
                # A path under a directory this user may not enter or read: bad input, not our traceback (nor exit
                # 1, which says that items failed).
                denied = UsageError(
                    f"Permission denied: {str(error.filename)!r}. Check that you may enter and read every directory "
                    "on that path (and write where batchcli writes), or run batchcli as the user who owns it."
                )
                _show(denied, ctx)
                raise typer.Exit(2) from None
            if error.errno == errno.ENAMETOOLONG:  # a path argument the system cannot even look up
                too_long = UsageError(
                    f"The path {error.filename or ''!r} is too long for this system (each name in a path may have at "
                    "most 255 bytes, the whole path 4096). Give a shorter path."
                )
                _show(too_long, ctx)
                raise typer.Exit(2) from None
            if isinstance(error, BrokenPipeError) and _writing_stdout(error):  # typer.echo's reader left (| head)
                _reader_left()
            if not _writing_stdout(error):
                raise  # not ours to word (another pipe broke: click ends quietly, with exit 1)
            # `runs > /dev/full`, a full disk under a redirect: one line, not our traceback.
            print(f"Error: cannot write the output ({error.strerror or error}).", file=sys.stderr)
            _drop_stdout()  # what stays buffered would fail again, noisily, at exit
            raise typer.Exit(1) from None


JSON_ERRORS = "batchcli.json_errors"
"""``ctx.meta`` key, set by ``--log-format json``: the command's error is a JSON line on stderr (``_show``)."""


def _show(error: BatchcliError, ctx: Any) -> None:
    """Show ``error`` as its paragraph; with ``--log-format json`` and stderr not a terminal, as an ``error`` event.

    The docs promise JSON lines only on stderr then, and an error before the run starts (a bad ``-p``, a missing
    path, a busy metrics port) was the one plain line a log collector got, and could not parse.
    """
    if not ctx.meta.get(JSON_ERRORS) or _is_terminal(sys.stderr):
        error.show()
        return
    from batchcli.run.jsonlog import event_line

    stopped = error.exit_code >= 128  # a signal the user sent: a Stopped: line in text
    line = event_line(
        "error", "", error.format_message(), level="WARNING" if stopped else "ERROR",
        exit_code=error.exit_code, error_type=type(error).__name__,
    )  # fmt: skip
    with contextlib.suppress(OSError, ValueError):  # as show() does after a hang-up: the exit code still says it
        print(line, file=sys.stderr, flush=True)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _reader_left() -> NoReturn:
    """End a command whose stdout reader left (``| head``) as ``ReaderLeft`` does: quietly, with exit 0. What stdout
    still buffers goes to /dev/null, or flushing it failed again at exit ("Exception ignored ... BrokenPipeError")."""
    _drop_stdout()
    raise typer.Exit(ReaderLeft.exit_code)


def _drop_stdout() -> None:
    """Send what stdout still holds, and anything written to it from here on, to /dev/null."""
    with contextlib.suppress(OSError, ValueError):  # ValueError: a stream with no descriptor (CliRunner's)
        stdout = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout)
        os.close(devnull)


def _writing_stdout(error: OSError) -> bool:
    """Whether ``error`` came from writing the command's output to stdout (rich's console or ``typer.echo``)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    frame = tb.tb_frame
    stream = frame.f_locals.get("self")
    file = getattr(stream, "file", None) if stream is not None else None
    if file is sys.stdout or stream is sys.stdout:
        return True
    return frame.f_code.co_name == "echo" and frame.f_locals.get("file") in (None, sys.stdout)


app = BatchcliTyper(
    cls=BatchcliGroup,
    name="batchcli",
    help="Run one operation over many items: retries, progress, failed-input records, resumable runs.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)



@app.callback()
def root() -> None:
    """Run one operation over many items: retries, progress, failed-input records, resumable runs."""


PARAM_HELP = "A param or configuration field (db.host for a nested one): NAME=VALUE. Repeat for several."
OUTPUT_HELP = "Directory that holds the run directories."
NO_SHELL_HELP = "Ctrl-C stops the run gracefully instead of opening the pause shell."
SHARD_HELP = (
    "Process only shard I of N (0-based) of the source, as one run of a group; auto/N takes I from "
    "JOB_COMPLETION_INDEX."
)
GROUP_HELP = "The group id of the shards (default: derived from the job, its params and N)."
LOG_FORMAT_HELP = "json: one JSON object per log line, in the run's log file and (without a terminal) on stderr."


def _log_format(value: str) -> str:

    if value not in ("text", "json"):
        raise UsageError(f"--log-format {value!r} is not a log format. Use --log-format text (the default) or json.")
    return value


def _errors_as_json(ctx: typer.Context, value: str) -> str:
    """``--log-format``'s callback: from json on, the command's error is a JSON line too (``_show``)."""
    if value == "json":
        ctx.meta[JSON_ERRORS] = True
    return value


def parse_values(pairs: list[str]) -> dict[str, tuple[str, ...]]:
    """``["a=1", "b=2", "a=3"]`` -> ``{"a": ("1", "3"), "b": ("2",)}``; a pair without ``=`` is an error."""

    values: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(
                f"-p {pair!r} is not NAME=VALUE. Write it as -p {name or 'name'}=VALUE "
                "(quote the whole pair if the value has spaces)."
            )
        values.setdefault(name, []).append(value)
    return {k: tuple(v) for k, v in values.items()}


def output_path(raw: str) -> Path:
    """The ``-d`` value as a path; an empty one is an error (``Path('')`` would silently mean ``.``)."""

    if not raw.strip():
        raise UsageError(
            f"-d {raw!r} is empty. Give the directory that holds the run directories, e.g. -d batchcli_outputs "
            "(or -d . for the current directory)."
        )
    from batchcli.journal.rundir import JOURNAL_NAME

    path = Path(raw)
    if (path / JOURNAL_NAME).is_file():  # new runs went inside that run's directory, where runs never listed them
        raise UsageError(
            f"-d {raw!r} is a run directory, not the directory that holds run directories: give its parent, "
            f"-d {str(path.absolute().parent)!r}. (To see that run: batchcli show {raw})"
        )
    return path


def _complete_param(ctx: typer.Context, incomplete: str) -> list[str]:
    from batchcli.cli.completion import command_line, complete_values

    return complete_values(*command_line(ctx.params, ctx.args), incomplete)


def _complete_config(ctx: typer.Context, incomplete: str) -> list[str]:
    from batchcli.cli.completion import command_line, complete_configs

    return complete_configs(command_line(ctx.params, ctx.args)[0], incomplete)


EXEC_HELP = f"""Run a job: every item of its Source through its Service.

PATH is a .py file, a project directory, an installed job (see `batchcli list`) or a module name.
With PATH (and -c), --help also lists the job's params and configuration fields.

Every -p name can also come from the environment as {ENV_PREFIX}<NAME>: upper-case, dots as __
(e.g. {ENV_PREFIX}DB__PASSWORD for db.password); -p wins over the environment.
"""


@app.command("exec", help=EXEC_HELP, context_settings={"help_option_names": []})
def exec_(
    ctx: typer.Context,
    path: str | None = typer.Argument(
        None, metavar="PATH", help="A .py file, a project directory, an installed job name, or a module.", show_default=False
    ),
    param: list[str] = typer.Option(
        [], "--param", "-p", help=PARAM_HELP, metavar="NAME=VALUE", autocompletion=_complete_param, show_default=False
    ),
    config: str | None = typer.Option(
        None, "--config", "-c", help="The configuration to use (a module in config/).", autocompletion=_complete_config
    ),
    output_dir: str = typer.Option("batchcli_outputs", "--output-dir", "-d", help=OUTPUT_HELP, metavar="DIR"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More output: -v for info, -vv for debug."),
    no_shell: bool = typer.Option(False, "--no-shell", help=NO_SHELL_HELP),
    shard: str | None = typer.Option(None, "--shard", help=SHARD_HELP, metavar="I/N"),
    group: str | None = typer.Option(None, "--group", help=GROUP_HELP, metavar="ID"),
    log_format: str = typer.Option(
        "text", "--log-format", help=LOG_FORMAT_HELP, metavar="text|json", callback=_errors_as_json
    ),
    show_help: bool = typer.Option(
        False, "--help", help="Show this message and exit; with PATH, also the job's params and fields.", show_default=False
    ),
    limit: int | None = typer.Option(None, "--limit", help="Try the job on the first N items only.", metavar="N"),
    sample: float | None = typer.Option(
        None, "--sample", help="Try the job on a reproducible sample: this fraction of the items, e.g. 0.1.", metavar="FRACTION"
    ),
    seed: int | None = typer.Option(None, "--seed", help="Which --sample to take (default 0).", metavar="S"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Load and wire the job, show what would run, and exit: no setup(), no process(), no run directory."
    ),
    skip_done_in: list[Path] = typer.Option(
        [], "--skip-done-in", help="Skip items whose item_key succeeded in this run directory. Repeat for several.",
        metavar="RUN_DIR", show_default=False,
    ),
) -> None:
    from batchcli.journal.groups import ShardStart, check_group_id
    from batchcli.journal.shards import parse_shard
    from batchcli.journal.selection import selection_from_options
    from batchcli.load.wiring import Wiring
    from batchcli.run.session import RunOptions, Session

    if show_help:
        _exec_help(ctx, path, config)
    if path is None:
        ctx.fail("Missing argument 'PATH': give a .py file, a project directory or an installed job name.")
    if not path.strip():  # Path('') is '.': the current directory was loaded as a project

        raise UsageError(
            f"PATH {path!r} is empty. Give a .py file, a project directory (. for the current one) or an installed "
            "job name, e.g. batchcli exec job.py."
        )
    _note_shadowed_job(path)
    options = RunOptions(
        output_dir=output_path(output_dir), verbosity=verbose, pause_shell=not no_shell, log_format=_log_format(log_format)
    )
    wiring = Wiring(target=path, config_name=config, values=parse_values(param))
    request = None if shard is None else parse_shard(shard)
    selection = selection_from_options(limit, sample, seed, skip_done_in)
    launch = ShardStart(
        wiring, request, None if group is None else check_group_id(group), options.output_dir, selection, dry_run
    )
    _exit(Session(options).run(launch), options.console)


def _exit(result: RunResult | None, console: Any) -> NoReturn:
    """Exit with the run's code (0 when there was nothing to run)."""
    if result is None:
        raise typer.Exit(0)
    if result.threads_left:
        # A hard stop gave up on sync items still running in threads; everything is saved, so leave
        # now rather than let the interpreter wait for those threads at exit.
        console.file.flush()
        sys.stdout.flush()
        os._exit(result.exit_code)
    raise typer.Exit(result.exit_code)


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="The run directory of a stopped or crashed run."),
    param: list[str] = typer.Option([], "--param", "-p", help=PARAM_HELP, metavar="NAME=VALUE"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More output: -v for info, -vv for debug."),
    no_shell: bool = typer.Option(False, "--no-shell", help=NO_SHELL_HELP),
    log_format: str = typer.Option(
        "text", "--log-format", help=LOG_FORMAT_HELP, metavar="text|json", callback=_errors_as_json
    ),
    whole_source: bool = typer.Option(
        False, "--all", help="Carry a trial run (--limit, --sample) on to the whole source, skipping what it did."
    ),
) -> None:
    """Continue a stopped or crashed run in its own directory, skipping the items it already settled."""
    from batchcli.journal.resumption import Resume
    from batchcli.run.session import RunOptions, Session

    options = RunOptions(
        output_dir=run_dir.parent, verbosity=verbose, pause_shell=not no_shell, log_format=_log_format(log_format)
    )
    _exit(Session(options).run(Resume(run_dir, parse_values(param), whole_source=whole_source)), options.console)


ERROR_TYPE_HELP = "Only failures of this exception type or a subclass (ValueError, httpx.HTTPError, ...)."
MATCH_HELP = "Only failures whose error message matches this regular expression."
SINCE_HELP = "Only items that failed at or after this ISO date/time (local time unless it has an offset)."
UNTIL_HELP = "Only items that failed before this ISO date/time."


@app.command()
def retry(
    run_dir: Path = typer.Argument(..., help="The run directory whose failed inputs to reprocess."),
    param: list[str] = typer.Option([], "--param", "-p", help=PARAM_HELP, metavar="NAME=VALUE"),
    output_dir: str | None = typer.Option(
        # Escaped: typer reads help as rich markup, where [default: ...] would be a style tag and vanish.
        None, "--output-dir", "-d", help=escape(OUTPUT_HELP + " [default: RUN_DIR's]"), metavar="DIR"
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More output: -v for info, -vv for debug."),
    no_shell: bool = typer.Option(False, "--no-shell", help=NO_SHELL_HELP),
    shard: str | None = typer.Option(None, "--shard", help="With a group: retry only shard I/N.", metavar="I/N"),
    log_format: str = typer.Option(
        "text", "--log-format", help=LOG_FORMAT_HELP, metavar="text|json", callback=_errors_as_json
    ),
    error_type: str | None = typer.Option(None, "--error-type", help=ERROR_TYPE_HELP, metavar="TYPE"),
    match: str | None = typer.Option(None, "--match", help=MATCH_HELP, metavar="REGEX"),
    since: str | None = typer.Option(None, "--since", help=SINCE_HELP, metavar="WHEN"),
    until: str | None = typer.Option(None, "--until", help=UNTIL_HELP, metavar="WHEN"),
    limit: int | None = typer.Option(None, "--limit", help="At most N failures: the first in each session's source order, earliest session first.", metavar="N"),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the failures that would be retried, and exit."),
) -> None:
    """Reprocess exactly the inputs that failed in RUN_DIR (a run, or every shard of a group), in a new run directory."""
    from batchcli.journal.groups import later_retries_of, retry_launch, retry_target
    from batchcli.journal.matching import failure_filter
    from batchcli.journal.rundir import quoted
    from batchcli.run.session import RunOptions, Session

    wanted = failure_filter(error_type, match, since, until, limit)
    if dry_run:
        from batchcli.journal.history import show_failures
        from batchcli.stdout import stdout_console

        given = sorted(parse_values(param)) if param else []  # a malformed -p is refused first, as the retry does
        target = retry_target(run_dir, shard)  # the shard's failures only, as the retry takes them
        again = "" if shard is None else f" --shard {shard}"
        with ends_at_stop_signals("retry --dry-run"):
            console = stdout_console()
            later = later_retries_of(target)  # as the retry does: leave out what later retries did
            wanted = later.applied(wanted)
            for notice in later.notices():
                console.print(notice.text, markup=notice.markup, highlight=False, soft_wrap=True)
            console.print(show_failures(target, wanted, retry=(run_dir, again)), soft_wrap=True)
        unused = f" The -p values given ({', '.join(given)}) were not checked: the retry checks them." if given else ""
        typer.echo(f"Dry run: nothing was retried.{unused}")
        raise typer.Exit(0)
    launch, home = retry_launch(run_dir, parse_values(param), shard, wanted)
    output = home if output_dir is None else output_path(output_dir)
    if output_dir is not None:  # the command its messages suggest puts the retry where this one would go
        launch.again += f" -d {quoted(output_dir)}"
    options = RunOptions(output_dir=output, verbosity=verbose, pause_shell=not no_shell, log_format=_log_format(log_format))
    _exit(Session(options).run(launch), options.console)


@app.command()
def runs(
    output_dir: str = typer.Option("batchcli_outputs", "--output-dir", "-d", help=OUTPUT_HELP, metavar="DIR"),
) -> None:
    """List past runs, newest first; a group of shards is one line, with its shards under it."""
    from batchcli.journal.groupview import listing
    from batchcli.journal.history import runs_table
    from batchcli.stdout import stdout_console

    with ends_at_stop_signals("runs"):
        found = listing(output_path(output_dir))
        console = stdout_console()
        if not found:
            console.print(f"No runs in {str(output_dir)!r}.", markup=False)
            return
        console.print(runs_table(found, console.width))


@app.command()
def show(
    run_dir: Path = typer.Argument(..., help="A run directory, or a group of shards."),
    failures: bool = typer.Option(
        False, "--failures", help="List the failures (input, error, attempts, when) that retry would take."
    ),
    error_type: str | None = typer.Option(None, "--error-type", help=ERROR_TYPE_HELP + " With --failures.", metavar="TYPE"),
    match: str | None = typer.Option(None, "--match", help=MATCH_HELP + " With --failures.", metavar="REGEX"),
    since: str | None = typer.Option(None, "--since", help=SINCE_HELP + " With --failures.", metavar="WHEN"),
    until: str | None = typer.Option(None, "--until", help=UNTIL_HELP + " With --failures.", metavar="WHEN"),
    limit: int | None = typer.Option(None, "--limit", help="At most N failures. With --failures.", metavar="N"),
) -> None:
    """Show one run (or a group of shards): its summary, its failures grouped by error, and its throughput."""
    from batchcli.journal.groups import is_group
    from batchcli.journal.groupview import show_group
    from batchcli.journal.history import show_run
    from batchcli.stdout import stdout_console

    console = stdout_console()
    with ends_at_stop_signals("show"):
        if failures or any(v is not None for v in (error_type, match, since, until, limit)):
            from batchcli.journal.groups import later_retries_of
            from batchcli.journal.history import show_failures
            from batchcli.journal.matching import failure_filter

            wanted = failure_filter(error_type, match, since, until, limit)
            later = later_retries_of(run_dir)  # the failures retry would take: not those a later retry did
            for notice in later.notices():
                console.print(notice.text, markup=notice.markup, highlight=False, soft_wrap=True)
            console.print(show_failures(run_dir, later.applied(wanted)), soft_wrap=True)
            return
        view = show_group(run_dir) if is_group(run_dir) else show_run(run_dir, width=console.width - 30)
        console.print(view)


@app.command()
def watch(
    run_dir: Path = typer.Argument(..., help="The run directory of a run (live or not)."),
    interval: float = typer.Option(1.0, "--interval", "-n", help="Seconds between redraws.", min=0.05, max=3600),
    once: bool = typer.Option(False, "--once", help="Print the state once and exit."),
) -> None:
    """Follow a run from any terminal of yours: counts, rate, ETA, in flight, limits, failures. Ctrl-C leaves."""
    from batchcli.cli.watch import watch as watch_run
    from batchcli.stdout import stdout_console

    watch_run(run_dir, stdout_console(), interval, once)


@app.command(context_settings={"ignore_unknown_options": True})
def ctl(
    run_dir: Path = typer.Argument(..., help="The run directory of a live run."),
    command: list[str] = typer.Argument(
        ..., metavar="COMMAND", help="pause | resume | stop | set concurrency=N | set rate_limit=R|none | stats | retry-failed"
    ),
) -> None:
    """Steer a live run from another terminal: pause, resume, stop (resumable), set limits, stats, retry-failed."""
    from batchcli.cli.ctl import RETRIES_GO_ON, control
    from batchcli.stdout import stdout_console

    left = RETRIES_GO_ON.format(run_dir=run_dir) if command[:1] == ["retry-failed"] else ""
    with ends_at_stop_signals(f"ctl {' '.join(command)}", left):
        control(run_dir, command, stdout_console())


@app.command()
def attach(run_dir: Path = typer.Argument(..., help="The run directory of a live run.")) -> None:
    """Pause a live run and open its pause shell (IPython) in this terminal; leaving resumes it. Needs batchcli[attach]."""
    from batchcli.cli.attach import attach as attach_run
    from batchcli.stdout import stdout_console

    attach_run(run_dir, stdout_console())


@app.command()
def results(
    run_dir: Path = typer.Argument(..., help="A run directory, or a shard group's directory."),
    format: str = typer.Option("jsonl", "--format", "-f", help="jsonl (one JSON object per line) or csv."),
    output: str | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout (-: stdout)."),
) -> None:
    """Write what process() returned for each succeeded item, in source order, with its ordinal (and key)."""
    from batchcli.cli.exporting import export_results, left_unfinished

    if output == "-":  # the usual name for stdout: it wrote a file named "-"
        output = None
    if output == "":  # as a Path it would be '.', refused as "a directory" that the user never named
        raise UsageError("-o '' names no file. Give -o a file name, e.g. -o results.jsonl, or leave -o out for stdout.")
    with ends_at_stop_signals("results", left_unfinished(None if output is None else Path(output))):
        export_results(run_dir, format, None if output is None else Path(output))


def _exec_help(ctx: typer.Context, path: str | None, config: str | None) -> NoReturn:
    """typer's help for exec, then (with a PATH) the job's params and configuration fields."""
    text = ctx.get_help()  # typer's rich help prints itself and returns ""
    if text:
        typer.echo(text)
    if path is None:
        raise typer.Exit(0)
    from batchcli.load.project import load_project
    from batchcli.cli.usage import print_project_help, project_help
    from batchcli.stdout import stdout_console

    _note_shadowed_job(path)
    with ends_at_stop_signals("exec --help"):  # loading runs the user's imports, which may block (a network)
        project = load_project(path)
        print_project_help(stdout_console(), project_help(project, config), project.name)
    raise typer.Exit(0)


def _note_shadowed_job(path: str) -> None:
    from batchcli.load.jobs import shadowed_job

    entry = shadowed_job(path)
    if entry is not None:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, highlight=False).print(
            f"[yellow]Note:[/] {escape(repr(path))} is both a path and an installed job (module {escape(entry.module)}); "
            f"running the path. To run the installed job, give its module: batchcli exec {escape(entry.module)}",
            soft_wrap=True,
        )


@app.command("list")
def list_() -> None:
    """List the installed jobs: packages register them in the batchcli.jobs entry-point group."""
    from rich.table import Table
    from rich.text import Text

    from batchcli.load.jobs import GROUP, describe_installed
    from batchcli.stdout import stdout_console
    console = stdout_console()
    with ends_at_stop_signals("list"):  # finding a job's module imports its package, whose code may block
        jobs = describe_installed()
    if not jobs:
        console.print(
            "No installed jobs. A package registers one in its pyproject.toml:\n"
            f'  \\[project.entry-points."{GROUP}"]\n  my_job = "my_package.my_module"',
            soft_wrap=True,
        )
        return
    table = Table(box=None, header_style="dim", padding=(0, 2, 0, 0))
    for column in ("Job", "Module", "Package", "Description"):
        table.add_column(column, no_wrap=column != "Description")
    for job in jobs:
        # Text cells: names and descriptions come from installed packages, not from us, so no markup.
        table.add_row(Text(job.name, style="bold cyan"), Text(job.module), Text(job.package), Text(job.description))
    console.print(table)
    console.print("Run one with: batchcli exec NAME   (its params: batchcli exec NAME --help)", style="dim")


@app.command("init")
def init(
    name: str = typer.Argument(..., help="The new project's directory (its last part must be a Python identifier)."),
) -> None:
    """Create a project directory that runs at once: batchcli exec NAME -c config_dev"""
    from batchcli.cli.scaffold import create_project

    root = create_project(Path(name))
    typer.echo(f"Created {root}/. Run it:\n  batchcli exec {name} -c config_dev\nTest it:\n  pytest {name}")


def main() -> None:
    """Run the CLI (``batchcli.__main__.main`` calls this once it has taken the stop signals)."""
    EarlySignals.install()  # a signal before a command takes over is remembered, not a kill
    _drop_nonsense_width(os.environ)
    try:
        app(prog_name="batchcli")
    except SystemExit as leaving:
        if leaving.code == 1 and _raised_by_rich_on_broken_pipe(leaving):
            # The help, which typer prints with a console of its own: its reader left (`batchcli --help | head -1`).
            # Exit 0 as every other command whose reader left (ReaderLeft), not 1, the code for failed items.
            raise SystemExit(ReaderLeft.exit_code) from None
        raise


def _raised_by_rich_on_broken_pipe(leaving: SystemExit) -> bool:
    """Whether ``leaving`` is rich's ``Console.on_broken_pipe`` ending the process (stdout already sent to devnull)."""
    tb = leaving.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == "on_broken_pipe" and isinstance(leaving.__context__, BrokenPipeError)


def _drop_nonsense_width(environ: Any) -> None:
    """Treat a ``COLUMNS`` that is no width (0, negative, not a number) as unset, so the terminal's width is used.

    rich ignores a negative or non-numeric ``COLUMNS`` but takes ``COLUMNS=0`` at its word and prints nothing:
    every message, errors included, would be lost.
    """
    columns = environ.get("COLUMNS")
    if columns is not None and not (columns.strip().isdigit() and int(columns) > 0):
        del environ["COLUMNS"]


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
