"""``exec --dry-run``: what a run would do, from a job that is wired but never set up, and no run directory.

Only the constructors run (they are how the job is wired); ``setup()``, ``process()``, ``finish()`` and
``persist_failed()`` do not. The source is counted with ``len()`` when it has one, else iterated up to
``COUNT_CAP`` items or ``COUNT_TIME_S`` seconds (iterating is reading, which a dry run may do; the output says
when it stopped). Ctrl-C or SIGTERM abandons the counting as it does the loading (see ``Session``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from batchcli.errors import UserCodeError
from batchcli.stdout import stdout_console
from batchcli.journal.records import json_form, json_text
from batchcli.outcome import clip
from batchcli.journal.resumption import defines_item_key
from batchcli.journal.shards import position_in_source
from batchcli.load.project import format_user_traceback
from batchcli.load.configuration import RuntimeFieldUnset
from batchcli.load.secret import Secret, mask_texts, secret_texts, unset
from batchcli.load.source import NotIterable, is_async_source, iterate, source_length

if TYPE_CHECKING:
    from batchcli.journal.resumption import Continuation
    from batchcli.load.wiring import Job

COUNT_CAP = 10_000
"""A source without ``len()`` is iterated at most this far to count it."""
COUNT_TIME_S = 10.0
"""... and for at most this long: a source that reads a slow API page by page would take hours to reach the cap."""
SHOWN = 5
"""How many of the first items the dry run prints."""


def preview(job: Job, continuation: Continuation, console: Console | None = None) -> None:
    """Print the job, its configuration and params (secrets masked), the executor, the item count, the first items."""
    console = console or stdout_console()
    config = job.config
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("job", f"{escape(job.project.name)}  [dim]({escape(str(job.project.entry or job.project.target))})[/]")
    grid.add_row("configuration", Text(f"{type(config).__name__}: {_fields(config, job)}"))
    secret = job.secret_names
    params = "\n".join(
        f"{name}={Secret.mask if name in secret and not unset(value) else _shown(value)}"
        for name, value in job.public_params().items()
    )
    grid.add_row("params", Text(params) if params else Text("none given", "dim"))
    grid.add_row("executor", Text(_executor(config)))
    if continuation.shard is not None:
        shard = continuation.shard
        grid.add_row("shard", Text(f"{shard} of group {shard.group!r}"))
    selection = continuation.selection
    try:
        count, first = _count(job, continuation)
    except Exception as error:  # the user's Source (its __len__, __iter__ or item_key): their traceback, as a run shows it
        hint = (
            " A dry run makes no run directory, so the configuration's run_dir (and started_at) are not set: read "
            "them in setup() or process(), which a dry run does not call."
            if isinstance(error, RuntimeFieldUnset)
            else ""
        )
        failed = UserCodeError(
            f"The Source gave no items (exit 3, as in a run): {error}" if isinstance(error, NotIterable)  # no frame is theirs
            else f"The Source raised while the dry run counted its items (exit 3, as when it raises in a run).{hint}\n"
            f"{format_user_traceback(error)}",
            error,
        )
        failed.exit_code = 3
        raise failed from None
    if selection is not None and not selection.takes_all:
        grid.add_row("selection", Text(selection.describe()))
    grid.add_row("items", Text(count))
    secrets = secret_texts(job.params, job.config)  # an item may hold one (a URL with its api_key), as failures do
    for n, (ordinal, item) in enumerate(first):
        shown_item = _one_line(mask_texts(json_text(json_form(item)), secrets))  # masked whole, then cut
        grid.add_row("first items" if n == 0 else "", Text(f"#{ordinal:<5} {shown_item}"))
    console.print(Text("Dry run: the job was loaded and wired (constructors ran); nothing was set up or processed, "
                       "and no run directory was made.", "bold"), soft_wrap=True)
    console.print(grid)


def _fields(config: Any, job: Job) -> str:
    secret = job.secret_names
    values = []
    for f in dataclasses.fields(config):
        if not f.init:
            continue  # runtime fields (run_dir, started_at) are bound when a run starts
        value = getattr(config, f.name)
        masked = (f.name in secret or isinstance(value, Secret)) and not unset(value)  # none is none, secret or not
        values.append(f"{f.name}={Secret.mask if masked else _shown(value)}")
    return ", ".join(values)


def _shown(value: Any) -> str:
    return Secret.mask if isinstance(value, Secret) else _one_line(json_text(json_form(value)), 80)


def _executor(config: Any) -> str:
    if config.executor == "async":
        return f"async, concurrency {config.concurrency}"
    address = {"dask": config.dask_address, "ray": config.ray_address}.get(config.executor)
    where = f" at {address}" if address else ""
    workers = "as many workers as cores" if config.workers is None else f"{config.workers} workers"
    return f"{config.executor}{where}, {workers}, concurrency {config.concurrency}"


def _count(job: Job, continuation: Continuation) -> tuple[str, list[tuple[int, Any]]]:
    """The item count as the dry run says it, and the first items the run would take."""
    source = job.source
    key_of = getattr(source, "item_key", None)
    if continuation.shard is not None:  # only this shard's share, as the run would take it
        source = continuation.shard.share(source, key_of if defines_item_key(source) else None)
    selection = continuation.selection
    length = source_length(source)
    # Read for COUNT_TIME_S at most, whatever a selection lets through: a sample that picks nothing reads on.
    clock = _Clock(COUNT_TIME_S)
    if selection is not None and not selection.takes_all:
        position = position_in_source(source)
        exact = selection.total(length, position)
        items, taken = selection.apply(_numbered(source, clock), continuation.done_elsewhere, key_of, position=position)
        if exact is not None:
            return f"{exact:,}", _first(items, SHOWN)
        seen = _first(items, COUNT_CAP + 1)
        if clock.late:
            counted = f"at least {len(seen):,} (stopped counting after {COUNT_TIME_S:g} s)"
        elif len(seen) > COUNT_CAP:
            counted = f"at least {COUNT_CAP:,} (stopped counting there)"
        else:
            counted = f"{len(seen):,}"
        return f"{counted}, counted by iterating the source", seen[:SHOWN]
    if length is not None:
        return f"{length:,} (len of the source)", _first(_numbered(source, clock), SHOWN)
    # A shard split by key has a share no len() tells, whether or not the Source has one.
    keyed_share = source is not job.source and source_length(job.source) is not None
    why = "a shard split by key counts its share" if keyed_share else "the source has no len()"
    seen = _first(_numbered(source, clock), COUNT_CAP + 1)
    if clock.late:
        return f"at least {len(seen):,}: {why}, and counting stopped after {COUNT_TIME_S:g} s", seen[:SHOWN]
    if len(seen) > COUNT_CAP:
        return f"at least {COUNT_CAP:,}: {why}, and counting stopped there", seen[:SHOWN]
    return f"{len(seen):,}, counted by iterating the source ({why if keyed_share else 'it has no len()'})", seen[:SHOWN]


class _Clock:
    """When reading the source for the dry run must stop; ``late`` once it did."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.late = False

    def up(self) -> bool:
        self.late = self.late or time.monotonic() > self.deadline
        return self.late


def _numbered(source: Any, clock: _Clock) -> Any:
    return _anumbered(source, clock) if is_async_source(source) else _snumbered(source, clock)


def _snumbered(source: Any, clock: _Clock) -> Any:
    for pair in enumerate(iterate(source)):
        yield pair
        if clock.up():
            return


async def _anumbered(source: Any, clock: _Clock) -> Any:
    n = 0
    async for item in source:
        yield n, item
        n += 1
        if clock.up():
            return


def _first(items: Any, n: int) -> list[tuple[int, Any]]:
    """The first ``n`` of ``items`` (fewer when the source ran out, or its reading stopped at the deadline)."""
    if not hasattr(items, "__anext__"):
        return list(itertools.islice(items, n))

    async def take() -> list[tuple[int, Any]]:
        taken = []
        async for pair in items:
            taken.append(pair)
            if len(taken) >= n:
                break
        return taken

    return asyncio.run(take())


def _one_line(text: str, limit: int = 120) -> str:
    return clip(" ".join(text.split()), limit)
