"""Groups on the terminal: one ``runs`` line per group with its shards folded under it, and ``show GROUP``."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path

from rich.console import Group as Stack
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from batchcli.errors import BatchcliError
from batchcli.journal.groups import GROUP_FILE, GroupInfo, read_group, shard_runs
from batchcli.journal.history import (
    STATUS_STYLES,
    Unreadable,
    _duration,
    _one_line,
    _when,
    error_kinds,
    find_runs,
    kind_examples,
    modified_at,
    selection_mark,
)
from batchcli.journal.rundir import JOURNAL_NAME, RunInfo, read_run

ORDER = ("running", "crashed", "stopped", "damaged", "never started", "missing", "finished")
"""A group's status is its shards' first in this order: what needs attention first."""


@dataclass(frozen=True)
class ShardRow(RunInfo):
    """A shard's run, as a ``runs`` row folded under its group."""

    label: str = ""


@dataclass(frozen=True)
class Absent(Unreadable):
    """A shard with no run to show (missing, never started, damaged), as a ``runs`` row under its group."""

    label: str = ""


@dataclass(frozen=True)
class GroupRow:
    """A group as one ``runs`` row: its shards' counts added up (the attributes ``runs_table`` reads)."""

    run_dir: Path
    label: str
    job: str
    configuration: str
    status: str
    started_at: float
    succeeded: int
    failed: int
    total: int | None
    active_s: float
    rate: float | None
    parent: None = None
    live_dirs: tuple[Path, ...] = ()
    """The running shards' directories: a live group's rate now is theirs added up."""


@dataclass(frozen=True)
class GroupState:
    """Every shard of a group as it stands: its run, or why there is none."""

    info: GroupInfo
    runs: dict[int, RunInfo]
    """The shards that have a journal, by index."""
    others: dict[int, str]
    """Shards without a readable run, by index: missing, never started, damaged."""
    retries: list[RunInfo]
    """``retry`` runs made in the group's directory."""

    @property
    def statuses(self) -> dict[int, str]:
        found = {i: run.status for i, run in self.runs.items()}
        found.update(self.others)
        return dict(sorted(found.items()))

    @property
    def status(self) -> str:
        present = set(self.statuses.values())
        return next((s for s in ORDER if s in present), "finished")

    @property
    def started_at(self) -> float:
        return min((r.started_at for r in self.runs.values()), default=self.info.group_dir.stat().st_mtime)

    @property
    def span_s(self) -> float:
        """Wall time from the first shard's start to the last one's end (now, while one runs)."""
        if not self.runs:
            return 0.0
        ends = [time.time() if r.status == "running" else r.ended_at for r in self.runs.values()]
        return max(max(ends) - self.started_at, 0.0)


def group_state(group_dir: Path) -> GroupState:
    """Read a group's ``group.json``, its shards' journals and its retries (no pickle is loaded)."""
    info = read_group(group_dir)
    runs: dict[int, RunInfo] = {}
    others = {i: "missing" for i in range(info.shards)}
    for index, run_dir in shard_runs(group_dir).items():
        if not (run_dir / JOURNAL_NAME).is_file():
            others[index] = "never started"
            continue
        try:
            runs[index] = read_run(run_dir)
            others.pop(index, None)
        except BatchcliError:
            others[index] = "damaged"
    retries = [r for r in find_runs(group_dir) if isinstance(r, RunInfo) and r.parent]
    return GroupState(info, runs, others, retries)


def _sum_total(state: GroupState) -> int | None:
    totals = [r.total for r in state.runs.values()]
    if state.others or any(t is None for t in totals):
        return None
    return sum(t for t in totals if t is not None)


