"""``batchcli results``: a run's results to a file or stdout, and what to say when there are none."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console

from batchcli.errors import UsageError
from batchcli.journal.results import check_format, export, is_group
from batchcli.journal.rundir import journal_path


def export_results(run_dir: Path, fmt: str, output: Path | None) -> None:
    """Check the inputs, then write every result of ``run_dir`` (a run, or a shard group) to ``output`` (stdout when None)."""
    check_format(fmt)
    missing = None
    if is_group(run_dir):
        from batchcli.journal.groupresults import incomplete
        from batchcli.journal.groupview import group_state

        missing = incomplete(group_state(run_dir))  # a damaged group.json: its error, before any file is made
    else:
        journal_path(run_dir)  # not a run directory: its error, before any file is made
    if output is None:
        count = export(run_dir, fmt, sys.stdout)
    else:
        with _progress(output) as progress:
            count = _to_file(run_dir, fmt, output, progress)
    what = "Group" if is_group(run_dir) else "Run"
    if count == 0:
        print(f"{what} {str(run_dir)!r} kept no results: its process() returned None for every item "
              "(or no item succeeded yet).", file=sys.stderr)
    elif output is not None:
        print(f"Wrote {count:,} result(s) to {output}.", file=sys.stderr)
    if missing is not None:
        print(f"Warning: {missing}", file=sys.stderr)


@contextlib.contextmanager
def _progress(output: Path) -> Iterator[Callable[[int], None] | None]:
    """On a terminal, a line that counts the results written while a long export runs (millions take seconds)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with console.status(f"Writing results to {output}", spinner="dots") as status:
        yield lambda count: status.update(f"Writing results to {output}: {count:,} so far")


def _to_file(run_dir: Path, fmt: str, output: Path, progress: Callable[[int], None] | None = None) -> int:
    """Written next to ``output`` and renamed, so a failed export never leaves half a file."""
    if output.is_dir():
        raise UsageError(f"-o {str(output)!r} is a directory. Give -o a file name, e.g. -o {output / ('results.' + fmt)}.")
    parent = output.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"-o {str(output)!r}: directory {str(parent)!r} does not exist. Create it, or give another -o.")
    fd, draft = tempfile.mkstemp(prefix=f".{output.name}.", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            count = export(run_dir, fmt, out, progress)
        os.replace(draft, output)
    except BaseException:
        Path(draft).unlink(missing_ok=True)
        raise
    return count
