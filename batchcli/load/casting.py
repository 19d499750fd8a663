"""Cast ``-p name=value`` strings to the types a Source or Service declares, with messages that say the fix.

The rules live in the type objects of ``types.py``; ``annotations.param_type`` picks the one to ask.
"""

from __future__ import annotations

from batchcli.load.annotations import param_type


def describe(annotation: object) -> str:
    """A short human name for ``annotation``, for messages and ``--help``: ``list of int``, ``int or none``."""
    return param_type(annotation).name


def cast(name: str, raw: list[str], annotation: object) -> object:
    """Cast every value given for param ``name`` (in order) to ``annotation``; CastError says how to fix it.

    Scalars take exactly one value. Collections concatenate all values, each comma-separated:
    ``-p ids=1,2 -p ids=3`` gives ``[1, 2, 3]``; an empty value adds nothing; elements are stripped; an
    element in double quotes may hold commas (``"Smith, J",Doe``, a quote inside doubled, as in CSV);
    a dict pair splits at its first ``:`` and a repeated key keeps the last value. ``T | None``
    reads ``none``/``null`` as None. An annotation batchcli cannot cast raises TypeError.
    """
    return param_type(annotation).cast(name, raw)
