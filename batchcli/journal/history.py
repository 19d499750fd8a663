"""Past runs on the terminal: the ``runs`` table and ``show``'s summary, failure groups and throughput chart."""

from __future__ import annotations

import io
import json
import shlex
from bisect import insort
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from batchcli.load.environment import variable
from batchcli.errors import BatchcliError, JournalNewer, JournalUnreadable, UsageError
from batchcli.journal.shards import shard_of
from batchcli.journal.live import recent_rate
from batchcli.journal.matching import FailureFilter, FailureRow, group_types, matching_failures
from batchcli.journal.selection import read_selection
from batchcli.journal.rundir import (
    FLUSH_INTERVAL_S, JOURNAL_NAME, RunInfo, failures_by_rowid, has_table, message_shape, never_started, query, read_run,
    stream,
)
from batchcli.load.secret import Secret
from batchcli.outcome import clip, per_second, shown

STATUS_STYLES = {
    "finished": "green",
    "stopped": "yellow",
    "crashed": "bold red",
    "running": "bold cyan",
    "damaged": "red",
    "unreadable": "red",
    "newer": "yellow",
    "never started": "dim",
}
BLOCKS = " ▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Unreadable:
    """A run directory whose journal cannot be read."""

    run_dir: Path
    reason: str
    status: str = "damaged"
    """What ``runs`` shows: damaged, unreadable (this user may not read the journal), newer (a newer batchcli wrote
    it), or never started (a process killed while making the run directory)."""
    modified: float = 0.0
    """When the directory last changed (``modified_at``), for the listing's order and its started column."""


