"""``batchcli results``: a run's results to a file or stdout, and what to say when there are none."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import IO
from pathlib import Path

from rich.console import Console

from batchcli.errors import ExportError, ReaderLeft, UsageError
from batchcli.journal.results import check_format, export, is_group
from batchcli.journal.rundir import GROUP_FILE, JOURNAL_NAME, journal_path, pid_alive


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
        missing = _unfinished(run_dir)
    if output is None:
        try:
            count = export(run_dir, fmt, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:
            raise ReaderLeft from None  # it has what it wanted (| head): exit 0, not 1 (items failed)
        except OSError as error:
            raise ExportError(f"Cannot write the results to stdout ({_reason(error)}): what it got is incomplete.") from None
    else:
        with _progress(output) as progress:
            count = _to_file(run_dir, fmt, output, progress)
    if count == 0:
        print(_none_kept(run_dir), file=sys.stderr)
    elif output is not None:
        print(f"Wrote {count:,} result(s) to {output}.", file=sys.stderr)
    if missing is not None:
        print(f"Warning: {missing}", file=sys.stderr)


def left_unfinished(output: Path | None) -> str:
    """What an export stopped halfway leaves: part of the results on stdout or in a device or pipe, else no change."""
    if output is None:
        return "stdout got only part of the results"
    if not output.exists():
        return f"no {str(output)!r} was made (an export is written whole or not at all)"
    if not output.is_file():
        return f"{str(output)!r} got only part of the results"
    return f"{str(output)!r} is as it was (an export is written whole or not at all)"


def _none_kept(run_dir: Path) -> str:
    """Why a run kept no result: no item succeeded (it said process() returned None when every item had failed),
    or every one that did returned None."""
    if is_group(run_dir):
        return f"Group {str(run_dir)!r} kept no results: its process() returned None for every item (or no item succeeded yet)."
    from batchcli.journal.rundir import read_run

    run = read_run(run_dir)
    if run.succeeded == 0:
        yet = " yet" if run.status != "finished" else ""
        if run.failed:  # the command last, with no full stop a copy would take along
            return (
                f"Run {str(run_dir)!r} kept no results: no item succeeded{yet}: {run.failed:,} failed; list them with: "
                f"batchcli show {run_dir} --failures"
            )
        return f"Run {str(run_dir)!r} kept no results: no item succeeded{yet}."
    return f"Run {str(run_dir)!r} kept no results: its process() returned None for each of the {run.succeeded:,} item(s) that succeeded."


def _unfinished(run_dir: Path) -> str | None:
    """What a run's results lack while it has not finished (running, stopped, crashed), or None when it finished."""
    from batchcli.journal.rundir import read_run

    run = read_run(run_dir)
    if run.status == "finished":
        return None
    left = "" if run.unprocessed is None else f", {run.unprocessed:,} item(s) not processed yet"
    if run.status == "running":
        return f"Run {str(run_dir)!r} is still running{left}: these are the results it kept so far."
    return (
        f"Run {str(run_dir)!r} {run.status}{left}: these are the results it kept so far. Continue it with "
        f"`batchcli resume {run_dir}`, then read the results again."
    )


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
    """Written next to ``output`` (the file a symlink points to) and renamed, so a failed export never leaves half a
    file. Something that exists and is not a regular file (a FIFO, ``/dev/null``) is written in place, as a shell
    redirection does: renaming over it replaced the device or pipe with a file, and the reader got nothing."""
    target = output.resolve()
    home = run_dir.resolve()
    if output.is_dir():
        inside = target == home or home in target.parents  # no file of the run's own directory will do
        example = Path(f"results.{fmt}") if inside else output / f"results.{fmt}"
        raise UsageError(f"-o {str(output)!r} is a directory. Give -o a file name, e.g. -o {example}.")
    if target == home or home in target.parents:
        # Its journal holds the results being exported (and the failed inputs, and what resume needs): -o
        # journal.sqlite replaced it with the export, and the run could never be read again.
        raise UsageError(
            f"-o {str(output)!r} is inside the run directory {str(run_dir)!r}, whose files are batchcli's (its "
            f"journal holds these results). Write the export outside it, e.g. -o results.{fmt}."
        )
    if any((target.parent / name).exists() for name in (JOURNAL_NAME, f"{JOURNAL_NAME}.new")):
        # Another run's directory: -o its journal.sqlite or summary.json replaced that run's record with the export.
        raise UsageError(
            f"-o {str(output)!r} is inside the run directory {str(target.parent)!r} of another run, whose files are "
            f"batchcli's (its journal holds that run's results and what resume needs). Write the export outside it, "
            f"e.g. -o results.{fmt}."
        )
    if (target.parent / GROUP_FILE).is_file():
        # A group's directory holds its shards' run directories and group.json: -o group.json replaced the record
        # that makes it a group, and any other file there is one the group's listing takes for a stray.
        raise UsageError(
            f"-o {str(output)!r} is inside the directory of the shard group {str(target.parent)!r}, whose files are "
            f"batchcli's. Write the export outside it, e.g. -o results.{fmt}."
        )
    if target.exists() and not target.is_file():
        try:
            out = open(target, "w", encoding="utf-8", newline="")
        except OSError as error:
            raise ExportError(f"Cannot write the results to {str(output)!r} ({_reason(error)}): what it got is incomplete.") from None
        try:
            count = export(run_dir, fmt, out, progress)
            out.close()
        except OSError as error:
            _discard(out)
            raise ExportError(f"Cannot write the results to {str(output)!r} ({_reason(error)}): what it got is incomplete.") from None
        except BaseException:
            # A stop: closing would flush what the buffer holds into a FIFO whose reader stopped reading, and the
            # exit blocked for good there (a SIGTERM that came while the buffer was not empty).
            _discard(out)
            raise
        return count
    parent = target.parent
    if not parent.is_dir():
        above = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
        if above is not None:  # "does not exist" sent the user looking for a directory that cannot be made there
            raise UsageError(f"-o {str(output)!r}: {str(above)!r} is a file, not a directory. Give another -o.")
        raise UsageError(f"-o {str(output)!r}: directory {str(parent)!r} does not exist. Create it, or give another -o.")
    drafts = f".{target.name}.{socket.gethostname()}."
    _remove_orphans(parent, drafts)
    try:
        fd, draft = tempfile.mkstemp(prefix=f"{drafts}{os.getpid()}.", dir=parent)
    except OSError as error:
        raise ExportError(f"Cannot write the results next to {str(output)!r} ({_reason(error)}). Give another -o.") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            count = export(run_dir, fmt, out, progress)
        os.chmod(draft, _mode_for(target))
        os.replace(draft, target)
    except OSError as error:
        Path(draft).unlink(missing_ok=True)
        left = f"{str(output)!r} is as it was" if target.exists() else f"no {str(output)!r} was made"
        raise ExportError(
            f"Cannot write the results to {str(output)!r} ({_reason(error)}); {left}. Free some space, or give another -o."
        ) from None
    except BaseException:
        Path(draft).unlink(missing_ok=True)
        raise
    return count


def _remove_orphans(parent: Path, drafts: str) -> None:
    """Remove the drafts of exports of this machine that were killed before they could (``kill -9``, a crash): each
    draft is named ``.FILE.HOST.PID.*`` by the process that writes it, and a draft whose process is gone is no one's.
    A draft of another machine (a shared disk) or of a live process is left alone."""
    try:
        names = [entry.name for entry in os.scandir(parent) if entry.name.startswith(drafts)]
    except OSError:
        return
    for name in names:
        pid = name[len(drafts) :].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                (parent / name).unlink()


def _discard(out: IO[str]) -> None:
    """Close ``out`` without writing what its buffer still holds (it goes to /dev/null)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    with contextlib.suppress(OSError, ValueError):
        out.close()


def _mode_for(target: Path) -> int:
    """The mode the export gets, as with ``> FILE``: the replaced file's, else the default for a new file (the
    umask's). The draft is made owner-only, and renaming it kept that: a file shared with a team stopped being readable."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0o077)  # read it (there is no other portable way); a CLI command, no other thread makes files
        os.umask(umask)
        return 0o666 & ~umask


def _reason(error: OSError) -> str:
    return error.strerror or str(error)
