"""The command line: parses, calls the stages, and turns domain errors into messages and exit codes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn, Optional

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
    from rich.markup import escape

    # Escaped: messages quote user values and commands, like pip install 'batchcli[dask]'.
    Console(stderr=True, highlight=False).print(f"[bold red]Error:[/] {escape(str(error))}", markup=True, soft_wrap=True)
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


def main() -> None:
    """The console script."""
    app(prog_name="batchcli")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
