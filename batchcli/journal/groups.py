"""Groups: the shards of one logical run, side by side in ``<output_dir>/<group>/``.

``group.json`` names the group, the job and N; each shard is an ordinary run in ``shard-I-of-N/`` (its own
journal, ``resume`` and ``retry``), so every shard of a group, on whatever machine, finds its directory from
the group id alone. ``exec`` of a shard whose directory holds a stopped or crashed run continues it, as
``resume`` would: a Kubernetes Job that restarts a pod after a crash redoes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchcli.errors import JournalError, UsageError
from batchcli.journal.matching import FailureFilter, group_types
from batchcli.journal.inputs import Pick, Progress, RetryInputs
from batchcli.journal.resumption import (
    Continuation,
    LaterRetries,
    Notice,
    Retry,
    defines_item_key,
    failed_inputs,
    fresh_continuation,
    keys_skipped,
    later_retries,
    merged,
)
from batchcli.journal.rundir import (
    GROUP_FILE,
    JOURNAL_NAME,
    RunLock,
    check_output_dir,
    holding,
    lineage,
    quoted,
    never_started,
    read_run,
    unusable_output_dir,
)
from batchcli.journal.selection import Selection, read_selection
from batchcli.journal.shards import Shard, ShardRequest, parse_shard, resolve_shard
from batchcli.journal.writer import Journal

if TYPE_CHECKING:
    from batchcli.load.project import Project
    from batchcli.load.wiring import Job, Wiring

_GROUP_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
_SHARD_DIR = re.compile(r"shard-(\d+)-of-(\d+)")


@dataclass(frozen=True)
class GroupInfo:
    """What ``group.json`` says about a group."""

    group_dir: Path
    group: str
    shards: int
    """N: how many shards the source was split into."""
    job: str


def check_group_id(group: str) -> str:
    """``--group`` as given, when it can name a directory; a UsageError otherwise."""
    if not _GROUP_ID.fullmatch(group):
        raise UsageError(
            f"--group {group!r} cannot name a group directory: use letters, digits, '.', '_' and '-' (at most 100, "
            "not starting with '.' or '-'), e.g. --group nightly-2024-05-01."
        )
    return group


def derived_group(job: Job, wiring: Wiring, count: int) -> str:
    """The group id every shard of a run computes alike: from the job, its configuration, params and N.

    Left out: secrets (a directory name must not depend on them) and batchcli's own settings (``executor``,
    ``concurrency``, ``shards`` ...: how a shard runs, not what it does; N is in), so shards given different
    settings still meet in one group.
    """
    values = what_shards_share(job, wiring)
    blob = json.dumps([job.project.name, wiring.config_name, values, count], sort_keys=True)
    return f"{job.project.name}-{count}shards-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def what_shards_share(job: Job, wiring: Wiring) -> dict[str, list[str]]:
    """The params every shard of a group must be given alike (as given): all but secrets and batchcli's own settings."""
    from dataclasses import fields

    from batchcli.load.configuration import Configuration

    own = {f.name for f in fields(Configuration)}
    return {k: list(v) for k, v in wiring.values.items() if k not in job.secret_names and k not in own}


def shard_dir_name(shard: Shard) -> str:
    return f"shard-{shard.index}-of-{shard.count}"


def is_group(path: Path) -> bool:
    """True when ``path`` is a group directory (it holds ``group.json``)."""
    return (path / GROUP_FILE).is_file()


