"""What a long preparation before a run says: a retry of a million inputs checks that each still loads, then copies
each into its own journal, some 12 s before its display starts, and said nothing meanwhile."""

from __future__ import annotations

from typing import Any, Callable

from rich.console import Console

from batchcli.executors.signals import stop_signals_blocked

SAID_FROM = 10_000
"""Inputs from which a preparation is said: fewer take well under a second."""


class Preparation:
    """A ``Progress`` (``journal/inputs.py``) for the console: on a terminal a spinner that counts, until ``close``;
    otherwise one line as each stage starts (a JSON event with ``--log-format json``)."""

    def __init__(self, console: Console, log_format: str, before: Callable[[], None] = lambda: None) -> None:
        self._console = console
        self._json = log_format == "json" and not console.is_terminal
        self._status: Any = None
        self._said: set[str] = set()
        self._before: Callable[[], None] | None = before
        """Says what the launch has to say first (how many failures a retry takes): it came after the stages."""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total < SAID_FROM:
            return
        if self._before is not None:
            before, self._before = self._before, None
            before()
        what = stage.format(total=total)
        if not self._console.is_terminal or self._console.is_dumb_terminal:  # TERM=dumb draws no spinner
            if stage not in self._said:
                self._said.add(stage)
                self._say(f"{what}, before the run starts...")
            return
        text = f"{what}: {done:,} done"
        if self._status is None:
            self._status = self._console.status(text, spinner="dots")
            with stop_signals_blocked():  # its refresh thread, as the display's: a Ctrl-C goes to the main thread
                self._status.start()
        else:
            self._status.update(text)

    def _say(self, text: str) -> None:
        if self._json:
            from batchcli.run.jsonlog import event_line

            self._console.file.write(event_line("notice", "", text) + "\n")
        else:
            self._console.print(text, highlight=False, markup=False, soft_wrap=True)

    def close(self) -> None:
        """Take the spinner away (before the run's display starts: a console has one live display at a time)."""
        status, self._status = self._status, None
        if status is not None:
            status.stop()
