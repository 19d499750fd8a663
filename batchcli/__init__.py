"""batchcli: run one operation over many items, with retries, progress, resumable runs and a pause shell."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchcli.load.configuration import Configuration
from batchcli.load.inject import inject
from batchcli.load.params import Param
from batchcli.load.secret import Secret
from batchcli.load.service import Service
from batchcli.load.source import Source
from batchcli.load.throttled import Throttled

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator

    from batchcli.journal.results import Result

__version__ = "0.1.0"

__all__ = ["Configuration", "Param", "Secret", "Service", "Source", "Throttled", "__version__", "inject", "read_results"]


def read_results(run_dir: str | os.PathLike[str]) -> Iterator[Result]:
    """Yield what ``process`` returned for each succeeded item of a run, in source order, one per item.

    Each is a ``Result`` with ``ordinal``, ``key`` (the Source's ``item_key``, or None) and ``value``.
    Lazy, with flat memory: ``pandas.DataFrame(r.value for r in read_results(run_dir))``. See
    ``batchcli.journal.results.read_results``.
    """
    from batchcli.journal.results import read_results as read  # the journal is not loaded for `import batchcli`

    return read(run_dir)
