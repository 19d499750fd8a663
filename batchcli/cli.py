"""The command line: parses, calls the stages, and turns domain errors into messages and exit codes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer

from batchcli.errors import BatchcliError

app = typer.Typer(
    name="batchcli",
    help="Run one operation over many items: retries, progress, failed-input records, resumable runs.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)



@app.callback()
def root() -> None:
    """Run one operation over many items: retries, progress, failed-input records, resumable runs."""


PARAM_HELP = "A param or configuration field: NAME=VALUE. Repeat for several."
OUTPUT_HELP = "Directory that holds the run directories."


def parse_values(pairs: list[str]) -> dict[str, tuple[str, ...]]:
    """``["a=1", "b=2", "a=3"]`` -> ``{"a": ("1", "3"), "b": ("2",)}``; a pair without ``=`` is an error."""
    from batchcli.errors import UsageError

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


def fail(error: BatchcliError) -> NoReturn:
    """Print a domain error as one paragraph on stderr and exit with its code."""
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold red]Error:[/] {error}", markup=True, soft_wrap=True)
    raise typer.Exit(error.exit_code)


@app.command("exec")
def exec_(
    path: str = typer.Argument(..., help="A .py file, a project directory, or an installed job name."),
    param: list[str] = typer.Option([], "--param", "-p", help=PARAM_HELP, metavar="NAME=VALUE"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="The configuration to use (a module in config/)."),
    output_dir: Path = typer.Option(Path("batchcli_outputs"), "--output-dir", "-d", help=OUTPUT_HELP),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More output: -v for info, -vv for debug."),
) -> None:
    """Run a job: every item of its Source through its Service."""
    from rich.markup import escape

    from batchcli.container import Wiring, build_job
    from batchcli.project import load_project
    from batchcli.run import Run, RunOptions

    try:
        wiring = Wiring(target=path, config_name=config, values=parse_values(param))
        job = build_job(load_project(path), wiring)
        options = RunOptions(output_dir=output_dir, verbosity=verbose)
        result = Run(job, wiring, options).execute()
    except BatchcliError as error:
        fail(error)
    console = options.console
    unprocessed = f", {result.unprocessed} unprocessed" if result.unprocessed else ""
    total = "?" if result.total is None else result.total
    console.print(
        f"{result.status.capitalize()}: {result.succeeded} succeeded, {result.failed} failed{unprocessed} "
        f"of {total}. Run directory: {escape(str(result.run_dir))}",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(result.exit_code)


def _report(result: Any, console: Any) -> NoReturn:
    """The closing line of exec, resume and retry, and their exit code."""
    from rich.markup import escape

    unprocessed = f", {result.unprocessed} unprocessed" if result.unprocessed else ""
    total = "?" if result.total is None else result.total
    console.print(
        f"{result.status.capitalize()}: {result.succeeded} succeeded, {result.failed} failed{unprocessed} "
        f"of {total}. Run directory: {escape(str(result.run_dir))}",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(result.exit_code)


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="The run directory of a stopped or crashed run."),
    param: list[str] = typer.Option([], "--param", "-p", help=PARAM_HELP, metavar="NAME=VALUE"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More output: -v for info, -vv for debug."),
) -> None:
    """Continue a stopped or crashed run in its own directory, skipping the items it already settled."""
    from batchcli.resumption import plan_resume
    from batchcli.run import Run, RunOptions

    try:
        plan = plan_resume(run_dir, parse_values(param))
        options = RunOptions(output_dir=run_dir.parent, verbosity=verbose)
        if plan.job is None or plan.wiring is None:
            done = plan.earlier
            options.console.print(
                f"Run {str(run_dir)!r} finished already ({done.succeeded} succeeded, {done.failed} failed); "
                f"nothing to resume.{' Reprocess its failed inputs with: batchcli retry ' + str(run_dir) if done.failed else ''}",
                highlight=False, markup=False, soft_wrap=True,
            )
            raise typer.Exit(0)
        result = Run(plan.job, plan.wiring, options, plan.continuation).execute()
    except BatchcliError as error:
        fail(error)
    _report(result, options.console)


@app.command()
def retry(
    run_dir: Path = typer.Argument(..., help="The run directory whose failed inputs to reprocess."),
    param: list[str] = typer.Option([], "--param", "-p", help=PARAM_HELP, metavar="NAME=VALUE"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-d", help=OUTPUT_HELP + " [default: RUN_DIR's]"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More output: -v for info, -vv for debug."),
) -> None:
    """Reprocess exactly the inputs that failed in RUN_DIR, same job and configuration, in a new run directory."""
    from batchcli.resumption import plan_retry
    from batchcli.run import Run, RunOptions

    try:
        plan = plan_retry(run_dir, parse_values(param))
        options = RunOptions(output_dir=output_dir or run_dir.parent, verbosity=verbose)
        console = options.console
        if plan.job is None or plan.wiring is None or plan.continuation is None:
            console.print(f"Run {str(run_dir)!r} has no failed inputs; nothing to retry.", highlight=False, markup=False)
            raise typer.Exit(0)
        if plan.unsaved:
            console.print(
                f"[yellow]{plan.unsaved} failed input(s) of this run could not be pickled and are left out; "
                "they are in its failed.jsonl.[/]",
                highlight=False,
            )
        if not plan.continuation.items:
            raise typer.Exit(0)
        result = Run(plan.job, plan.wiring, options, plan.continuation).execute()
    except BatchcliError as error:
        fail(error)
    _report(result, console)


@app.command()
def runs(
    output_dir: Path = typer.Option(Path("batchcli_outputs"), "--output-dir", "-d", help=OUTPUT_HELP),
) -> None:
    """List past runs, newest first."""
    from rich.console import Console

    from batchcli.history import find_runs, runs_table

    try:
        found = find_runs(output_dir)
    except BatchcliError as error:
        fail(error)
    console = Console(highlight=False)
    if not found:
        console.print(f"No runs in {str(output_dir)!r}.", markup=False)
        return
    console.print(runs_table(found, console.width))


@app.command()
def show(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Show one run: its summary, its failures grouped by error, and its throughput over time."""
    from rich.console import Console

    from batchcli.history import show_run

    console = Console(highlight=False)
    try:
        view = show_run(run_dir, width=console.width - 30)
    except BatchcliError as error:
        fail(error)
    console.print(view)


def main() -> None:
    """The console script."""
    app(prog_name="batchcli")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
