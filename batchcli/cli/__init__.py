"""The command line: commands, project help, completion, ``init``. A leaf over every other layer."""

from batchcli.cli.commands import app, main

__all__ = ["app", "main"]