def read_group(group_dir: Path) -> GroupInfo:
    """``group.json`` of ``group_dir``; a JournalError when it is missing or damaged."""
    path = group_dir / GROUP_FILE
    try:
        data = json.loads(path.read_text())
        return GroupInfo(group_dir, str(data["group"]), int(data["shards"]), str(data["job"]))
    except FileNotFoundError:
        raise JournalError(
            f"{str(group_dir)!r} is not a group directory (it has no {GROUP_FILE}). Give one of the groups "
            "`batchcli runs -d OUTPUT_DIR` lists."
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise JournalError(f"{str(path)!r} is damaged ({error}); the shards' run directories beside it are intact.") from error


def shard_runs(group_dir: Path) -> dict[int, Path]:
    """The shard run directories of a group by index (those with a journal, or a half-made one)."""
    found = {}
    for path in group_dir.iterdir():
        match = _SHARD_DIR.fullmatch(path.name)
        if match and path.is_dir() and ((path / JOURNAL_NAME).is_file() or never_started(path)):
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def project_code(project: Project) -> tuple[str, str]:
    """Where the job was loaded from (``Project.entry``, or its name when installed) and a digest of its modules'
    files, for a group to tell another job of the same name from the same code checked out elsewhere."""
    digest = hashlib.sha256()
    for module in sorted(project.modules(), key=lambda m: m.__name__):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        digest.update(module.__name__.encode() + b"\0")
        try:
            digest.update(Path(path).read_bytes())
        except OSError:
            digest.update(b"\0unreadable")
    return (str(project.entry) if project.entry is not None else project.target), digest.hexdigest()


def join_group(
    output_dir: Path,
    shard: Shard,
    job_name: str,
    params: dict[str, list[str]] | None = None,
    config_name: str | None = None,
    code: tuple[str, str] | None = None,
) -> Path:
    """The group's directory, made with its ``group.json`` by the first shard there; checked by the others: the same
    N, job, configuration and params (``what_shards_share``), so that the shards split one source; and the same
    code (``project_code``): loaded from the same place, or files alike where they differ."""
    check_output_dir(output_dir)
    group_dir = output_dir / shard.group
    if (group_dir / JOURNAL_NAME).exists() or (group_dir / f"{JOURNAL_NAME}.new").exists():
        raise UsageError(
            f"--group {shard.group!r}: {str(group_dir)!r} is a run's directory, not a group's; a group made there would "
            "hide the run's results and failures. Give another --group."
        )
    if group_dir.exists() and not group_dir.is_dir():  # mkdir's "File exists" named -d, which was not in the way
        raise UsageError(
            f"--group {shard.group!r}: {str(group_dir)!r} is a file, not a group's directory. Give another --group, "
            "or move the file away."
        )
    made = not group_dir.exists()
    try:
        group_dir.mkdir(mode=0o700, exist_ok=True)
        if not (group_dir / GROUP_FILE).exists():
            _write_once(
                group_dir / GROUP_FILE,
                {
                    "group": shard.group, "shards": shard.count, "job": job_name, "config": config_name, "params": params,
                    **({} if code is None else {"entry": code[0], "code": code[1]}),
                },  # fmt: skip
            )
    except OSError as error:
        if made:  # a group directory without its group.json is no group: gone, as a new run's directory goes
            with contextlib.suppress(OSError):
                group_dir.rmdir()
        raise unusable_output_dir(output_dir, error) from error
    check_joining(group_dir, shard, job_name, params, config_name, code)
    return group_dir


def check_joining(
    group_dir: Path,
    shard: Shard,
    job_name: str,
    params: dict[str, list[str]] | None,
    config_name: str | None,
    code: tuple[str, str] | None,
) -> None:
    """Refuse a shard that does not belong in the group of ``group_dir`` (see ``join_group``); also for
    ``exec --shard --dry-run``, which makes nothing (a group not made yet has nothing to disagree with)."""
    if not (group_dir / GROUP_FILE).is_file():
        return
    _check_alike(group_dir, shard.group, params, config_name)
    info = read_group(group_dir)
    if info.shards != shard.count:
        raise UsageError(
            f"Group {shard.group!r} was started with {info.shards} shards, but this one says --shard {shard}: every "
            f"shard of a group must split the source alike. Give --shard I/{info.shards}, or another --group for "
            f"{shard.count} shards."
        )
    if info.job != job_name:
        raise UsageError(
            f"Group {shard.group!r} runs the job {info.job!r}, not {job_name!r}. Give this job another --group."
        )
    if code is not None:
        _check_code(group_dir, shard.group, code)


def _check_code(group_dir: Path, group: str, code: tuple[str, str]) -> None:
    """Refuse a shard of another job that has the group's job name (``jobs2/job.py`` beside ``jobs/job.py``): its
    results were mixed with the others'. The same entry is the same job, edited or not (as ``resume`` takes a fix);
    another entry must hold the same files (a checkout of the same code on another machine)."""
    try:
        data = json.loads((group_dir / GROUP_FILE).read_text())
    except (OSError, ValueError):
        return
    if not isinstance(data, dict) or "entry" not in data or "code" not in data:
        return  # a group.json of an older batchcli: it recorded no code
    entry, digest = code
    if data["entry"] != entry and data["code"] != digest:
        raise UsageError(
            f"Group {group!r} runs the job from {data['entry']!r}, and this shard's job, {entry!r}, is other code "
            "(its files differ): one group is one run of one job, or its results mix two. Give this job another "
            "--group, or run the group's code."
        )


def check_resumed_shard(run_dir: Path, shard: Shard, job: Job, wiring: Wiring) -> None:
    """Refuse to resume a shard with other values than its group's, as ``exec --shard`` refuses to start one: a
    resume took ``-p count=200`` on one shard of a group started with ``count=100``, and only that shard's share
    of items 100-199 was processed, the group "finished"."""
    group_dir = run_dir.parent
    if run_dir.name != shard_dir_name(shard) or not (group_dir / GROUP_FILE).is_file():
        return  # moved out of its group's directory: no group to agree with
    fix = f"Resume it with the group's values (leave those -p out): batchcli resume {quoted(run_dir)}"
    _check_alike(group_dir, shard.group, what_shards_share(job, wiring), wiring.config_name, fix)


def _check_alike(
    group_dir: Path, group: str, params: dict[str, list[str]] | None, config_name: str | None,
    fix: str = "Give the group's values, or another --group.",
) -> None:
    """Refuse a shard given other params or another configuration than its group's first: with ``-p count=200``
    beside a group started with ``count=100``, items 100-199 of the other shards' share were never processed."""
    if params is None:
        return
    try:
        data = json.loads((group_dir / GROUP_FILE).read_text())
    except (OSError, ValueError):
        return  # read_group says what is wrong with it
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        return  # a group.json of an older batchcli: it recorded no params
    recorded: dict[str, Any] = data["params"]
    differ = sorted(n for n in set(recorded) | set(params) if recorded.get(n) != params.get(n))
    if data.get("config") != config_name:
        differ.insert(0, "-c")
    if differ:
        def shown(values: dict[str, Any], name: str) -> str:
            if name == "-c":
                return str(data.get("config") if values is recorded else config_name)
            value = values.get(name)
            return "(not given)" if value is None else ",".join(map(str, value))

        said = "; ".join(f"{n}: {shown(recorded, n)} in the group, {shown(params, n)} here" for n in differ)
        raise UsageError(
            f"Group {group!r} was started with other values ({said}): every shard of a group must be given the same "
            f"params and configuration, or the shards do not split one source. {fix}"
        )


def _write_once(path: Path, data: dict[str, Any]) -> None:
    """Write ``path`` whole, unless another process got there first (shards start together)."""
    draft = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}")  # hosts may share the disk
    try:
        draft.write_text(json.dumps({**data, "created_at": time.time()}, indent=2) + "\n")
        os.link(draft, path)  # atomic, and fails if it exists: the first shard's file stands
    except FileExistsError:
        pass
    finally:
        draft.unlink(missing_ok=True)  # also when the disk was full: a hidden draft was left for good


