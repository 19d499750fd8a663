"""Params and configuration fields from ``BATCHCLI_<NAME>`` environment variables, so secrets stay out of shell history."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PREFIX = "BATCHCLI_"
"""Every variable batchcli reads starts with this."""


def variable(name: str) -> str:
    """The environment variable for ``-p`` name ``name``: ``db.host`` -> ``BATCHCLI_DB__HOST``."""
    return PREFIX + name.upper().replace(".", "__")


def from_environment(names: Iterable[str], environ: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """The raw value of every name in ``names`` that has a variable in ``environ``.

    Other ``BATCHCLI_*`` variables (batchcli's own settings, a typo) are ignored. A variable
    holds one raw value, as one ``-p`` would: collections are comma-separated.
    """
    found: dict[str, tuple[str, ...]] = {}
    for name in names:
        value = environ.get(variable(name))
        if value is not None:
            found[name] = (value,)
    return found