def listing(output_dir: Path) -> list[object]:
    """``runs``: every run under ``output_dir`` and every group, newest first, each group's shards under it."""
    entries: list[tuple[float, list[object]]] = []
    for run in find_runs(output_dir):
        started = run.started_at if isinstance(run, RunInfo) else run.modified
        entries.append((started, [run]))
    for marker in output_dir.glob(f"*/{GROUP_FILE}"):
        try:
            state = group_state(marker.parent)
        except BatchcliError as error:
            if not marker.exists():  # renamed or removed since the listing began
                continue
            modified = modified_at(marker)
            entries.append((modified, [Unreadable(marker.parent, str(error), modified=modified)]))
            continue
        entries.append((state.started_at, _group_rows(state)))
    entries.sort(key=lambda entry: entry[0], reverse=True)
    return [row for _, rows in entries for row in rows]


def _selections(state: GroupState) -> str:
    """How the shards select items, when not all of them: ``trial: the first 10 items`` (each shard's own, for
    a limit), every different one once; "" when every shard takes its whole share."""
    marks = dict.fromkeys(selection_mark(run.run_dir) for run in state.runs.values())
    return "; ".join(mark for mark in marks if mark)


def _group_rows(state: GroupState) -> list[object]:
    info, runs = state.info, list(state.runs.values())
    settled = sum(r.succeeded + r.failed for r in runs)
    span = state.span_s
    selected = _selections(state)
    head = GroupRow(
        run_dir=info.group_dir,
        label=f"{info.group} ({len(runs)}/{info.shards} shards)" + (f" ({selected}, per shard)" if selected else ""),
        job=f"{info.job} (group)",
        configuration=runs[0].configuration if runs else "?",
        status=state.status,
        started_at=state.started_at,
        succeeded=sum(r.succeeded for r in runs),
        failed=sum(r.failed for r in runs),
        total=_sum_total(state),
        active_s=span,
        rate=settled / span if span > 0 else None,
        live_dirs=tuple(r.run_dir for r in runs if r.status == "running"),
    )
    rows: list[object] = [head]
    last = len(state.statuses) - 1
    for position, (index, status) in enumerate(state.statuses.items()):
        branch = "└" if position == last and not state.retries else "├"
        run = state.runs.get(index)
        if run is None:
            rows.append(Absent(info.group_dir, status, status, label=f"  {branch} shard-{index}-of-{info.shards}"))
            continue
        values = {f.name: getattr(run, f.name) for f in fields(RunInfo)}
        rows.append(ShardRow(**values, label=f"  {branch} {run.run_dir.name}"))
    for position, retry in enumerate(state.retries):
        branch = "└" if position == len(state.retries) - 1 else "├"
        values = {f.name: getattr(retry, f.name) for f in fields(RunInfo)}
        rows.append(ShardRow(**values, label=f"  {branch} retry: {retry.run_dir.name}"))
    return rows


def show_group(group_dir: Path) -> RenderableType:
    """``show GROUP``: counts, failure groups and throughput across the shards, and each shard's state."""
    state = group_state(group_dir)
    info, runs = state.info, state.runs
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("group", escape(f"{info.group}  ({group_dir})"))
    grid.add_row("job", escape(info.job))
    statuses = state.statuses
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in ORDER if s in statuses.values()}
    summary = Text(f"{info.shards} shards: ")
    for n, (status, count) in enumerate(counts.items()):
        summary.append(", " if n else "")
        summary.append(f"{count} {status}", STATUS_STYLES.get(status, "yellow" if status == "missing" else ""))
    grid.add_row("status", summary)
    selected = _selections(state)
    if selected:
        grid.add_row("selection", escape(f"{selected}, per shard (carry a trial shard on to its whole share: batchcli resume SHARD_DIR --all)"))
    if runs:
        grid.add_row("started", _when(state.started_at))
    succeeded, failed = sum(r.succeeded for r in runs.values()), sum(r.failed for r in runs.values())
    total = _sum_total(state)
    unprocessed = "?" if total is None else f"{max(0, total - succeeded - failed):,}"
    span = state.span_s
    rate = f"  [magenta]{(succeeded + failed) / span:,.1f}/s[/] over {_duration(span)} of wall time" if span > 0 else ""
    grid.add_row(
        "items",
        f"[green]{succeeded:,} succeeded[/], [red]{failed:,} failed[/], {unprocessed} unprocessed, "
        f"of {'?' if total is None else f'{total:,}'}{rate}",
    )
    return Stack(grid, Text(""), _shard_table(state), Text(""), _failures(state), *_retries(state))


