"""The console a command prints its output with on stdout (``runs``, ``show``, ``watch``, ``exec --dry-run``...)."""

from __future__ import annotations

from rich.console import Console

from batchcli.errors import ReaderLeft


class StdoutConsole(Console):
    """A rich console on stdout whose reader may stop reading early (``| head``): that ends the command as
    ``ReaderLeft`` (exit 0), where rich's own handler raised ``SystemExit(1)``, the code for failed items."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # what it still holds for the pipe is moot
        raise ReaderLeft from None


def stdout_console() -> Console:
    """The console for a command's output on stdout."""
    return StdoutConsole(highlight=False)
