"""The commands' usage lines as click writes them: ``batchcli resume [OPTIONS] RUN_DIR``.

Typer 0.29 wraps a required argument in braces (``{run_dir}``), which reads as a placeholder nobody
filled in. Here a required argument is its metavar in capitals, an optional one stays in brackets.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand


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


class BatchcliTyper(typer.Typer):
    """The app: every command it registers is a ``BatchcliCommand`` unless it names its own class."""

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or BatchcliCommand, **kwargs)