def _shard_table(state: GroupState) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("shard", "status", "ok / failed / total", "duration", "rate", "run"):
        table.add_column(name, no_wrap=True, justify="right" if name in ("ok / failed / total", "rate") else "left")
    for index, status in state.statuses.items():
        style = STATUS_STYLES.get(status, "yellow")
        run = state.runs.get(index)
        if run is None:
            table.add_row(f"{index}/{state.info.shards}", Text(status, style), "", "", "", "")
            continue
        total = "?" if run.total is None else f"{run.total:,}"
        rate = "-" if run.rate is None else f"{run.rate:,.1f}/s"
        table.add_row(
            f"{index}/{state.info.shards}",
            Text(status, style),
            f"{run.succeeded:,} / {run.failed:,} / {total}",
            _duration(run.active_s),
            rate,
            escape(run.run_dir.name),
        )
    return table


@dataclass
class _Kind:
    """One kind of error across the shards: how many, the messages' range, a few examples."""

    count: int
    first: str
    last: str
    samples: list[tuple[int, int, str]]
    """(shard, ordinal, item as JSON)."""


def _failures(state: GroupState, groups: int = 10, examples: int = 3) -> RenderableType:
    """Failures of every shard, grouped by error type and message shape as ``show`` does for one run."""
    merged: dict[tuple[str, str], _Kind] = {}
    failing = [(index, run) for index, run in state.runs.items() if run.failed]
    for index, run in failing:
        for error_type, shape, count, first, last in error_kinds(run.run_dir, by_count=False)[0]:
            kind = merged.setdefault((error_type, shape), _Kind(0, first, last, []))
            kind.count += count
            kind.first, kind.last = min(kind.first, first), max(kind.last, last)
    if not merged:
        return Text("No failures.", "green")
    total = sum(kind.count for kind in merged.values())
    heading = f"Failures: {total:,} across the shards, by error ({len(merged):,} kind{'s' if len(merged) != 1 else ''})"
    parts: list[RenderableType] = [Text(heading, "bold")]
    ranked = sorted(merged.items(), key=lambda entry: -entry[1].count)[:groups]
    for index, run in failing:  # examples of the kinds shown only, shard by shard, in one pass over each shard's
        wanted = [key for key, kind in ranked if len(kind.samples) < examples]
        if not wanted:
            break
        for key, samples in kind_examples(run.run_dir, wanted, examples).items():
            kind = merged[key]
            kind.samples += [(index, ordinal, item) for ordinal, item in samples[: examples - len(kind.samples)]]
    for (error_type, shape), kind in ranked:
        message = kind.first if kind.first == kind.last else shape
        parts.append(Text.assemble((f"{kind.count:>7,}  ", "bold red"), (f"{error_type}: ", "red"), _one_line(message, 200)))
        for index, ordinal, item in kind.samples:
            parts.append(Text.assemble((f"{'shard ' + str(index):>12} #{ordinal:<6} ", "dim"), _one_line(item, 150)))
        shown = len(kind.samples)
        if kind.count > shown:
            parts.append(Text(f"{'':13}… and {kind.count - shown:,} more", "dim"))
    if len(merged) > groups:
        parts.append(Text(f"  … and {len(merged) - groups:,} more kinds of error (see each shard's failed.jsonl)", "dim"))
    return Stack(*parts)


def _retries(state: GroupState) -> list[RenderableType]:
    if not state.retries:
        return []
    parts: list[RenderableType] = [Text(""), Text("Retries", "bold")]
    for run in state.retries:
        parts.append(
            Text.assemble(
                (f"  {run.status:<9} ", STATUS_STYLES.get(run.status, "")),
                f"{run.succeeded:,} / {run.failed:,} / {'?' if run.total is None else f'{run.total:,}'}  ",
                (run.run_dir.name, "dim"),
            )
        )
    return parts
