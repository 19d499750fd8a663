"""The results of a shard group: every shard's, read or exported as one run's.

Shards split by position (``--shard I/N`` of a Source without ``item_key``) run items ``I, I+N, ...``, and a
shard's ordinal ``k`` is source position ``I + k*N``: their results are merged back into source order, with
that position as the ordinal, exactly as an unsharded run's export reads. Keyed shards share items by the
key's hash, so the source position of an item is nowhere on record: their results come shard by shard
(shard 0 first), each in its own source order, with a ``shard`` column beside the key and the ordinal (the
position within the shard's share). Either way memory stays flat: each shard is read a chunk at a time.

A shard that is missing, never started, damaged, stopped, crashed or still running is left out or read as
far as it got, and said so (``incomplete``): results of succeeded items are final whatever the state of
the rest, so the export goes on; the warning names each such shard and how to finish it. Retry runs made
in the group directory are runs of their own: ``batchcli results`` of each gives its results.
"""

from __future__ import annotations

import heapq
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from batchcli.journal.groupview import GroupState, group_state
from batchcli.journal.results import Result, Values, keyed_run, rows, write_rows
from batchcli.journal.rundir import journal_path


def incomplete(state: GroupState) -> str | None:
    """What is missing from a group's results and how to finish it, or None when every shard finished."""
    unfinished = {i: s for i, s in state.statuses.items() if s != "finished"}
    if not unfinished:
        return None
    info = state.info
    shown = ", ".join(f"shard {i} {status}" for i, status in unfinished.items())
    return (
        f"Group {info.group!r} is incomplete ({shown}): these results are the finished shards' and what the "
        f"others kept so far. Start a missing shard with `batchcli exec ... --shard I/{info.shards} --group "
        f"{info.group}` and continue a stopped or crashed one the same way (or `batchcli resume "
        f"{info.group_dir}/shard-I-of-{info.shards}`); then read the results again."
    )


def _shards(group_dir: Path) -> tuple[GroupState, dict[int, Path], bool]:
    """The group's state, its shards that have a journal (by index), and whether its Source is keyed."""
    state = group_state(group_dir)
    found = {i: run.run_dir for i, run in sorted(state.runs.items())}
    keyed = any(keyed_run(journal_path(run_dir)) for run_dir in found.values())
    return state, found, keyed


def _group_rows(found: dict[int, Path], count: int, keyed: bool, pickled: bool) -> Iterator[tuple[Any, ...]]:
    """``(ordinal, key, value, pickled, shard)`` of every shard: merged into source order by position, or shard by shard."""
    if keyed:
        for index, run_dir in found.items():
            for ordinal, key, text, blob in rows(journal_path(run_dir), True, pickled):
                yield ordinal, key, text, blob, index
        return
    streams = [_positioned(index, count, journal_path(run_dir), pickled) for index, run_dir in found.items()]
    yield from heapq.merge(*streams, key=_first)


def _first(row: tuple[Any, ...]) -> int:
    return int(row[0])


def _positioned(index: int, count: int, path: Path, pickled: bool) -> Iterator[tuple[Any, ...]]:
    for ordinal, key, text, blob in rows(path, False, pickled):
        yield index + ordinal * count, key, text, blob, index


def read_group_results(group_dir: Path) -> Iterator[Result]:
    """``read_results`` of a group directory: every shard's results, each ``Result`` with its ``shard``; a
    ``UserWarning`` (a notebook shows it) when a shard has not finished."""
    state, found, keyed = _shards(group_dir)
    message = incomplete(state)
    if message is not None:
        warnings.warn(message, stacklevel=3)
    values = {index: Values(run_dir, journal_path(run_dir)) for index, run_dir in found.items()}
    return (
        Result(ordinal, key, values[shard].of(text, blob, ordinal), shard)
        for ordinal, key, text, blob, shard in _group_rows(found, state.info.shards, keyed, pickled=True)
    )


def export_group(group_dir: Path, fmt: str, out: IO[str], progress: Callable[[int], None] | None = None) -> int:
    """``export`` of a group directory: a keyed group's rows carry their shard; a positional group's read as one
    run's. Says nothing of unfinished shards: the command does (``incomplete``), after the rows."""
    state, found, keyed = _shards(group_dir)
    shard_rows = _group_rows(found, state.info.shards, keyed, pickled=False)
    return write_rows(((o, k, t, s) for o, k, t, _, s in shard_rows), fmt, out, keyed, keyed, progress)