@dataclass
class ShardStart:
    """``exec``'s launch: a fresh run, or one shard of a group, placed in the group or continuing the shard's run.

    A run that asks for no shard (no ``--shard``, no ``shards``) is a plain fresh run, as ``run.session.Fresh``.
    """

    target: Wiring
    """The job to build."""
    request: ShardRequest | None
    """``--shard`` as given."""
    group: str | None
    """``--group`` as given."""
    output_dir: Path
    """Where groups (and plain run directories) are made (``-d``)."""
    selection: Selection | None = None
    """``--limit``, ``--sample``, ``--skip-done-in``: which items of the source (or of the shard's share) to take."""
    dry_run: bool = False
    """``--dry-run``: show what would run; no group or run directory is made."""
    notices: list[Notice] = field(default_factory=list)
    stopped_outcome: str = "nothing ran and no run directory was made."
    progress: Progress | None = None
    """A shard's start checks nothing long before it runs."""
    _journal: Journal | None = None

    def wiring(self) -> tuple[Wiring, None]:
        """The wiring as given; ``BATCHCLI_*`` values come from ``os.environ``."""
        return self.target, None

    def carry_on(self, job: Job) -> Continuation | None:
        """Fresh, in the shard's directory of its group; or the shard's earlier run, continued."""
        shard = resolve_shard(self.request, job.config.shards)
        if shard is None:
            if self.group is not None:
                raise UsageError(f"--group {self.group!r} names the group of a sharded run: give --shard I/N too.")
            return fresh_continuation(job, self.selection, self.dry_run, self.notices)
        group = self.group or derived_group(job, self.target.with_environment(job.environment), shard.count)
        shard = replace(shard, group=group)
        wiring = self.target.with_environment(job.environment)
        shared = what_shards_share(job, wiring)
        code = project_code(job.project)
        if self.dry_run:  # what would run, with nothing made on disk; refused as the run would be
            check_joining(self.output_dir / shard.group, shard, job.project.name, shared, wiring.config_name, code)
            return replace(fresh_continuation(job, self.selection, True, self.notices), shard=shard)
        run_dir = join_group(self.output_dir, shard, job.project.name, shared, wiring.config_name, code) / shard_dir_name(shard)
        if not (run_dir / JOURNAL_NAME).is_file():
            fresh = fresh_continuation(job, self.selection, False, self.notices)
            return replace(fresh, shard=shard, run_dir=run_dir)
        earlier = read_run(run_dir)
        recorded = read_selection(run_dir) or Selection()
        # A keyed Source's sample is recorded by key (``Selection.for_source``), which this command's is not yet.
        if replace(self.selection or Selection(), by_key=recorded.by_key) != recorded:
            # Continued with this command's selection, a trial shard ran its whole share (and an incremental one
            # redid what it skipped), while the journal still called it a trial: it continues as it was started.
            trial = " (add --all to carry the trial on to the whole share)" if recorded.is_trial else ""
            raise UsageError(
                f"Shard {shard} of group {group!r} was started {_taking(recorded)}, and this command runs it "
                f"{_taking(self.selection or Selection())}: a shard's run goes on as it was started. Continue it with "
                f"batchcli resume {quoted(run_dir)}{trial}, or give another --group to start a new group."
            )
        if earlier.status == "finished":
            retry = f" Reprocess its failed inputs with: batchcli retry {quoted(run_dir)}" if earlier.failed else ""
            if recorded.is_trial:
                retry += f" It was a trial ({recorded.describe()}); carry it on with: batchcli resume {quoted(run_dir)} --all"
            self.notices.append(
                Notice(
                    f"Shard {shard} of group {group!r} finished already ({earlier.succeeded} succeeded, "
                    f"{earlier.failed} failed); nothing to do.{retry}",
                    soft_wrap=True,
                )
            )
            return None
        journal = self._journal = Journal.open(run_dir)  # a shard still running is refused here
        if journal.keyed and not defines_item_key(job.source):
            raise UsageError(
                f"Shard {shard} of group {group!r} identified its items by item_key(), which the Source no longer "
                "defines. Define item_key(item) again to continue it."
            )
        self.notices.append(
            Notice(f"Shard {shard} of group {group!r} {earlier.status} earlier: continuing it in {run_dir}.", soft_wrap=True)
        )
        selection = None if recorded.takes_all else recorded
        done = keys_skipped(selection, job, run_dir)
        return Continuation(journal=journal, shard=journal.shard or shard, selection=selection, done_elsewhere=done)

    def abandon(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def _taking(selection: Selection) -> str:
    """How a shard's command selects items, for a message: ``as a trial (the first 10 items)``."""
    if selection.takes_all:
        return "for its whole share"
    return f"as a trial ({selection.describe()})" if selection.is_trial else f"as an incremental run ({selection.describe()})"


class GroupRetry(Retry):
    """``batchcli retry GROUP``: the failed inputs of every shard, in one new run in the group's directory."""

    def _later_retries(self) -> LaterRetries:
        return merged([later_retries(run_dir) for run_dir in self._failed], self.group_dir)

    def _parents(self) -> list[Path]:
        return self._failed

    def __init__(
        self, group_dir: Path, overrides: dict[str, tuple[str, ...]], wanted: FailureFilter = FailureFilter()
    ) -> None:
        super().__init__(group_dir, overrides, wanted)
        self.group_dir = group_dir
        self._failed: list[Path] = []

    def wiring(self) -> tuple[Wiring, dict[str, str]] | None:
        """The shards' job (they all run the same one); None when no shard failed anything."""
        info = read_group(self.group_dir)
        runs = [read_run(d) for d in shard_runs(self.group_dir).values() if (d / JOURNAL_NAME).is_file()]
        running = [r for r in runs if r.status == "running"]
        if running:
            names = ", ".join(r.run_dir.name for r in running)
            raise JournalError(
                f"Group {info.group!r} still has shards running ({names}), so their failures are not final yet. "
                f"Wait for them, or retry one finished shard: batchcli retry {quoted(self.group_dir)} --shard I/{info.shards}"
            )
        self._failed = [r.run_dir for r in runs if r.failed]
        if not self._failed:
            self.notices.append(Notice(f"Group {info.group!r} has no failed inputs; nothing to retry."))
            return None
        self.run_dir = self._failed[0]
        if self.wanted.error_type is not None:
            self.types = group_types(self._failed)
        return super().wiring()

    def carry_on(self, job: Job) -> Continuation | None:
        """Every shard's failed inputs, shard by shard, each in its source order."""
        picks: list[Pick] = []
        unsaved = 0
        left = self.wanted.limit  # --limit N: the first N over the whole group, shard by shard, as show lists them
        for run_dir in self._failed:
            if left is not None and left <= 0:
                break
            found = failed_inputs(run_dir, self.wanted if left is None else replace(self.wanted, limit=left), self.types)
            picks += found.picks
            unsaved += found.unsaved
            if left is not None:
                left -= found.count + found.unsaved  # an input that could not be saved counts against the limit too
        failed = RetryInputs(tuple(picks), unsaved)
        info = read_group(self.group_dir)
        listing = f"batchcli show {quoted(self.group_dir)} --failures"
        return self._continue(failed, f"group {info.group!r}", self.group_dir, "the shards' failed.jsonl", listing)


def retry_launch(
    run_dir: Path, overrides: dict[str, tuple[str, ...]], shard_text: str | None, wanted: FailureFilter = FailureFilter()
) -> tuple[Retry, Path]:
    """``retry``'s launch and where its run directory goes: one run, a group's every shard, or one shard of it."""
    target = retry_target(run_dir, shard_text)
    if not is_group(run_dir):
        return Retry(run_dir, overrides, wanted), run_dir.parent
    if target == run_dir:
        return GroupRetry(run_dir, overrides, wanted), run_dir
    retry = Retry(target, overrides, wanted)
    retry.again = f"batchcli retry {quoted(run_dir)} --shard {shard_text}"  # as given: the group, and which shard
    return retry, run_dir


def later_retries_of(target: Path) -> LaterRetries:
    """``later_retries`` of a run, or of every shard of a group (``retry --dry-run`` says what the retry would)."""
    if is_group(target):
        runs = [path for path in shard_runs(target).values() if (path / JOURNAL_NAME).is_file()]
        later = merged([later_retries(path) for path in runs], target)
    else:
        runs, later = [target], later_retries(target)
    held = tuple((run, *who) for run in lineage(runs) if (who := holding(run)) is not None)  # as the retry would find
    return replace(later, held=held)


def retry_target(run_dir: Path, shard_text: str | None) -> Path:
    """What ``retry RUN_DIR [--shard I/N]`` takes the failures of (also with ``--dry-run``, which listed every
    shard's and took any --shard): the run, the group, or the shard's run; a bad --shard is a UsageError."""
    if not is_group(run_dir):
        if shard_text is not None:
            raise UsageError(
                f"--shard picks one shard of a group, and {str(run_dir)!r} is not a group directory. Give the group "
                "(`batchcli runs` lists them), or leave --shard out to retry this run."
            )
        return run_dir
    if shard_text is None:
        return run_dir
    info = read_group(run_dir)
    shard = resolve_shard(parse_shard(shard_text), None)
    assert shard is not None
    if shard.count != info.shards:
        raise UsageError(
            f"Group {info.group!r} has {info.shards} shards, but --shard says {shard.count}. "
            f"Give --shard I/{info.shards}."
        )
    path = run_dir / shard_dir_name(shard)
    if not (path / JOURNAL_NAME).is_file():
        raise JournalError(f"Shard {shard} of group {info.group!r} has not run yet ({str(path)!r} has no journal).")
    return path


def make_shard_dir(run_dir: Path) -> None:
    """Make a shard's run directory (owner-only); one left empty, or half-made by a killed start, is taken over."""
    started_elsewhere = JournalError(
        f"Shard {run_dir.name} of group {run_dir.parent.name!r} was started by another process just now. "
        "Run the same command again to continue it once that process ends."
    )
    try:
        run_dir.mkdir(mode=0o700)
    except FileExistsError:
        if never_started(run_dir):
            # Under the run's lock: the draft may be another start's, being written now (unlinked under it, that
            # start failed as "attempt to write a readonly database ... Check the disk", and so did this one).
            try:
                lock = RunLock.acquire(run_dir)
            except JournalError:
                raise started_elsewhere from None
            try:
                with contextlib.suppress(OSError):
                    (run_dir / f"{JOURNAL_NAME}.new").unlink()
            finally:
                lock.release()
        elif (run_dir / JOURNAL_NAME).exists():  # another process started this shard since we looked
            raise started_elsewhere from None
    except OSError as error:
        raise unusable_output_dir(run_dir.parent, error) from error