def modified_at(path: Path) -> float:
    """``path``'s modification time; 0 when it is gone (renamed or removed while runs were listed)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def find_runs(output_dir: Path) -> list[RunInfo | Unreadable]:
    """Every run with a journal under ``output_dir``, newest first."""
    if not output_dir.is_dir():
        what = "is a file, not a directory" if output_dir.exists() else "does not exist"
        raise UsageError(
            f"Output directory {str(output_dir)!r} {what}. Give the -d the runs were started with "
            "(the default is batchcli_outputs)."
        )
    found: list[RunInfo | Unreadable] = []
    for journal in output_dir.glob(f"*/{JOURNAL_NAME}"):
        run_dir = journal.parent
        try:
            found.append(read_run(run_dir))
        except BatchcliError as error:
            if not journal.exists():  # renamed or removed since the listing began: not a run here any more
                continue
            status = (
                "unreadable" if isinstance(error, JournalUnreadable) else "newer" if isinstance(error, JournalNewer)
                else "damaged"
            )  # fmt: skip
            found.append(Unreadable(run_dir, str(error), status, modified_at(run_dir)))
    for draft in output_dir.glob(f"*/{JOURNAL_NAME}.new"):
        if never_started(draft.parent):
            found.append(Unreadable(draft.parent, "the run never started", "never started", modified_at(draft.parent)))
    return sorted(found, key=_started, reverse=True)


def _started(run: RunInfo | Unreadable) -> float:
    return run.started_at if isinstance(run, RunInfo) else run.modified


def runs_table(runs: list[Any], width: int = 200) -> Table:
    """The ``runs`` table, newest first. When it does not fit in ``width`` columns, the run directory's
    name (``<started>_<job>``) stands in for the started and job columns, then configuration and
    duration go."""
    layouts = [
        (("started", "job", "configuration"), ("run",)),
        (("run", "configuration"), ()),
        (("run",), ()),
        (("run",), ("no duration",)),
    ]
    # Each run's mark read once: every layout tried would open its journal again (2,000 runs took 7.5 s).
    marks = {
        id(run): " (retry)" if run.parent else _trial_mark(run.run_dir) for run in runs if not isinstance(run, Unreadable)
    }
    for lead, trail in layouts:
        table = _table(runs, lead, trail, marks)
        if Measurement.get(_MEASURE, _MEASURE.options, table).maximum <= width:
            break
    return table


_MEASURE = Console(width=10_000, file=io.StringIO())


def _table(runs: list[Any], lead: tuple[str, ...], trail: tuple[str, ...], marks: dict[int, str]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in lead:
        table.add_column(name, no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("ok / failed / total", justify="right", no_wrap=True)
    duration = "no duration" not in trail
    if duration:
        table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("rate", justify="right", no_wrap=True)
    trail = tuple(n for n in trail if n == "run")
    for name in trail:
        table.add_column(name, no_wrap=True)  # the run: what to give `show`, `resume` and `retry`
    for run in runs:
        # A group's rows (journal/groupview.py) carry their own label: the group, or a shard folded under it.
        cells = {"run": escape(getattr(run, "label", "") or run.run_dir.name), "started": "?", "job": "?", "configuration": "?"}
        if isinstance(run, Unreadable):
            cells["started"] = _when(run.modified) if run.modified else "?"
            middle: list[RenderableType] = [Text(run.status, STATUS_STYLES.get(run.status, "")), "", "", ""]
        else:
            retry = marks[id(run)]
            cells.update(started=_when(run.started_at), job=escape(run.job + retry))
            cells["configuration"] = escape(run.configuration)
            if "job" not in lead:
                cells["run"] += retry
            total = "?" if run.total is None else f"{run.total:,}"
            rate = "-" if run.rate is None else f"{run.rate:,.1f}/s"
            if getattr(run, "starting", False):  # a resume loading the project: the ended session's rate is no rate now
                rate = "starting"
            elif run.status == "running":  # live (a process holds the run's lock): its rate now, not its average
                live = getattr(run, "live_dirs", (run.run_dir,))  # a group's: its running shards'
                rate = f"{sum(recent_rate(d) for d in live):,.1f}/s now"
            middle = [
                Text(run.status, STATUS_STYLES.get(run.status, "")),
                f"{run.succeeded:,} / {run.failed:,} / {total}",
                _duration(run.active_s),
                rate,
            ]
        if not duration:
            del middle[2]
        table.add_row(*[cells[n] for n in lead], *middle, *[cells[n] for n in trail])
    return table


def show_run(run_dir: Path, width: int = 60) -> RenderableType:
    """``show``: the summary of one run, its failures grouped by reason, and its throughput over time."""
    run = read_run(run_dir)
    parts = [_summary(run), Text(""), _failures(run), Text(""), _chart(run, width)]
    throttling = _throttling(run)
    if throttling is not None:
        parts += [Text(""), throttling]
    return Group(*parts)


def _summary(run: RunInfo) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("run", escape(str(run.run_dir)))
    grid.add_row("job", f"{escape(run.job)}  [dim]({escape(run.target)})[/]")
    config = run.configuration + (f" (-c {run.config_name})" if run.config_name else "")
    grid.add_row("configuration", escape(config))
    params = [f"{k}={','.join(v)}" + (f" ({_origin(k)})" if k in run.environment else "") for k, v in run.params.items()]
    for k in run.secrets:
        origin = f", {_origin(k)}" if k in run.environment else ""
        params.append(f"{k}={Secret.mask} (secret{origin}; give it again to resume or retry)")
    grid.add_row("params", escape("  ".join(params)) or "[dim]none[/]")
    status = Text(run.status, STATUS_STYLES.get(run.status, ""))
    if run.status == "crashed" and run.fatal is None:
        # A run stopped because its directory could not be written (a full disk) could not record its end either.
        status.append(
            f"  (process {run.pid} ended without closing the run: killed, the machine went down, or its run directory "
            "could not be written, as on a full disk)",
            "dim",
        )
    grid.add_row("status", status)
    if run.parent:
        grid.add_row("retry of", escape(run.parent))
    shard = shard_of(run.run_dir)
    if shard is not None:
        grid.add_row("shard", escape(f"{shard} of group {shard.group}  (the group: batchcli show {run.run_dir.parent})"))
    selection = read_selection(run.run_dir)
    if selection is not None:
        whole = f"  [dim](carry it on to the whole source: batchcli resume {escape(str(run.run_dir))} --all)[/]"
        grid.add_row("trial" if selection.is_trial else "selection", escape(selection.describe()) + (whole if selection.is_trial else ""))
    sessions = f"  [dim]({run.sessions} sessions)[/]" if run.sessions > 1 else ""
    grid.add_row("started", _when(run.started_at) + sessions)
    grid.add_row("ended", "-" if run.status == "running" else _when(run.ended_at))
    between = "  [dim](running time; pauses between sessions left out)[/]" if run.sessions > 1 else ""
    grid.add_row("duration", _duration(run.active_s) + between)
    unprocessed = "?" if run.unprocessed is None else f"{run.unprocessed:,}"
    total = "?" if run.total is None else f"{run.total:,}"
    rate = "" if run.rate is None else f"  [magenta]{run.rate:,.1f}/s[/]"
    counts = f"[green]{run.succeeded:,} succeeded[/], [red]{run.failed:,} failed[/], {unprocessed} unprocessed"
    grid.add_row("items", f"{counts}, of {total}{rate}")
    breaker = _breaker_row(run)
    if breaker:
        grid.add_row("breaker", breaker)
    if run.fatal:
        message = "\n".join(map(shown, str(run.fatal["message"]).splitlines()))  # escape sequences written out
        grid.add_row("fatal", Text(f"{shown(str(run.fatal['type']))}: {message}", "red"))
    return grid


def _trial_mark(run_dir: Path) -> str:
    """`` (trial: the first 10 items)`` for a limited or sampled run, `` (incremental)`` for one with skips; else ""."""
    mark = selection_mark(run_dir)
    return f" ({mark})" if mark else ""


def selection_mark(run_dir: Path) -> str:
    """``trial: the first 10 items`` for a limited or sampled run, ``incremental`` for one with skips; else ""."""
    try:
        selection = read_selection(run_dir)
    except BatchcliError:
        return ""
    if selection is None:
        return ""
    return f"trial: {selection.describe()}" if selection.is_trial else "incremental"


def show_failures(
    run_dir: Path, wanted: FailureFilter, listed: int = 50, retry: tuple[Path, str] | None = None
) -> RenderableType:
    """``show --failures``: the failures ``wanted`` takes (input, error, attempts, when), as ``retry`` would take them;
    for a group of shards, shard by shard (``--limit`` counts over the whole group, as its retry does). ``retry``:
    the directory and options the "Retry them with:" command names (a group and its ``--shard``), when not ``run_dir``."""
    from batchcli.journal.groups import is_group, shard_runs

    group = is_group(run_dir)
    if group:
        runs = [read_run(d) for d in shard_runs(run_dir).values() if (d / JOURNAL_NAME).is_file()]
    else:
        runs = [read_run(run_dir)]
    found: list[tuple[RunInfo, list[FailureRow]]] = []
    matched = total = kept = 0
    types = group_types([r.run_dir for r in runs]) if group and wanted.error_type else None
    unchecked: dict[str, str] = {}
    for run in runs:
        left = None if wanted.limit is None else wanted.limit - matched
        this = wanted if left is None else replace(wanted, limit=max(left, 0))
        load = _project_loader(run) if wanted.error_type else None
        rows, count, of = matching_failures(
            run.run_dir, this, load=load, keep=listed - kept, types=types, unchecked=unchecked
        )
        found.append((run, rows))
        matched, total, kept = matched + count, total + of, kept + len(rows)
    which = f" matching {wanted.describe()}" if wanted.active else ""
    parts: list[RenderableType] = [Text(f"Failures of {run_dir}{which}: {matched:,} of {total:,}", "bold")]
    for run, rows in found:
        if group and rows:
            parts.append(Text(f" {run.run_dir.name}", "bold"))
        for row in rows:
            attempts = f"{row.attempts} attempt{'s' * (row.attempts != 1)}"
            unsaved = "" if row.saved else "  (not saved: retry cannot have it)"
            parts.append(
                Text.assemble(
                    (f"  #{row.ordinal:<6} ", "dim"),
                    (f"{_when(row.failed_at)}  {attempts}  ", "dim"),
                    (f"{shown(row.error_type)}: ", "red"),  # a class name can hold an escape sequence too
                    _one_line(row.error_message, 200),
                    (unsaved, "yellow"),
                )
            )
            parts.append(Text.assemble((f"{'':10}input: ", "dim"), _one_line(_compact(row.item_json), 150)))
    if matched > kept:
        parts.append(Text(f"  … and {matched - kept:,} more (all of them are in failed.jsonl)", "dim"))
    if unchecked:  # else a base class (ValueError) silently matched none of the project's own subclasses
        names = ", ".join(sorted(unchecked))
        first = min(unchecked)
        parts.append(Text(
            f"Not checked for a subclass of {wanted.error_type}: {names} ({unchecked[first]}). Give such a type by "
            f"name to take its failures: --error-type {first.rsplit('.', 1)[-1]}",
            "yellow",
        ))  # fmt: skip
    if kept:
        again = f" {wanted.describe()}" if wanted.active else ""
        where, shard = retry or (run_dir, "")
        command = f"batchcli retry {shlex.quote(str(where))}{shard}{again}"
        if any(run.status == "running" for run in runs):  # retry refuses a live run: it would do these twice
            parts.append(Text(f"The run is still running, so more may fail. Once it has ended, retry them with: {command}", "dim"))
        else:
            parts.append(Text(f"Retry them with: {command}", "dim"))
    return Group(*parts)


def _project_loader(run: RunInfo) -> Callable[[], None]:
    """Loads the run's project so its exception classes resolve for ``--error-type``; only for a run you own."""

    def load() -> None:
        from batchcli.journal.rundir import check_safe
        from batchcli.load.project import load_recorded

        check_safe(run.run_dir)  # the target comes from the journal: run nobody else's code
        load_recorded(run.target)

    return load


