"""The commands' usage lines as click writes them: ``batchcli resume [OPTIONS] RUN_DIR``.

Typer 0.29 wraps a required argument in braces (``{run_dir}``), which reads as a placeholder nobody
filled in. Here a required argument is its metavar in capitals, an optional one stays in brackets, and
the error for a missing one names it the same way (``Missing argument 'RUN_DIR'``, not ``'run_dir'``).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand

try:  # the click typer vendors since 0.2x, as in batchcli.errors
    from typer._click.exceptions import MissingParameter, UsageError
except ImportError:  # pragma: no cover
    from click import MissingParameter, UsageError  # type: ignore[assignment,no-redef,import-not-found,unused-ignore]


class BatchcliCommand(TyperCommand):
    """A command whose usage line names its required arguments as ``RUN_DIR``, not ``{run_dir}``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument) and param.required:
                pieces.append(param.display_name_raw.upper() + ("..." if param.nargs != 1 else ""))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given = list(args)  # the parser takes them out of ``args`` as it goes
        try:
            return super().parse_args(ctx, args)
        except MissingParameter as missing:
            if isinstance(missing.param, TyperArgument) and missing.param_hint is None:
                missing.param_hint = f"'{missing.param.display_name_raw.upper()}'"
            raise
        except UsageError as error:
            split = _split_param(given) if str(error.message).startswith("Got unexpected extra argument") else None
            if split is None:
                raise
            name, value = split
            raise UsageError(
                f"-p {name} {value}: a param's name and value go in one word, joined by '=': -p {name}={value}", ctx
            ) from error


def _split_param(args: list[str]) -> tuple[str, str] | None:
    """``-p NAME VALUE`` (a space for the ``=``) among ``args``: the name and the value, else None."""
    for flag, name, value in zip(args, args[1:], args[2:]):
        if flag in ("-p", "--param") and "=" not in name and not value.startswith("-"):
            return name, value
    return None


class BatchcliTyper(typer.Typer):
    """The app: every command it registers is a ``BatchcliCommand`` unless it names its own class."""

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or BatchcliCommand, **kwargs)
