"""Docstrings and defaults full of square brackets, which rich would read as markup: [/] [bold] [dask]."""

from __future__ import annotations

from dataclasses import dataclass

from batchcli import Configuration, Param, Service, Source, inject


@dataclass(kw_only=True)
class BracketConfig(Configuration):
    """A configuration whose own field documents itself in brackets."""

    pattern: str = "[a-z]+"
    """Keep names matching this; write [/] to close, [bold] to shout, like pip install 'x[dask]'."""


@inject
class Names(Source[str]):
    """One name.

    Args:
        prefix: Prepended to each name, e.g. [bold]NAME[/] or [/] alone.
    """

    def __init__(self, prefix: Param[str] = "[x]") -> None:
        self.prefix = prefix

    def __iter__(self):
        yield f"{self.prefix}a"


@inject
class Echo(Service[str]):
    """Does nothing with each name."""

    def process(self, item: str) -> None:
        pass