def _breaker_row(run: RunInfo) -> str:
    """What the circuit breaker did (``_breaker_counts``); "" when it never opened."""
    counts = _breaker_counts(run)
    trips = int(counts.get("trips", 0))
    if not trips:
        return ""
    probes, cooldowns = int(counts.get("probes", 0)), int(counts.get("cooldowns", 0))
    open_s = float(counts.get("open_s", 0.0))
    return (
        f"opened {trips} time{'s' * (trips != 1)}, {probes} probe{'s' * (probes != 1)}, "
        f"{cooldowns} cool-down{'s' * (cooldowns != 1)}, open for {_duration(open_s)}"
    )


def _breaker_counts(run: RunInfo) -> dict[str, Any]:
    """The breaker's counts over the run: ``summary.json``'s when the last session wrote it, else each session's
    last ``live`` state summed (``RunInfo.breaker``), as a resume sums them. A session killed with ``kill -9`` (or
    still running) wrote no summary, but its live state, rewritten every flush, holds its counts and the open time
    of an episode still going: a run killed while the breaker was open showed no breaker line. {} when neither says."""
    try:
        summary = json.loads((run.run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = None
    summary = summary if isinstance(summary, dict) else {}
    if summary.get("sessions") != run.sessions and run.breaker is not None:
        return run.breaker  # else a journal older than the counts in its live state: the last summary's, as before
    breaker = summary.get("breaker")
    return breaker if isinstance(breaker, dict) else {}


def _origin(name: str) -> str:
    """Where a value that did not come from ``-p`` came from."""
    return f"from the environment: {variable(name)}"


def error_kinds(
    run_dir: Path, limit: int | None = None, *, by_count: bool = True
) -> tuple[list[tuple[str, str, int, str, str]], int]:
    """A run's failures by kind of error, most frequent first (``by_count``; else, and among equals, first seen first),
    in one pass over them: (error type, message shape, count, least and greatest message) for the first ``limit``
    kinds, and how many kinds there are. Messages that differ only in numbers (ids, sizes) are one kind of error
    (``message_shape``)."""
    rows = query(
        run_dir,
        "SELECT error_type, shape(error_message), count(*), min(error_message), max(error_message), count(*) OVER ()"
        f" FROM failures GROUP BY 1, 2 ORDER BY {'3 DESC, ' if by_count else ''}min(rowid) LIMIT ?",
        (-1 if limit is None else limit,),
    )
    return [row[:5] for row in rows], rows[0][5] if rows else 0


def kind_examples(run_dir: Path, kinds: list[tuple[str, str]], examples: int) -> dict[tuple[str, str], list[tuple[int, str]]]:
    """The first ``examples`` failures (by session and ordinal) of each of ``kinds`` (error type, message shape), as
    (ordinal, input as JSON), in one pass over the failures of their types.

    Each kind was a query of its own, and each query shaped every message again: ``show`` of 500,000 failures
    whose messages all differed read them 12 times (9.5 s), a group's ``show`` once per kind of every shard."""
    first: dict[tuple[str, str], list[tuple[int, int, int]]] = {kind: [] for kind in kinds}
    """Each kind's first failures so far, as (session, ordinal, rowid), in that order."""
    types = sorted({error_type for error_type, _ in kinds})
    if not types or examples <= 0:
        return {kind: [] for kind in kinds}
    rows = stream(
        run_dir,
        f"SELECT session, ordinal, rowid, error_type, error_message FROM failures WHERE error_type IN ({', '.join('?' * len(types))})",
        tuple(types),
    )
    for session, ordinal, rowid, error_type, message in rows:
        chosen = first.get((error_type, message_shape(message)))
        if chosen is None:
            continue
        if len(chosen) < examples:
            insort(chosen, (session, ordinal, rowid))
        elif (session, ordinal) < chosen[-1][:2]:
            chosen.pop()
            insort(chosen, (session, ordinal, rowid))
    rowids = [rowid for chosen in first.values() for *_, rowid in chosen]
    found = failures_by_rowid(run_dir, "ordinal, item_json", rowids)  # in that order: each kind takes its own
    return {kind: [next(found) for _ in chosen] for kind, chosen in first.items()}


def _failures(run: RunInfo, groups: int = 10, examples: int = 3) -> RenderableType:
    if not run.failed:
        return Text("No failures.", "green")
    rows, kinds = error_kinds(run.run_dir, groups)
    heading = f"Failures: {run.failed:,}, by error ({kinds:,} kind{'s' if kinds != 1 else ''})"
    parts: list[RenderableType] = [Text(heading, "bold")]
    samples_of = kind_examples(run.run_dir, [(error_type, shape) for error_type, shape, *_ in rows], examples)
    for error_type, shape, count, first, last in rows:
        message = first if first == last else shape
        parts.append(Text.assemble((f"{count:>7,}  ", "bold red"), (f"{shown(error_type)}: ", "red"), _one_line(message, 200)))
        samples = samples_of[error_type, shape]
        for ordinal, item_json in samples:
            example = _one_line(_compact(item_json), 150)
            parts.append(Text.assemble((f"{'#':>12}{ordinal:<6} ", "dim"), example))
        if count > len(samples):
            parts.append(Text(f"{'':11}… and {count - len(samples):,} more", "dim"))
    if kinds > len(rows):
        more = kinds - len(rows)
        parts.append(Text(f"  … and {more:,} more kinds of error (all of them are in failed.jsonl)", "dim"))
    return Group(*parts)


def _chart(run: RunInfo, width: int) -> RenderableType:
    """Items per second over the run's running time, one column per time bucket, ok above failed."""
    sessions = query(run.run_dir, "SELECT id, started_at, coalesce(ended_at, seen_at) FROM sessions ORDER BY id")
    points = query(run.run_dir, "SELECT session, t, succeeded, failed FROM timeline ORDER BY session, t")
    if not points:
        return Text("Throughput: nothing settled yet.", "dim")
    # Running time only: each session starts where the previous one ended.
    offsets, elapsed = {}, 0.0
    for session, started, ended in sessions:
        offsets[session] = (elapsed, started)
        elapsed += max(ended - started, 0.0)
    span = max(elapsed, max(offsets[s][0] + t - offsets[s][1] for s, t, _, _ in points), 1e-6)
    width = max(10, min(width, 120))
    step = span / width
    ok, failed = [0.0] * width, [0.0] * width
    # A flush's point counts the failures it recorded, those the breaker took back later (or the pause shell forgave)
    # too: they left the failures table only, and a run with none left drew a failed rate beside "0 failed". When the
    # points count more failures than the run has, the failed row comes from the table (a read of every failure).
    taken_back = sum(n_failed for _, _, _, n_failed in points) != run.failed
    previous: dict[int, float] = {}
    for session, t, n_ok, n_failed in points:
        start, started = offsets[session]
        # A row counts what settled since the flush before it, at most FLUSH_INTERVAL_S earlier.
        low = max(previous.get(session, started), t - FLUSH_INTERVAL_S)
        previous[session] = t
        _spread(ok, step, start + low - started, start + t - started, n_ok)
        if not taken_back:
            _spread(failed, step, start + low - started, start + t - started, n_failed)
    if taken_back:
        _final_failures(run.run_dir, offsets, step, failed)
    rows = [
        Text(f"Throughput over {_clock(span, span)} of running time, {_clock(step, step)} per column", "bold"),
        _spark("ok    ", ok, step, "green"),
        _spark("failed", failed, step, "red"),
        Text(f"{'':7}{_clock(0, span)}{_clock(span, span):>{width - len(_clock(0, span))}}", "dim"),
    ]
    return Group(*rows)


def _final_failures(run_dir: Path, offsets: dict[int, tuple[float, float]], step: float, columns: list[float]) -> None:
    """Add the failures the journal holds to ``columns`` by when each failed (``offsets``: each session's start in
    running time, and its epoch). Counted in SQL a flush interval at a time (there may be millions), each interval's
    spread over it as the timeline's points are, so the failed row reads like the ok row."""
    buckets = query(
        run_dir,
        "SELECT f.session, CAST(max(f.failed_at - s.started_at, 0) / ? AS INTEGER) AS b, count(*)"
        " FROM failures AS f JOIN sessions AS s ON s.id = f.session GROUP BY f.session, b",
        (FLUSH_INTERVAL_S,),
    )
    for session, bucket, count in buckets:
        low = offsets[session][0] + bucket * FLUSH_INTERVAL_S
        _spread(columns, step, low, low + FLUSH_INTERVAL_S, count)


def _throttling(run: RunInfo, shown: int = 12) -> RenderableType | None:
    """The throttles and the limits in force over running time (adaptive concurrency); None if never throttled."""
    if not has_table(run.run_dir, "limits"):  # a journal of a batchcli from before throttling was recorded
        return None
    rows = query(run.run_dir, "SELECT session, t, concurrency, rate_limit, throttles FROM limits ORDER BY session, t")
    if not rows:
        return None
    starts = dict(query(run.run_dir, "SELECT id, started_at FROM sessions"))
    throttles: dict[int, int] = {}
    steps: list[tuple[str, str]] = []
    for session, t, concurrency, rate, count in rows:
        throttles[session] = count
        at = f"{_clock(t - starts.get(session, t), 60)}" + (f" (session {session})" if run.sessions > 1 else "")
        limit = f"{concurrency}" + ("" if rate is None else f" at {per_second(rate)}")
        if not steps or steps[-1][1] != limit:
            steps.append((at, limit))
    if len(steps) > shown:  # the first and the latest changes; the lowest is in the middle somewhere
        steps = steps[: shown // 2] + [("…", "…")] + steps[-(shown // 2) :]
    parts: list[RenderableType] = [
        Text(f"Throttled {_times(sum(throttles.values()))}; concurrency in force over running time:", "bold"),
    ]
    parts.append(Text("  " + "  →  ".join(f"{limit} [{at}]" if at != "…" else "…" for at, limit in steps)))
    return Group(*parts)


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n:,} times"


def _spread(columns: list[float], step: float, low: float, high: float, count: int) -> None:
    """Add ``count`` items settled evenly over ``[low, high]`` seconds to the columns that interval covers."""
    if not count:
        return
    last = len(columns) - 1
    first_col, last_col = min(int(low / step), last), min(int(high / step), last)
    if first_col == last_col or high <= low:
        columns[last_col] += count
        return
    for column in range(first_col, last_col + 1):
        overlap = min(high, (column + 1) * step) - max(low, column * step)
        columns[column] += count * max(overlap, 0.0) / (high - low)


def _spark(label: str, counts: list[float], step: float, style: str) -> Text:
    peak = max(counts)
    top = len(BLOCKS) - 1
    # The smallest non-zero count still shows, so a trickle is told apart from a stall.
    bars = "".join(BLOCKS[0 if not n else max(1, round(n / peak * top))] for n in counts)
    return Text.assemble((f"{label} ", "dim"), (bars, style), (f"  peak {peak / step:,.1f}/s", "dim"))


def _one_line(text: str, limit: int) -> str:
    # Control characters written out (``\\x1b``), as on the run's console: a message holding a terminal's escape
    # sequences (an API's response body) cleared and recoloured the screen of whoever ran show.
    return clip(shown(" ".join(text.split())), limit)


def _compact(item_json: str) -> str:
    try:
        return json.dumps(json.loads(item_json), ensure_ascii=False, separators=(", ", ": "))
    except ValueError:
        return item_json


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=int(round(seconds))))


def _clock(seconds: float, scale: float) -> str:
    """``seconds`` in a unit that suits ``scale``: ms, s, or h:mm:ss."""
    if scale < 1:
        return f"{seconds * 1000:.3g} ms"
    if scale < 60:
        return f"{seconds:.3g} s"
    return _duration(seconds)
